"""Our domain requests as Qdrant Edge's types: filters, vectors and query requests."""

from __future__ import annotations

from collections.abc import Sequence

import qdrant_edge as edge

from groundwire.clients.models import ChunkPoint, SearchMode, SparseVector
from groundwire.clients.vector_store import payload as pl
from groundwire.clients.vector_store import search_plan as sp


def _match(values: tuple[str | int, ...]) -> edge.MatchValue | edge.MatchAny:
    if len(values) == 1:
        return edge.MatchValue(values[0])
    if isinstance(values[0], str):
        return edge.MatchAny([str(v) for v in values])
    return edge.MatchAny([int(v) for v in values])


def filter_of(conditions: Sequence[sp.Condition], chunk_ids: Sequence[str] = ()) -> edge.Filter:
    """All ``conditions`` (and, if given, one of ``chunk_ids``) must hold."""
    must: list[edge.ConditionType] = [
        edge.FieldCondition(c.key, match=_match(c.values)) for c in conditions
    ]
    if chunk_ids:
        must.append(edge.HasIdCondition(set(chunk_ids)))
    return edge.Filter(must=must)


def sparse_vector(vector: SparseVector) -> edge.SparseVector:
    """Ours as Edge's."""
    return edge.SparseVector(list(vector.indices), [float(v) for v in vector.values])


def named_vectors(point: ChunkPoint) -> dict[str, edge.NamedVector]:
    """The point's dense and sparse vectors, by name."""
    vectors: dict[str, edge.NamedVector] = {}
    if point.dense is not None:
        vectors[pl.DENSE_VECTOR] = [float(v) for v in point.dense]
    if point.sparse is not None:
        vectors[pl.SPARSE_VECTOR] = sparse_vector(point.sparse)
    return vectors


def query_request(
    conditions: list[sp.Condition],
    mode: SearchMode,
    dense: list[float] | None,
    sparse: SparseVector | None,
    limit: int,
    min_score: float | None,
    *,
    hnsw: bool,
    hnsw_ef: int,
) -> edge.QueryRequest:
    """The Edge query for a search: one vector, or both prefetched and fused by RRF."""
    request_filter = filter_of(conditions)
    dense_params = edge.SearchParams(hnsw_ef=hnsw_ef) if hnsw else edge.SearchParams(exact=True)
    # IDF over the tenant's own chunks: another tenant's corpus never moves these scores.
    sparse_params = edge.SearchParams(idf=edge.IdfParams(corpus=filter_of(conditions[:1])))
    dense_query = edge.Query.Nearest(dense, using=pl.DENSE_VECTOR) if dense else None
    sparse_query = (
        edge.Query.Nearest(sparse_vector(sparse), using=pl.SPARSE_VECTOR) if sparse else None
    )
    if mode is SearchMode.DENSE:
        query, params = dense_query, dense_params
    elif mode is SearchMode.SPARSE:
        query, params = sparse_query, sparse_params
    else:
        branch = sp.prefetch_limit(limit)
        prefetches = [
            edge.Prefetch(branch, dense_query, filter=request_filter, params=dense_params),
            edge.Prefetch(branch, sparse_query, filter=request_filter, params=sparse_params),
        ]
        return edge.QueryRequest(
            limit=limit,
            # The stub declares Fusion.Rrf apart from Fusion; the engine takes it.
            query=edge.Fusion.Rrf(k=sp.RRF_K),  # type: ignore[arg-type]
            prefetches=prefetches,
            filter=request_filter,
            with_payload=True,
            score_threshold=min_score,  # on the fused score
        )
    return edge.QueryRequest(
        limit=limit,
        query=query,
        filter=request_filter,
        params=params,
        with_payload=True,
        score_threshold=min_score,
    )
