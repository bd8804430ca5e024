"""The payload both vector stores keep with every chunk: its layout (vector names, keys),
turning a chunk into a payload and back, and grouping scrolled points by document.

Nothing here imports a vendor type, so Qdrant Edge and ``qdrant-client`` store exactly the
same payload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from groundwire.clients.models import ChunkRecord, Metadata, StoredDocument

DENSE_VECTOR = "dense"
SPARSE_VECTOR = "sparse"

TENANT_KEY = "tenant"
DOC_ID_KEY = "doc_id"
CHUNK_INDEX_KEY = "chunk_index"
CONTENT_HASH_KEY = "content_hash"
META_KEY = "meta"

# The payload fields stored_documents() needs; the rest (text above all) stays on disk.
STORED_DOCUMENT_FIELDS = [DOC_ID_KEY, CHUNK_INDEX_KEY, CONTENT_HASH_KEY]

# Page size for scrolls (stored_documents, delete_documents): big enough that a document's
# chunks come back in one or two round trips, small enough to keep responses light.
SCROLL_PAGE = 512


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
