"""DocumentService: documents in (streamed), documents out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from groundwire.clients.errors import InvalidArgumentError
from groundwire.server import metrics
from groundwire.server.context import require_tenant
from groundwire.server.pipeline.ingest import DocumentInput, IngestPipeline
from groundwire.server.servicers.validation import metadata_to_domain
from groundwire.v1 import documents_pb2, documents_pb2_grpc

MAX_DELETE_IDS = 1000


async def _documents(
    requests: AsyncIterator[documents_pb2.IngestDocumentsRequest],
) -> AsyncIterator[DocumentInput]:
    # Structural faults (a message without a document, a metadata value without a kind)
    # mean a broken client: they end the call with INVALID_ARGUMENT. Documents before the
    # fault are already indexed whole; none is half-written.
    position = 0
    async for request in requests:
        if not request.HasField("document"):
            raise InvalidArgumentError.of(
                "document", f"message {position} of the stream carries no document"
            )
        doc = request.document
        yield DocumentInput(
            position=position,
            doc_id=doc.doc_id,
            title=doc.title,
            text=doc.text,
            source_uri=doc.source_uri,
            metadata=metadata_to_domain(doc.metadata, "document.metadata"),
        )
        position += 1


class DocumentServicer(documents_pb2_grpc.DocumentServiceServicer):
    """Thin: no I/O of its own."""

    def __init__(self, ingest: IngestPipeline) -> None:
        self._ingest = ingest

    async def IngestDocuments(
        self,
        request_iterator: AsyncIterator[documents_pb2.IngestDocumentsRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> documents_pb2.IngestDocumentsResponse:
        summary = await self._ingest.ingest(require_tenant(), _documents(request_iterator))
        for outcome, count in (
            ("created", summary.created),
            ("updated", summary.updated),
            ("unchanged", summary.unchanged),
            ("failed", len(summary.failures)),
        ):
            if count:
                metrics.INGESTED_DOCUMENTS.labels(outcome).inc(count)
        return documents_pb2.IngestDocumentsResponse(
            created=summary.created,
            updated=summary.updated,
            unchanged=summary.unchanged,
            failed=len(summary.failures),
            chunks_written=summary.chunks_written,
            chunks_deleted=summary.chunks_deleted,
            failures=[
                documents_pb2.DocumentFailure(
                    doc_id=f.doc_id, position=f.position, field=f.field, reason=f.reason
                )
                for f in summary.failures
            ],
        )

    async def DeleteDocuments(
        self,
        request: documents_pb2.DeleteDocumentsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> documents_pb2.DeleteDocumentsResponse:
        ids = list(request.doc_ids)
        if not 1 <= len(ids) <= MAX_DELETE_IDS:
            raise InvalidArgumentError.of("doc_ids", f"must hold 1 to {MAX_DELETE_IDS} ids")
        for i, doc_id in enumerate(ids):
            if not doc_id.strip():
                raise InvalidArgumentError.of(f"doc_ids[{i}]", "must not be empty")
        documents, chunks = await self._ingest.delete(require_tenant(), ids)
        return documents_pb2.DeleteDocumentsResponse(
            documents_deleted=documents, chunks_deleted=chunks
        )
