"""Who is calling: credentials in metadata → tenant, as the settings say."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping

from groundwire.clients.errors import UnauthenticatedError
from groundwire.server.settings import AuthMode, Settings, hash_api_key

DEFAULT_TENANT = "default"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_BEARER = "bearer "


class Authenticator:
    """Maps call metadata to a tenant, or raises UnauthenticatedError."""

    def __init__(self, settings: Settings) -> None:
        self._mode = settings.auth_mode
        self._tenant_header = settings.tenant_header.lower()
        self._hashes = [
            (key_hash, tenant)
            for tenant, hashes in settings.api_keys.items()
            for key_hash in hashes
        ]

    def tenant_for(self, metadata: Mapping[str, str]) -> str:
        """The tenant the call acts for."""
        if self._mode is AuthMode.OFF:
            return DEFAULT_TENANT
        if self._mode is AuthMode.MESH_HEADER:
            return self._tenant_from_header(metadata)
        return self._tenant_from_key(metadata)

    def _tenant_from_header(self, metadata: Mapping[str, str]) -> str:
        tenant = metadata.get(self._tenant_header)
        if not tenant:
            raise UnauthenticatedError(f"missing {self._tenant_header} header", missing=True)
        if not _TENANT.match(tenant):
            raise UnauthenticatedError(f"malformed {self._tenant_header} header", missing=False)
        return tenant

    def _tenant_from_key(self, metadata: Mapping[str, str]) -> str:
        key = metadata.get("x-api-key")
        authorization = metadata.get("authorization", "")
        if key is None and authorization.lower().startswith(_BEARER):
            key = authorization[len(_BEARER) :].strip()
        if not key:
            raise UnauthenticatedError(
                "missing API key: send `authorization: Bearer <key>` or `x-api-key`",
                missing=True,
            )
        presented = hash_api_key(key)
        tenant: str | None = None
        # Compare every stored hash in constant time; never stop early.
        for stored, candidate in self._hashes:
            if hmac.compare_digest(stored, presented):
                tenant = candidate
        if tenant is None:
            raise UnauthenticatedError("invalid API key", missing=False)
        return tenant
