"""Documents sent through ``DocumentService.IngestDocuments`` in client streams of a fixed
size, so progress moves as the server confirms, not as the client buffers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from groundwire.v1 import documents_pb2, documents_pb2_grpc

DOCS_PER_STREAM = 128
INGEST_TIMEOUT_S = 3600.0
FAILURES_KEPT = 20


@dataclass
class IngestSummary:
    """The summed ``IngestDocuments`` responses (and, set by the caller, how long it took)."""

    documents: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


async def ingest_documents(
    channel: grpc.aio.Channel,
    docs: Sequence[documents_pb2.Document],
    *,
    metadata: Sequence[tuple[str, str]] = (),
    on_confirmed: Callable[[int], object] | None = None,
) -> IngestSummary:
    """Send ``docs``, :data:`DOCS_PER_STREAM` per client stream; ``on_confirmed`` gets the
    number of documents each response confirms. The first :data:`FAILURES_KEPT` rejected
    documents are kept in the summary."""
    stub = documents_pb2_grpc.DocumentServiceStub(channel)
    summary = IngestSummary(documents=len(docs))
    for first in range(0, len(docs), DOCS_PER_STREAM):
        part = docs[first : first + DOCS_PER_STREAM]

        async def requests(
            part: Sequence[documents_pb2.Document] = part,
        ) -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
            for doc in part:
                yield documents_pb2.IngestDocumentsRequest(document=doc)

        # The generated stubs are typed for the sync API; this is the aio channel.
        response = await stub.IngestDocuments(
            requests(),
            metadata=metadata,
            timeout=INGEST_TIMEOUT_S,
        )
        summary.created += response.created
        summary.updated += response.updated
        summary.unchanged += response.unchanged
        summary.failed += response.failed
        summary.chunks_written += response.chunks_written
        summary.chunks_deleted += response.chunks_deleted
        for failure in response.failures:
            if len(summary.failures) < FAILURES_KEPT:
                summary.failures.append(
                    {"doc_id": failure.doc_id, "field": failure.field, "reason": failure.reason}
                )
        if on_confirmed is not None:
            on_confirmed(len(part))
    return summary
