"""The tenant of the call being served, set by the auth interceptor, read by servicers."""

from __future__ import annotations

from contextvars import ContextVar, Token

_tenant: ContextVar[str | None] = ContextVar("groundwire_tenant", default=None)


def current_tenant() -> str | None:
    """The authenticated tenant of the current call, if any."""
    return _tenant.get()


def require_tenant() -> str:
    """The authenticated tenant; a servicer reached without one is a wiring bug."""
    tenant = _tenant.get()
    if tenant is None:
        raise RuntimeError("no tenant in context: the auth interceptor did not run")
    return tenant


def set_tenant(tenant: str | None) -> Token[str | None]:
    """Set the tenant; returns a token for :func:`reset_tenant`."""
    return _tenant.set(tenant)


def reset_tenant(token: Token[str | None]) -> None:
    """Undo :func:`set_tenant`."""
    _tenant.reset(token)
