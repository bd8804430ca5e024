"""Reading a whole store, every tenant at once, a page at a time: what a reindex copies from.

Only a reindex reads across tenants: it copies each chunk to the same tenant in another
store (through that store's tenant-scoped writes), so nothing here hands one tenant's data to
another. A summary page carries what comparing two stores needs (tenant, document, chunk
position, content hash); a full page carries the chunk's text, title, source and metadata
as well, never the vectors (a reindex embeds again).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import qdrant_edge as edge
from qdrant_client import AsyncQdrantClient
from qdrant_client.conversions import common_types as types

from groundwire.clients.models import ChunkRecord
from groundwire.clients.vector_store import payload as pl

T = TypeVar("T")

# Whatever a store's scroll continues from (a point id); opaque to callers.
ScanOffset = object

SUMMARY_FIELDS = [pl.TENANT_KEY, *pl.STORED_DOCUMENT_FIELDS]


@dataclass(frozen=True)
class ScannedChunk:
    """One stored chunk and the tenant it belongs to (from the payload, set at write time
    from the writer's identity)."""

    tenant: str
    record: ChunkRecord


def scanned(point_id: object, payload: dict[str, Any] | None) -> ScannedChunk:
    """A scrolled point as a ScannedChunk."""
    return ScannedChunk(
        str((payload or {}).get(pl.TENANT_KEY, "")), pl.chunk_record(point_id, payload)
    )


def edge_page(
    shard: edge.EdgeShard, offset: ScanOffset | None, limit: int, *, full: bool
) -> tuple[list[ScannedChunk], ScanOffset | None]:
    """One page of an Edge shard's points in id order, and where the next page starts."""
    page, following = shard.scroll(
        edge.ScrollRequest(
            offset=offset,  # type: ignore[arg-type]  # a point id from the previous page
            limit=limit,
            with_payload=True if full else SUMMARY_FIELDS,
        )
    )
    return [scanned(record.id, record.payload) for record in page], following


QdrantCaller = Callable[[str, Callable[[AsyncQdrantClient, int], Awaitable[Any]]], Awaitable[Any]]


async def qdrant_page(
    call: QdrantCaller,
    collection: str,
    offset: ScanOffset | None,
    limit: int,
    *,
    full: bool,
) -> tuple[list[ScannedChunk], ScanOffset | None]:
    """One page of a Qdrant collection's points (every shard, custom-sharded or not)."""
    page, following = await call(
        "scroll",
        lambda client, timeout: client.scroll(
            collection,
            limit=limit,
            offset=offset,  # type: ignore[arg-type]  # a point id from the previous page
            with_payload=True if full else SUMMARY_FIELDS,
            with_vectors=False,
            timeout=timeout,
        ),
    )
    next_offset: types.PointId | None = following
    return [scanned(record.id, record.payload) for record in page], next_offset
