"""The client span every public vector store call opens, alike for both stores."""

from __future__ import annotations

from contextlib import AbstractContextManager

from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from groundwire.clients.telemetry import client_span


def store_span(
    op: str,
    *,
    backend: str,
    collection: str,
    tenant: str | None = None,
    **extra: AttributeValue,
) -> AbstractContextManager[Span]:
    """The client span every public store call opens (``vector_store.<op>``)."""
    attributes: dict[str, AttributeValue] = {
        "db.system": "qdrant",
        "db.operation": op,
        "db.collection.name": collection,
        "groundwire.vector_store": backend,
    }
    if tenant is not None:
        attributes["groundwire.tenant"] = tenant
    attributes.update(extra)
    return client_span(f"vector_store.{op}", **attributes)
