"""Who is calling: credentials in metadata → tenant, as the settings say."""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Iterator, Mapping

from groundwire.clients.errors import UnauthenticatedError
from groundwire.server.settings import AuthMode, Settings, hash_api_key

DEFAULT_TENANT = "default"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_BEARER = "bearer "


class CallHeaders(Mapping[str, str]):
    """A call's text metadata by lower-cased name.

    gRPC metadata may carry a name more than once; as a mapping this gives the last value
    (what the correlation id and trace context use), while :meth:`all` gives every value, so
    that credentials sent twice with different values are a conflict, never a silent pick.
    Binary (``-bin``) values are left out.
    """

    def __init__(self, pairs: Iterable[tuple[str, str | bytes]]) -> None:
        self._values: dict[str, list[str]] = {}
        for key, value in pairs:
            if isinstance(value, str):
                self._values.setdefault(key.lower(), []).append(value)

    def __getitem__(self, key: str) -> str:
        return self._values[key][-1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def all(self, key: str) -> list[str]:
        """Every value sent under ``key`` (lower-case), in order; empty when absent."""
        return list(self._values.get(key, ()))


class Authenticator:
    """Maps call metadata to a tenant, or raises UnauthenticatedError.

    A call names one identity: two different API keys (``x-api-key`` and ``authorization:
    Bearer``, or either sent twice) or two different tenant headers are refused as
    conflicting, whichever of them would be valid: serving either would act for a tenant
    the caller may not have meant, or let a proxy-set identity be overridden.
    """

    def __init__(self, settings: Settings) -> None:
        self._mode = settings.auth_mode
        self._tenant_header = settings.tenant_header.lower()
        self._hashes = [
            (key_hash, tenant)
            for tenant, hashes in settings.api_keys.items()
            for key_hash in hashes
        ]

    def tenant_for(self, metadata: CallHeaders) -> str:
        """The tenant the call acts for."""
        if self._mode is AuthMode.OFF:
            return DEFAULT_TENANT
        if self._mode is AuthMode.MESH_HEADER:
            return self._tenant_from_header(metadata)
        return self._tenant_from_key(metadata)

    def _tenant_from_header(self, metadata: CallHeaders) -> str:
        if len(set(metadata.all(self._tenant_header))) > 1:
            raise UnauthenticatedError(
                f"conflicting {self._tenant_header} headers: the call names more than one tenant",
                missing=False,
            )
        tenant = metadata.get(self._tenant_header)
        if not tenant:
            raise UnauthenticatedError(f"missing {self._tenant_header} header", missing=True)
        if not _TENANT.match(tenant):
            raise UnauthenticatedError(f"malformed {self._tenant_header} header", missing=False)
        return tenant

    def _tenant_from_key(self, metadata: CallHeaders) -> str:
        keys = {key for key in metadata.all("x-api-key") if key}
        for authorization in metadata.all("authorization"):
            if authorization.lower().startswith(_BEARER):
                keys.add(authorization[len(_BEARER) :].strip())
        keys.discard("")
        if len(keys) > 1:
            # Which key was "meant" is unknowable; neither key is echoed back.
            raise UnauthenticatedError(
                "conflicting credentials: the call carries more than one API key"
                " (`x-api-key` and `authorization: Bearer` must name the same key)",
                missing=False,
            )
        key = next(iter(keys), None)
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
