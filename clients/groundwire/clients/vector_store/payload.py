"""What both vector stores share: the payload layout, the filter plan, the record of the
embedder a collection is built with, and the checks.

Nothing here imports a vendor type, so Qdrant Edge and ``qdrant-client`` store exactly the
same payload, scope every call to the tenant the same way and refuse the same bad input.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from groundwire.clients.errors import EmbedderMismatchError
from groundwire.clients.models import (
    ChunkPoint,
    ChunkRecord,
    CollectionInfo,
    FieldMatch,
    Metadata,
    MetadataScalar,
    ScoredChunk,
    SearchMode,
    SparseVector,
    StoredDocument,
)
from groundwire.clients.telemetry import client_span

DENSE_VECTOR = "dense"
SPARSE_VECTOR = "sparse"

TENANT_KEY = "tenant"
DOC_ID_KEY = "doc_id"
CHUNK_INDEX_KEY = "chunk_index"
CONTENT_HASH_KEY = "content_hash"
META_KEY = "meta"

# The payload fields stored_documents() needs; the rest (text above all) stays on disk.
STORED_DOCUMENT_FIELDS = [DOC_ID_KEY, CHUNK_INDEX_KEY, CONTENT_HASH_KEY]

# Qdrant's own default RRF constant (server and qdrant-client's local mode both use 2). Edge
# wants it spelled out, so both adapters name it here and fuse identically.
RRF_K = 2

# Page size for scrolls (stored_documents, delete_documents): big enough that a document's
# chunks come back in one or two round trips, small enough to keep responses light.
SCROLL_PAGE = 512

# Key under which the qdrant-client adapter keeps its record in the collection metadata.
COLLECTION_METADATA_KEY = "groundwire"

# A metadata key becomes part of a JSON path. Plain names go in as they are (``meta.lang``);
# others (``source.kind``, ``2020``) are quoted so a dot or bracket cannot name another
# field. A quote or backslash cannot be quoted, so such keys are refused.
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_QUOTABLE_KEY = re.compile(r'^[^"\\\x00-\x1f]{1,128}$')


@dataclass(frozen=True)
class Condition:
    """One "payload key equals one of values" condition, before it becomes a vendor type."""

    key: str
    values: tuple[MetadataScalar, ...]


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


def ranked(chunks: list[ScoredChunk]) -> list[ScoredChunk]:
    """Best first, ties broken by chunk id: RRF gives many exact ties (a chunk ranked n-th by
    one retriever only scores the same as another ranked n-th by the other), and the engine
    returns tied hits in no fixed order, which would make answers and cache entries vary."""
    return sorted(chunks, key=lambda c: (-c.score, c.record.chunk_id))


def prefetch_limit(limit: int) -> int:
    """How many candidates each hybrid branch hands to RRF: enough that a chunk ranked
    moderately by both branches can still win the fusion."""
    return max(limit * 4, 50)


def tenant_condition(tenant: str) -> Condition:
    """The condition every read and write carries."""
    if not tenant:
        raise ValueError("tenant must not be empty")
    return Condition(TENANT_KEY, (tenant,))


def metadata_condition(match: FieldMatch) -> Condition:
    """The condition for a filter on document metadata (stored under ``meta``)."""
    if not _QUOTABLE_KEY.fullmatch(match.field):
        raise ValueError(f"metadata field {match.field!r} cannot be filtered on")
    if not match.values:
        raise ValueError(f"filter on {match.field!r} has no values")
    # bool is an int to Python but a different JSON type to Qdrant; a filter must not mix
    # kinds either, since MatchAny takes a list of one kind.
    if any(isinstance(v, bool) for v in match.values):
        raise ValueError(f"filter on {match.field!r}: values must be str or int, not bool")
    kinds = {type(v) for v in match.values}
    if len(kinds) != 1 or not kinds <= {str, int}:
        raise ValueError(f"filter on {match.field!r}: values must be all str or all int")
    key = match.field if _PLAIN_KEY.fullmatch(match.field) else f'"{match.field}"'
    return Condition(f"{META_KEY}.{key}", tuple(match.values))


def search_conditions(tenant: str, filters: Sequence[FieldMatch]) -> list[Condition]:
    """The tenant condition followed by one condition per metadata filter (all must hold)."""
    return [tenant_condition(tenant), *(metadata_condition(f) for f in filters)]


def chunk_payload(tenant: str, record: ChunkRecord) -> dict[str, Any]:
    """The payload stored with a chunk; ``tenant`` comes from the caller, never the record."""
    return {
        TENANT_KEY: tenant,
        DOC_ID_KEY: record.doc_id,
        CHUNK_INDEX_KEY: record.chunk_index,
        "text": record.text,
        "title": record.title,
        "source_uri": record.source_uri,
        CONTENT_HASH_KEY: record.content_hash,
        META_KEY: dict(record.metadata),
    }


def chunk_record(chunk_id: object, payload: Mapping[str, Any] | None) -> ChunkRecord:
    """Rebuild a ChunkRecord from a stored point (ids come back as ``UUID`` or ``str``)."""
    data = payload or {}
    meta = data.get(META_KEY) or {}
    metadata: Metadata = {
        str(k): v for k, v in meta.items() if isinstance(v, str | int) and not isinstance(v, bool)
    }
    return ChunkRecord(
        chunk_id=str(chunk_id),
        doc_id=str(data.get(DOC_ID_KEY, "")),
        chunk_index=int(data.get(CHUNK_INDEX_KEY, 0)),
        text=str(data.get("text", "")),
        title=str(data.get("title", "")),
        source_uri=str(data.get("source_uri", "")),
        metadata=metadata,
        content_hash=str(data.get(CONTENT_HASH_KEY, "")),
    )


def stored_documents(
    points: Iterable[tuple[object, Mapping[str, Any] | None]],
) -> dict[str, StoredDocument]:
    """Group scrolled ``(id, payload)`` pairs into one StoredDocument per doc id."""
    hashes: dict[str, set[str]] = {}
    chunk_ids: dict[str, dict[int, str]] = {}
    for point_id, payload in points:
        data = payload or {}
        doc_id = str(data.get(DOC_ID_KEY, ""))
        hashes.setdefault(doc_id, set()).add(str(data.get(CONTENT_HASH_KEY, "")))
        chunk_ids.setdefault(doc_id, {})[int(data.get(CHUNK_INDEX_KEY, 0))] = str(point_id)
    result: dict[str, StoredDocument] = {}
    for doc_id, seen in hashes.items():
        # Chunks that disagree on the hash mean an earlier write was cut short: report no
        # hash, so ingest sees a change and rewrites the whole document.
        content_hash = next(iter(seen)) if len(seen) == 1 else ""
        result[doc_id] = StoredDocument(doc_id, content_hash, chunk_ids[doc_id])
    return result


def check_collection_args(embedder_id: str, dimension: int) -> None:
    """A dense embedder has an id and a positive dimension; sparse-only has neither."""
    if dimension < 0 or (dimension == 0) != (embedder_id == ""):
        raise ValueError(
            "embedder_id and dimension go together: both set for a dense embedder, "
            f"'' and 0 for a sparse-only store (got {embedder_id!r}, {dimension})"
        )


def check_embedder(
    stored: CollectionInfo, embedder_id: str, dimension: int, *, where: str, remedy: str
) -> None:
    """Raise EmbedderMismatchError unless the collection was built with this embedder."""
    if stored.embedder_id == embedder_id and stored.dimension == dimension:
        return

    def describe(eid: str, dim: int) -> str:
        return f"embedder {eid!r} (dimension {dim})" if eid else "no dense embedder (sparse only)"

    raise EmbedderMismatchError(
        f"{where} was built with {describe(stored.embedder_id, stored.dimension)}, but the "
        f"configured one is {describe(embedder_id, dimension)}. Vectors of different "
        f"embedders cannot be compared: configure "
        f"{describe(stored.embedder_id, stored.dimension)} again, or {remedy} and ingest the "
        "documents again. After `groundwire reindex switch`, start with the new embedder's "
        "configuration, or `groundwire reindex rollback`."
    )


def collection_metadata(info: CollectionInfo) -> dict[str, Any]:
    """The record of the embedder a collection is built with (JSON-ready)."""
    return {"embedder_id": info.embedder_id, "dimension": info.dimension}


def collection_info(data: Mapping[str, Any] | None) -> CollectionInfo | None:
    """Read a record written by :func:`collection_metadata`; None if absent or malformed."""
    if not isinstance(data, Mapping):
        return None
    embedder_id = data.get("embedder_id")
    dimension = data.get("dimension")
    if not isinstance(embedder_id, str) or not isinstance(dimension, int):
        return None
    return CollectionInfo(embedder_id=embedder_id, dimension=dimension)


def read_record(path: Path) -> CollectionInfo | None:
    """The collection record kept in a JSON file (Qdrant Edge has no collection metadata)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EmbedderMismatchError(f"{path} cannot be read: {exc}") from exc
    info = collection_info(data)
    if info is None:
        raise EmbedderMismatchError(f"{path} is not a groundwire collection record")
    return info


def write_record(path: Path, info: CollectionInfo) -> None:
    """Write the record whole or not at all: a crash leaves no record or the old one."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(collection_metadata(info), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def check_point_ids(chunk_ids: Iterable[str]) -> None:
    """Point ids are UUID strings (see ``models.point_id``); anything else is a caller bug."""
    for chunk_id in chunk_ids:
        try:
            uuid.UUID(chunk_id)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"chunk id {chunk_id!r} is not a UUID") from exc


def check_points(points: Sequence[ChunkPoint], dimension: int) -> None:
    """Refuse points the collection cannot hold, before anything is written."""
    check_point_ids(p.record.chunk_id for p in points)
    for point in points:
        record = point.record
        if dimension == 0 and point.dense is not None:
            raise ValueError(
                f"chunk {record.chunk_id}: the store is sparse-only, got a dense vector"
            )
        if dimension > 0 and (point.dense is None or len(point.dense) != dimension):
            got = "none" if point.dense is None else str(len(point.dense))
            raise ValueError(
                f"chunk {record.chunk_id}: dense vector of dimension {dimension} needed, got {got}"
            )
        if point.sparse is not None:
            check_sparse(point.sparse)


def check_sparse(vector: SparseVector) -> None:
    """Indices and values must pair up, and an index may appear only once."""
    if len(vector.indices) != len(vector.values):
        raise ValueError("sparse vector: indices and values differ in length")
    if len(set(vector.indices)) != len(vector.indices):
        raise ValueError("sparse vector: repeated index")


def check_search(
    mode: SearchMode,
    dense: list[float] | None,
    sparse: SparseVector | None,
    limit: int,
    dimension: int,
) -> None:
    """Refuse a search the collection cannot answer (the pipeline never asks for one)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if mode in (SearchMode.DENSE, SearchMode.HYBRID):
        if dimension == 0:
            raise ValueError(f"{mode.value} search needs a dense vector; the store is sparse-only")
        if dense is None or len(dense) != dimension:
            raise ValueError(f"{mode.value} search needs a dense query of dimension {dimension}")
    if mode in (SearchMode.SPARSE, SearchMode.HYBRID):
        if sparse is None:
            raise ValueError(f"{mode.value} search needs a sparse query vector")
        check_sparse(sparse)
