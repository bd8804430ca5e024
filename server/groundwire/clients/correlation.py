"""The correlation id of the current call, carried in a ContextVar.

The server's interceptor sets it; logging, spans and every outbound call read it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import propagate
from opentelemetry.context import Context

CORRELATION_HEADER = "x-correlation-id"
MESH_REQUEST_HEADER = "x-request-id"
MAX_CORRELATION_ID_LENGTH = 128

_correlation_id: ContextVar[str | None] = ContextVar("groundwire_correlation_id", default=None)


def new_correlation_id() -> str:
    """A fresh random id (32 hex characters)."""
    return uuid.uuid4().hex


def current_correlation_id() -> str | None:
    """The correlation id of the call being served, if any."""
    return _correlation_id.get()


@contextmanager
def correlation_scope(correlation_id: str) -> Iterator[None]:
    """Make ``correlation_id`` current for the code inside the block."""
    token = _correlation_id.set(correlation_id)
    try:
        yield
    finally:
        _correlation_id.reset(token)


def sanitize_correlation_id(value: str | None) -> str | None:
    """Accept a caller-supplied id only when it is printable and of sane length."""
    if not value:
        return None
    value = value.strip()
    if not value or len(value) > MAX_CORRELATION_ID_LENGTH or not value.isprintable():
        return None
    return value


def outbound_headers(context: Context | None = None) -> dict[str, str]:
    """Headers for an outbound HTTP call: the correlation id and W3C ``traceparent`` (of
    ``context``'s span, by default the current one)."""
    headers: dict[str, str] = {}
    propagate.inject(headers, context=context)
    correlation_id = current_correlation_id()
    if correlation_id is not None:
        headers[CORRELATION_HEADER] = correlation_id
    return headers
