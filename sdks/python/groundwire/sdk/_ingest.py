"""Ingest in batches: one ``IngestDocuments`` call per batch, a running total after each.

One ``IngestDocuments`` stream answers only when the client closes it, so a caller streaming a
whole corpus in one call learns nothing until the end, needs one deadline long enough for all
of it, and, when it stops early, cannot say what the server wrote. In batches each call's
summary is an acknowledgement: what the running total counts is written, and it survives an
interruption or a failed later batch. The sync and asyncio clients share this module.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

from groundwire.v1 import documents_pb2

#: Documents per ``IngestDocuments`` call of ``ingest_batches`` when none is given: a multiple
#: of the server's own write batch (32 by default), and small enough that one call ends within
#: seconds on a CPU embedder.
DEFAULT_INGEST_BATCH_SIZE = 256


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """What the server has acknowledged after one more batch of ``ingest_batches``.

    Both summaries count ``failures[].position`` from the first document of the whole ingest
    (not of the batch), so a position is the document's index in what you passed in.
    """

    #: The summary of the batch just acknowledged.
    batch: documents_pb2.IngestDocumentsResponse
    #: The sum of every batch acknowledged so far (a fresh message each time).
    total: documents_pb2.IngestDocumentsResponse
    #: Documents acknowledged so far: those of every batch whose call has returned.
    documents: int


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch size below one (it would never send anything)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def batches(
    documents: Iterable[documents_pb2.Document], batch_size: int
) -> Iterator[list[documents_pb2.Document]]:
    """``documents`` in lists of ``batch_size`` (the last may be shorter), read lazily."""
    source = iter(documents)
    while batch := list(itertools.islice(source, batch_size)):
        yield batch


async def async_batches(
    documents: Iterable[documents_pb2.Document] | AsyncIterable[documents_pb2.Document],
    batch_size: int,
) -> AsyncIterator[list[documents_pb2.Document]]:
    """Like :func:`batches`, for a sync or an async iterable."""
    if not isinstance(documents, AsyncIterable):
        for batch in batches(documents, batch_size):
            yield batch
        return
    pending: list[documents_pb2.Document] = []
    async for document in documents:
        pending.append(document)
        if len(pending) >= batch_size:
            yield pending
            pending = []
    if pending:
        yield pending


def advance(
    previous: IngestProgress | None, summary: documents_pb2.IngestDocumentsResponse, sent: int
) -> IngestProgress:
    """The progress once ``summary``, the answer to one more batch of ``sent`` documents, is
    added to ``previous``."""
    offset = previous.documents if previous is not None else 0
    batch = documents_pb2.IngestDocumentsResponse()
    batch.CopyFrom(summary)
    for failure in batch.failures:
        failure.position += offset
    total = documents_pb2.IngestDocumentsResponse()
    if previous is not None:
        total.CopyFrom(previous.total)
    total.created += batch.created
    total.updated += batch.updated
    total.unchanged += batch.unchanged
    total.failed += batch.failed
    total.chunks_written += batch.chunks_written
    total.chunks_deleted += batch.chunks_deleted
    total.failures.extend(batch.failures)
    return IngestProgress(batch=batch, total=total, documents=offset + sent)
