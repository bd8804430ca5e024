"""Make a new generation hold what the live one holds, embedded again: the heart of a reindex.

The store keeps each chunk's text (not the document's), so a reindex embeds the stored
chunks again with the new embedder; it cannot change how documents are chunked (that needs
the documents: ingest them again through a server configured with the new chunking).

A sync compares the two stores document by document and copies only what differs, so it is
both the build (into an empty generation) and every catch-up after it. Copied chunks carry
the source's content hash marked ``r:`` (:func:`copied_hash`), which tells a sync three
kinds of document in the new generation apart:

- ``r:<hash of the source>``: copied and unchanged since: skipped;
- ``r:<another hash>``: copied, then the source changed (an ingest on a server still on the
  old generation): copied again; one no longer in the source was deleted there: deleted;
- a hash without ``r:``: written by a server already on the new generation, after the
  switch: the new generation's own, never overwritten or deleted by a sync.

Ingest through a new-generation server computes another hash (the embedder is part of it),
so it rewrites a copied document rather than skipping it: harmless, one embedding per
document.

Ingest that lands on the live generation during the build is therefore not lost: the sync
``reindex switch`` runs right before switching copies it, and ``reindex catch-up`` after the
servers restarted copies what servers still on the old generation wrote meanwhile. One case
a sync cannot see: a document deleted through a new-generation server, but unchanged in the
old one, is copied again by a catch-up (delete it again after the catch-up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from groundwire.clients.models import ChunkPoint
from groundwire.clients.ports import DenseEmbedder, SparseEncoder, VectorStore
from groundwire.clients.vector_store.payload import SCROLL_PAGE
from groundwire.clients.vector_store.scan import ScannedChunk, ScanOffset
from groundwire.server.pipeline.ingest import embedding_text

COPIED = "r:"

DocKey = tuple[str, str]  # (tenant, doc id)


def copied_hash(content_hash: str) -> str:
    """The hash a copied chunk carries: the source's, marked as copied (once)."""
    return content_hash if content_hash.startswith(COPIED) else COPIED + content_hash


class Scannable(Protocol):
    """A store that can be read whole, across tenants (both of ours can)."""

    async def scan(
        self, offset: ScanOffset | None, limit: int, *, full: bool
    ) -> tuple[list[ScannedChunk], ScanOffset | None]:
        """One page of chunks and where the next starts (None: no more)."""
        ...


class Target(Scannable, VectorStore, Protocol):
    """The generation a sync writes to."""


@dataclass(frozen=True)
class DocState:
    """One stored document: its content hash ("" when its chunks disagree) and chunk ids."""

    content_hash: str
    chunks: dict[int, str]


async def summarize(store: Scannable, page: int = SCROLL_PAGE) -> dict[DocKey, DocState]:
    """Every document of ``store`` with its hash and chunk ids (payload fields only)."""
    hashes: dict[DocKey, set[str]] = {}
    chunks: dict[DocKey, dict[int, str]] = {}
    offset: ScanOffset | None = None
    while True:
        found, offset = await store.scan(offset, page, full=False)
        for chunk in found:
            key = (chunk.tenant, chunk.record.doc_id)
            hashes.setdefault(key, set()).add(chunk.record.content_hash)
            chunks.setdefault(key, {})[chunk.record.chunk_index] = chunk.record.chunk_id
        if offset is None:
            break
    return {
        key: DocState(next(iter(seen)) if len(seen) == 1 else "", chunks[key])
        for key, seen in hashes.items()
    }


@dataclass
class Plan:
    """What a sync does: documents to copy, chunks past a copied document's new end, copied
    documents the source no longer has, and what it leaves alone."""

    copy: set[DocKey] = field(default_factory=set)
    stale_chunks: dict[str, list[str]] = field(default_factory=dict)
    delete: dict[str, list[str]] = field(default_factory=dict)
    unchanged: int = 0
    kept: int = 0


def plan(source: dict[DocKey, DocState], target: dict[DocKey, DocState]) -> Plan:
    """Compare the summaries (see the module docstring for the rules)."""
    result = Plan()
    for key, state in source.items():
        there = target.get(key)
        if there is not None and there.content_hash and not there.content_hash.startswith(COPIED):
            result.kept += 1  # written by a server on the new generation: its own
            continue
        if (
            there is not None
            and state.content_hash
            and there.content_hash == copied_hash(state.content_hash)
            # A sync stopped mid-document (a cancelled build) left some of its chunks only.
            and there.chunks == state.chunks
        ):
            result.unchanged += 1
            continue
        result.copy.add(key)
        if there is not None:
            stale = [cid for index, cid in there.chunks.items() if index not in state.chunks]
            if stale:
                result.stale_chunks.setdefault(key[0], []).extend(stale)
    for key, there in target.items():
        if key not in source and there.content_hash.startswith(COPIED):
            result.delete.setdefault(key[0], []).append(key[1])
        elif key not in source:
            result.kept += 1
    return result


@dataclass
class SyncReport:
    """What a sync did; ``tenants`` are those whose data changed (their cached retrievals
    in the target's namespace must go)."""

    source_documents: int = 0
    copied_documents: int = 0
    copied_chunks: int = 0
    stale_chunks: int = 0
    deleted_documents: int = 0
    unchanged_documents: int = 0
    kept_documents: int = 0
    planned_chunks: int = 0
    seconds: float = 0.0
    tenants: set[str] = field(default_factory=set)

    def line(self) -> str:
        """One line for people."""
        return (
            f"{self.source_documents} documents in the source: {self.copied_documents} copied "
            f"({self.copied_chunks} chunks embedded), {self.unchanged_documents} unchanged, "
            f"{self.deleted_documents} deleted, {self.stale_chunks} stale chunks removed, "
            f"{self.kept_documents} written on the new generation kept; {self.seconds:.1f} s"
        )


class Reembedder:
    """Turns stored chunks into points for the new generation, as ingest would embed them."""

    def __init__(
        self, dense: DenseEmbedder | None, sparse: SparseEncoder, batch_chunks: int = 128
    ) -> None:
        self.dense = dense
        self.sparse = sparse
        self.batch_chunks = batch_chunks

    async def points(self, chunks: Sequence[ScannedChunk]) -> list[ChunkPoint]:
        """The chunks with new vectors and the copied hash."""
        texts = [embedding_text(c.record.title, c.record.text) for c in chunks]
        dense = await self.dense.embed_documents(texts) if self.dense is not None else None
        sparse = self.sparse.encode_documents(texts)
        return [
            ChunkPoint(
                record=replace(c.record, content_hash=copied_hash(c.record.content_hash)),
                dense=dense[i] if dense is not None else None,
                sparse=sparse[i],
            )
            for i, c in enumerate(chunks)
        ]


async def sync(
    source: Scannable,
    target: Target,
    reembed: Reembedder,
    *,
    page: int = SCROLL_PAGE,
    progress: Callable[[SyncReport], None] | None = None,
) -> SyncReport:
    """Make ``target`` hold what ``source`` holds (rules in the module docstring).

    Chunks are upserted before stale chunks are deleted, so a reader of the target never
    sees a document with none. ``progress`` gets the report after each batch written
    (``copied_chunks`` of ``planned_chunks``).
    """
    started = time.perf_counter()
    have = await summarize(source, page)
    wanted = plan(have, await summarize(target, page))
    report = SyncReport(
        source_documents=len(have),
        copied_documents=len(wanted.copy),
        deleted_documents=sum(len(d) for d in wanted.delete.values()),
        unchanged_documents=wanted.unchanged,
        kept_documents=wanted.kept,
        stale_chunks=sum(len(c) for c in wanted.stale_chunks.values()),
        planned_chunks=sum(len(have[key].chunks) for key in wanted.copy),
    )
    if wanted.copy:
        await _copy(source, target, reembed, wanted.copy, page, report, progress)
    for tenant, chunk_ids in wanted.stale_chunks.items():
        await target.delete_points(tenant, chunk_ids)
        report.tenants.add(tenant)
    for tenant, doc_ids in wanted.delete.items():
        await target.delete_documents(tenant, doc_ids)
        report.tenants.add(tenant)
    report.seconds = time.perf_counter() - started
    return report


async def _copy(
    source: Scannable,
    target: Target,
    reembed: Reembedder,
    keys: set[DocKey],
    page: int,
    report: SyncReport,
    progress: Callable[[SyncReport], None] | None,
) -> None:
    buffer: list[ScannedChunk] = []

    async def flush(batch: list[ScannedChunk]) -> None:
        points = await reembed.points(batch)
        by_tenant: dict[str, list[ChunkPoint]] = {}
        for chunk, point in zip(batch, points, strict=True):
            by_tenant.setdefault(chunk.tenant, []).append(point)
        for tenant, tenant_points in by_tenant.items():
            await target.upsert(tenant, tenant_points)
            report.tenants.add(tenant)
        report.copied_chunks += len(batch)
        if progress is not None:
            progress(report)

    offset: ScanOffset | None = None
    while True:
        found, offset = await source.scan(offset, page, full=True)
        buffer += [c for c in found if (c.tenant, c.record.doc_id) in keys]
        while len(buffer) >= reembed.batch_chunks:
            await flush(buffer[: reembed.batch_chunks])
            buffer = buffer[reembed.batch_chunks :]
        if offset is None:
            break
    if buffer:
        await flush(buffer)
