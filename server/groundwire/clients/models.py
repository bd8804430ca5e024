"""Domain types shared by the client layer and the pipeline (no proto, no vendor types)."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field

MetadataScalar = str | int
Metadata = dict[str, MetadataScalar]

# The one rule for a metadata field name, in a document and in a filter alike (so every field
# a document can carry can be filtered on, and a filter the stores cannot express is refused
# with the request). Test it with fullmatch: ``$`` alone would let a trailing newline through.
METADATA_FIELD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")


def is_metadata_field_name(name: str) -> bool:
    """Whether ``name`` may name a metadata field (see ``METADATA_FIELD_NAME``)."""
    return METADATA_FIELD_NAME.fullmatch(name) is not None


# Namespace for point ids: uuid5(POINT_NAMESPACE, f"{tenant}\x1f{doc_id}\x1f{chunk_index}").
POINT_NAMESPACE = uuid.UUID("6f1c3a52-7d0e-4b7a-9a57-1c0de5a11ce0")


def point_id(tenant: str, doc_id: str, chunk_index: int) -> str:
    """The stable id of a chunk: the same tenant, document and position give the same id."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant}\x1f{doc_id}\x1f{chunk_index}"))


class SearchMode(enum.Enum):
    """How a query is matched."""

    DENSE = "dense"
    SPARSE = "sparse"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class SparseVector:
    """A sparse vector: parallel lists of term indices and weights."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class FieldMatch:
    """A metadata condition: ``field`` equals one of ``values`` (all str or all int)."""

    field: str
    values: tuple[MetadataScalar, ...]


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk of one document, as stored in the vector store's payload."""

    chunk_id: str
    doc_id: str
    chunk_index: int
    text: str
    title: str = ""
    source_uri: str = ""
    metadata: Metadata = field(default_factory=dict)
    content_hash: str = ""


@dataclass(frozen=True)
class ChunkPoint:
    """A chunk with its vectors, ready to upsert."""

    record: ChunkRecord
    dense: list[float] | None
    sparse: SparseVector | None


@dataclass(frozen=True)
class ScoredChunk:
    """A search hit."""

    record: ChunkRecord
    score: float


@dataclass(frozen=True)
class StoredDocument:
    """What the store holds for one document: its content hash and its chunk ids by index."""

    doc_id: str
    content_hash: str
    chunk_ids: dict[int, str]


@dataclass(frozen=True)
class CollectionInfo:
    """The embedder a collection was built with, as recorded in the collection itself."""

    embedder_id: str
    dimension: int
