"""The checks both vector stores make before a call reaches the engine: points the collection
cannot hold, searches it cannot answer, collection arguments that do not go together.

They guard against our own bugs (the pipeline never asks for any of it), so they raise
ValueError.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from groundwire.clients.models import ChunkPoint, SearchMode, SparseVector


def check_collection_args(embedder_id: str, dimension: int) -> None:
    """A dense embedder has an id and a positive dimension; sparse-only has neither."""
    if dimension < 0 or (dimension == 0) != (embedder_id == ""):
        raise ValueError(
            "embedder_id and dimension go together: both set for a dense embedder, "
            f"'' and 0 for a sparse-only store (got {embedder_id!r}, {dimension})"
        )


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
