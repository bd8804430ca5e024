"""Ingestion: validate → skip unchanged → chunk → embed in batches → upsert → drop stale.

A document is written whole or not at all: its new chunks go in one upsert, and only then
are its stale chunks (positions past the new end) deleted. Point ids are stable
(uuid5 of tenant, doc id and position), so re-ingesting never duplicates.

A crash between those two writes leaves a shrunk document with its old tail. The Edge store
removes such tails when it is next opened after an unclean stop (``edge_recovery``); on a
Qdrant server the tail stays until the document is ingested again, which rewrites it (its
chunks disagree on the content hash, so it never reads as unchanged).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from groundwire.clients.models import (
    METADATA_FIELD_NAME,
    ChunkPoint,
    ChunkRecord,
    Metadata,
    is_metadata_field_name,
    point_id,
)
from groundwire.clients.ports import Cache, DenseEmbedder, SparseEncoder, VectorStore
from groundwire.server.pipeline.chunking import Chunker

log = logging.getLogger(__name__)

MAX_DOC_ID_CHARS = 256
MAX_TITLE_CHARS = 1024
MAX_SOURCE_URI_CHARS = 2048
MAX_METADATA_FIELDS = 32
MAX_METADATA_VALUE_BYTES = 1024


@dataclass(frozen=True)
class DocumentInput:
    """One document as the caller sent it (structure already checked by the servicer)."""

    position: int
    doc_id: str
    title: str
    text: str
    source_uri: str
    metadata: Metadata


@dataclass(frozen=True)
class Failure:
    """Why one document was rejected."""

    doc_id: str
    position: int
    field: str
    reason: str


@dataclass
class IngestSummary:
    """What an ingest did."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    failures: list[Failure] = field(default_factory=list)


def validate_document(doc: DocumentInput, max_document_bytes: int) -> Failure | None:
    """The first content problem of ``doc``, or None. Structure is the servicer's job."""

    def fail(field_name: str, reason: str) -> Failure:
        return Failure(doc.doc_id, doc.position, f"document.{field_name}", reason)

    if not doc.doc_id.strip():
        return fail("doc_id", "must not be empty")
    if len(doc.doc_id) > MAX_DOC_ID_CHARS:
        return fail("doc_id", f"must be at most {MAX_DOC_ID_CHARS} characters")
    if not doc.text.strip():
        return fail("text", "must not be empty or blank")
    size = len(doc.text.encode("utf-8"))
    if size > max_document_bytes:
        return fail("text", f"is {size} bytes; the limit is {max_document_bytes}")
    if len(doc.title) > MAX_TITLE_CHARS:
        return fail("title", f"must be at most {MAX_TITLE_CHARS} characters")
    if len(doc.source_uri) > MAX_SOURCE_URI_CHARS:
        return fail("source_uri", f"must be at most {MAX_SOURCE_URI_CHARS} characters")
    if len(doc.metadata) > MAX_METADATA_FIELDS:
        return fail("metadata", f"must have at most {MAX_METADATA_FIELDS} fields")
    for name, value in doc.metadata.items():
        if not is_metadata_field_name(name):
            return fail(
                f"metadata[{name}]", f"field names must match {METADATA_FIELD_NAME.pattern}"
            )
        if isinstance(value, str) and len(value.encode("utf-8")) > MAX_METADATA_VALUE_BYTES:
            return fail(f"metadata[{name}]", f"must be at most {MAX_METADATA_VALUE_BYTES} bytes")
    return None


def embedding_text(title: str, chunk: str) -> str:
    """What is embedded for a chunk: the title gives every chunk its document's context."""
    return f"{title}\n{chunk}" if title else chunk


class IngestPipeline:
    """Indexes documents for one tenant, idempotently."""

    def __init__(
        self,
        *,
        store: VectorStore,
        chunker: Chunker,
        sparse: SparseEncoder,
        dense: DenseEmbedder | None,
        cache: Cache | None,
        index_signature: str,
        max_document_bytes: int,
        batch_documents: int = 32,
    ) -> None:
        self._store = store
        self._chunker = chunker
        self._sparse = sparse
        self._dense = dense
        self._cache = cache
        # Part of every content hash: a new chunker or embedder re-indexes everything.
        self._index_signature = index_signature
        self._max_document_bytes = max_document_bytes
        self._batch_documents = batch_documents

    async def ingest(self, tenant: str, documents: AsyncIterator[DocumentInput]) -> IngestSummary:
        """Index every document of the stream; bad ones are reported, the rest proceed."""
        summary = IngestSummary()
        batch: list[DocumentInput] = []
        try:
            async for doc in documents:
                failure = validate_document(doc, self._max_document_bytes)
                if failure is not None:
                    summary.failures.append(failure)
                    continue
                # A repeated doc id must see the earlier version as stored: flush first.
                if len(batch) >= self._batch_documents or any(
                    d.doc_id == doc.doc_id for d in batch
                ):
                    await self._write_batch(tenant, batch, summary)
                    batch = []
                batch.append(doc)
            if batch:
                await self._write_batch(tenant, batch, summary)
        finally:
            if self._cache is not None and (summary.created or summary.updated):
                await self._cache.bump_index_version(tenant)
        return summary

    async def delete(self, tenant: str, doc_ids: Sequence[str]) -> tuple[int, int]:
        """Remove documents; returns (documents deleted, chunks deleted)."""
        documents, chunks = await self._store.delete_documents(tenant, doc_ids)
        if chunks and self._cache is not None:
            await self._cache.bump_index_version(tenant)
        return documents, chunks

    def content_hash(self, doc: DocumentInput) -> str:
        """A hash over everything stored for the document and how it is indexed."""
        material = json.dumps(
            [
                self._index_signature,
                doc.title,
                doc.text,
                doc.source_uri,
                sorted(doc.metadata.items()),
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    async def _write_batch(
        self, tenant: str, batch: Sequence[DocumentInput], summary: IngestSummary
    ) -> None:
        stored = await self._store.stored_documents(tenant, [d.doc_id for d in batch])
        pending: list[tuple[DocumentInput, list[ChunkRecord]]] = []
        for doc in batch:
            digest = self.content_hash(doc)
            previous = stored.get(doc.doc_id)
            if previous is not None and previous.content_hash == digest:
                summary.unchanged += 1
                continue
            records = [
                ChunkRecord(
                    chunk_id=point_id(tenant, doc.doc_id, index),
                    doc_id=doc.doc_id,
                    chunk_index=index,
                    text=span.text,
                    title=doc.title,
                    source_uri=doc.source_uri,
                    metadata=dict(doc.metadata),
                    content_hash=digest,
                )
                for index, span in enumerate(self._chunker.split(doc.text))
            ]
            pending.append((doc, records))
        if not pending:
            return

        # One embedding call for the whole batch keeps the model's batches full.
        all_records = [r for _, records in pending for r in records]
        texts = [embedding_text(r.title, r.text) for r in all_records]
        dense = await self._dense.embed_documents(texts) if self._dense is not None else None
        sparse = self._sparse.encode_documents(texts)

        points = [
            ChunkPoint(
                record=record,
                dense=dense[i] if dense is not None else None,
                sparse=sparse[i],
            )
            for i, record in enumerate(all_records)
        ]
        # One write for the batch: every document in it is written whole, or none is.
        await self._store.upsert(tenant, points)
        summary.chunks_written += len(points)
        stale: list[str] = []
        for doc, records in pending:
            previous = stored.get(doc.doc_id)
            if previous is None:
                summary.created += 1
                continue
            summary.updated += 1
            stale += [cid for index, cid in previous.chunk_ids.items() if index >= len(records)]
        if stale:
            # Only after the new chunks are in: a reader never sees a document with none.
            await self._store.delete_points(tenant, stale)
            summary.chunks_deleted += len(stale)
