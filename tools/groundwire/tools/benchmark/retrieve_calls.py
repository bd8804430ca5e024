"""One Retrieve, timed from the caller's side: through our server over gRPC (cache on, off or
warmed), or the direct baseline (the same query embedder, BM25 encoder and vector store
called in-process through the client layer, no gRPC, no pipeline, no cache); and the BEIR
files the queries and documents come from.

The baseline does what the server documents for a query: it embeds the query after Unicode
NFKC normalisation with runs of white space as one space (the form the retrieval cache keys
on too), and searches the tenant every call has when authentication is off, ``default``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from groundwire.clients.models import SearchMode
from groundwire.clients.ports import DenseEmbedder, SparseEncoder, VectorStore
from groundwire.sdk import retrieval_mode
from groundwire.tools.evaluation.beir import corpus_documents, load_queries
from groundwire.tools.evaluation.reference import server_query_text
from groundwire.v1 import documents_pb2, retrieval_pb2, retrieval_pb2_grpc

CALL_TIMEOUT_S = 60.0
#: The tenant of every call to a server with GROUNDWIRE_AUTH_MODE=off (README, "auth").
OPEN_TENANT = "default"
SERVER_TIMINGS = ("total", "cache", "embed", "search")


@dataclass(frozen=True)
class RetrieveTiming:
    """One successful Retrieve."""

    latency_s: float
    cache_hit: bool | None  # None for the direct baseline
    server: Mapping[str, float] = field(default_factory=dict)  # ours: response.timings


RetrieveCall = Callable[[int], Awaitable[RetrieveTiming]]


@dataclass(frozen=True)
class DirectParts:
    """What the server's retrieval calls, built here the way the server builds it."""

    dense: DenseEmbedder | None
    sparse: SparseEncoder
    store: VectorStore


def direct_call(parts: DirectParts, mode: str, top_k: int, texts: Sequence[str]) -> RetrieveCall:
    """Embed (dense and/or BM25, as the mode needs) and search, in this process; call i asks
    ``texts[i]``."""
    search_mode = SearchMode(mode)

    async def call(index: int) -> RetrieveTiming:
        started = time.perf_counter()
        text = server_query_text(texts[index])
        dense = None
        if search_mode in (SearchMode.DENSE, SearchMode.HYBRID):
            if parts.dense is None:
                raise ValueError(f"mode {mode} needs a dense embedder")
            dense = await parts.dense.embed_query(text)
        sparse = (
            parts.sparse.encode_query(text)
            if search_mode in (SearchMode.SPARSE, SearchMode.HYBRID)
            else None
        )
        await parts.store.search(
            OPEN_TENANT, mode=search_mode, dense=dense, sparse=sparse, limit=top_k
        )
        return RetrieveTiming(time.perf_counter() - started, None)

    return call


def grpc_call(
    channel: grpc.aio.Channel, mode: str, top_k: int, texts: Sequence[str], *, bypass: bool
) -> RetrieveCall:
    """``Retrieve`` through our server (``bypass_cache`` as given); call i asks ``texts[i]``."""
    stub: Any = retrieval_pb2_grpc.RetrievalServiceStub(channel)  # typed for the sync API

    async def call(index: int) -> RetrieveTiming:
        request = retrieval_pb2.RetrieveRequest(
            query=texts[index], top_k=top_k, mode=retrieval_mode(mode), bypass_cache=bypass
        )
        started = time.perf_counter()
        response = await stub.Retrieve(request, timeout=CALL_TIMEOUT_S)
        latency = time.perf_counter() - started
        server = {
            name: getattr(response.timings, name).ToTimedelta().total_seconds()
            for name in SERVER_TIMINGS
        }
        return RetrieveTiming(latency, bool(response.cache_hit), server)

    return call


def cycled(pool: Sequence[str], start: int, count: int) -> list[str]:
    """``count`` texts from ``pool`` beginning at ``start``, wrapping around."""
    if not pool:
        return []
    ring = itertools.islice(itertools.cycle(pool), start % len(pool), None)
    return list(itertools.islice(ring, count))


def read_corpus(dataset: Path, limit: int) -> list[documents_pb2.Document]:
    """The first ``limit`` documents of ``corpus.jsonl``."""
    return [
        documents_pb2.Document(doc_id=doc.doc_id, title=doc.title, text=doc.text)
        for _, doc in itertools.islice(corpus_documents(dataset / "corpus.jsonl"), limit)
    ]


def read_queries(dataset: Path) -> list[str]:
    """Every query text of ``queries.jsonl`` (train and test), each distinct text once (as
    the cache keys them: normalised), in file order."""
    distinct: dict[str, str] = {}
    for text in load_queries(dataset / "queries.jsonl").values():
        distinct.setdefault(server_query_text(text), text)
    return list(distinct.values())
