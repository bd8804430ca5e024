"""Our domain requests as qdrant-client's types: filters, vectors and query arguments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qdrant_client import models

from groundwire.clients.models import ChunkPoint, SearchMode, SparseVector
from groundwire.clients.vector_store import payload as pl
from groundwire.clients.vector_store import search_plan as sp


def _match(values: tuple[str | int, ...]) -> models.MatchValue | models.MatchAny:
    if len(values) == 1:
        return models.MatchValue(value=values[0])
    if isinstance(values[0], str):
        return models.MatchAny(any=[str(v) for v in values])
    return models.MatchAny(any=[int(v) for v in values])


def filter_of(conditions: Sequence[sp.Condition], chunk_ids: Sequence[str] = ()) -> models.Filter:
    """All ``conditions`` (and, if given, one of ``chunk_ids``) must hold."""
    must: list[models.Condition] = [
        models.FieldCondition(key=c.key, match=_match(c.values)) for c in conditions
    ]
    if chunk_ids:
        must.append(models.HasIdCondition(has_id=list(chunk_ids)))
    return models.Filter(must=must)


def sparse_vector(vector: SparseVector) -> models.SparseVector:
    """Ours as qdrant-client's."""
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


@dataclass(frozen=True)
class QueryParts:
    """The arguments of ``query_points`` that depend on the search."""

    query: list[float] | models.SparseVector | models.FusionQuery
    using: str | None
    prefetch: list[models.Prefetch] | None
    params: models.SearchParams | None
    filter: models.Filter


def query_parts(
    conditions: list[sp.Condition],
    mode: SearchMode,
    dense: list[float] | None,
    sparse: SparseVector | None,
    limit: int,
    *,
    hnsw: bool,
    hnsw_ef: int,
) -> QueryParts:
    """One vector, or both prefetched and fused by RRF."""
    request_filter = filter_of(conditions)
    dense_params = models.SearchParams(hnsw_ef=hnsw_ef, exact=not hnsw)
    # IDF over the tenant's own chunks: another tenant's corpus never moves these scores.
    sparse_params = models.SearchParams(
        idf=models.IdfCorpusParams(corpus=filter_of(conditions[:1]))
    )
    query: list[float] | models.SparseVector | models.FusionQuery
    prefetch: list[models.Prefetch] | None = None
    using: str | None = None
    params: models.SearchParams | None = None
    if mode is SearchMode.DENSE:
        query, using, params = list(dense or ()), pl.DENSE_VECTOR, dense_params
    elif mode is SearchMode.SPARSE:
        assert sparse is not None  # check_search refused it otherwise
        query, using, params = sparse_vector(sparse), pl.SPARSE_VECTOR, sparse_params
    else:
        assert dense is not None and sparse is not None
        branches: list[tuple[list[float] | models.SparseVector, str, models.SearchParams]] = [
            (list(dense), pl.DENSE_VECTOR, dense_params),
            (sparse_vector(sparse), pl.SPARSE_VECTOR, sparse_params),
        ]
        prefetch = [
            models.Prefetch(
                query=q,
                using=u,
                params=p,
                filter=request_filter,
                limit=sp.prefetch_limit(limit),
            )
            for q, u, p in branches
        ]
        # Qdrant's RRF constant defaults to sp.RRF_K, the one Edge is given explicitly.
        query = models.FusionQuery(fusion=models.Fusion.RRF)
    return QueryParts(query, using, prefetch, params, request_filter)


def named_vectors(point: ChunkPoint) -> dict[str, models.Vector]:
    """The point's dense and sparse vectors, by name."""
    vectors: dict[str, models.Vector] = {}
    if point.dense is not None:
        vectors[pl.DENSE_VECTOR] = [float(v) for v in point.dense]
    if point.sparse is not None:
        vectors[pl.SPARSE_VECTOR] = sparse_vector(point.sparse)
    return vectors
