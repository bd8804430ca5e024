"""Retrieval quality through the API: ingest the corpus, then Retrieve every judged query in
each mode and score the document rankings.

Chunks become documents by their best chunk (a document ranks where its first chunk does).
Every call bypasses the retrieval cache, so latency is a real search and a re-run is not
served from memory. The modes are interleaved query by query, rotating which goes first,
so a change in the machine's load falls on all of them alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from groundwire.sdk import retrieval_mode
from groundwire.tools.evaluation.beir import Document, Qrels
from groundwire.tools.evaluation.metrics import (
    RANKING_METRICS,
    documents_in_rank_order,
    ranking_metrics,
)
from groundwire.tools.measure.ingest import IngestSummary, ingest_documents
from groundwire.tools.measure.progress import Progress, progress_bar
from groundwire.tools.measure.stats import latency_summary_ms, mean
from groundwire.tools.measure.target import Metadata
from groundwire.v1 import (
    documents_pb2,
    retrieval_pb2,
    retrieval_pb2_grpc,
)

RETRIEVE_TIMEOUT_S = 60.0
#: The query limit of a server whose capabilities do not say (the contract's first one).
DEFAULT_MAX_QUERY_CHARS = 4096
_IDS_SHOWN = 10


@dataclass(frozen=True)
class LongQueries:
    """The queries over the server's length limit and what was done with them."""

    limit: int
    action: str  # "truncate" or "skip"
    query_ids: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: the limit, the action, how many, the first few ids."""
        return {
            "limit_chars": self.limit,
            "action": self.action,
            "count": len(self.query_ids),
            "first_ids": list(self.query_ids[:_IDS_SHOWN]),
        }


def fit_queries(
    queries: Mapping[str, str], limit: int, action: str
) -> tuple[dict[str, str], LongQueries]:
    """The queries the server accepts: each one over ``limit`` characters cut to it
    (``truncate``) or left out (``skip``); and which they were. A limit of 0 (a server that
    does not say) means :data:`DEFAULT_MAX_QUERY_CHARS`."""
    limit = limit or DEFAULT_MAX_QUERY_CHARS
    fitted: dict[str, str] = {}
    long: list[str] = []
    for query_id, text in queries.items():
        if len(text) > limit:
            long.append(query_id)
            if action == "skip":
                continue
            text = text[:limit]
        fitted[query_id] = text
    return fitted, LongQueries(limit, action, tuple(long))


async def ingest_corpus(
    channel: grpc.aio.Channel,
    metadata: Metadata,
    corpus: Sequence[Document],
    *,
    progress: Progress,
) -> IngestSummary:
    """Send the corpus through ``IngestDocuments``; the server skips documents it already
    holds unchanged."""
    docs = [
        documents_pb2.Document(doc_id=doc.doc_id, title=doc.title, text=doc.text) for doc in corpus
    ]
    started = time.perf_counter()
    with progress_bar(len(corpus), "ingest", "doc", enabled=progress) as bar:
        summary = await ingest_documents(channel, docs, metadata=metadata, on_confirmed=bar.update)
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass
class ModeRun:
    """What one mode returned: per query the document ranking, the client-side latency and
    the server's own total, in seconds."""

    rankings: dict[str, list[str]] = field(default_factory=dict)
    latency_s: dict[str, float] = field(default_factory=dict)
    server_s: dict[str, float] = field(default_factory=dict)


async def retrieve_all(
    channel: grpc.aio.Channel,
    metadata: Metadata,
    queries: Mapping[str, str],
    modes: Sequence[str],
    *,
    top_k: int,
    concurrency: int,
    progress: Progress,
) -> dict[str, ModeRun]:
    """Retrieve every query in every mode, ``concurrency`` queries in flight."""
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    runs = {mode: ModeRun() for mode in modes}
    work: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue()
    for number, (query_id, text) in enumerate(queries.items()):
        work.put_nowait((number, query_id, text))

    async def one(mode: str, query_id: str, text: str) -> None:
        request = retrieval_pb2.RetrieveRequest(
            query=text, top_k=top_k, mode=retrieval_mode(mode), bypass_cache=True
        )
        started = time.perf_counter()
        response = await stub.Retrieve(request, metadata=metadata, timeout=RETRIEVE_TIMEOUT_S)
        run = runs[mode]
        run.latency_s[query_id] = time.perf_counter() - started
        run.server_s[query_id] = response.timings.total.ToNanoseconds() / 1e9
        run.rankings[query_id] = documents_in_rank_order([c.doc_id for c in response.chunks])

    with progress_bar(
        len(queries), f"retrieve ({', '.join(modes)})", "query", enabled=progress
    ) as bar:

        async def worker() -> None:
            while not work.empty():
                number, query_id, text = work.get_nowait()
                turn = number % len(modes)
                for mode in [*modes[turn:], *modes[:turn]]:
                    await one(mode, query_id, text)
                bar.update(1)

        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(queries))))))
    return runs


def score_mode(run: ModeRun, qrels: Qrels, *, ignore_identical_ids: bool = False) -> dict[str, Any]:
    """A mode's mean metrics, latency summaries and per-query figures. With
    ``ignore_identical_ids`` a query's own id is dropped from its ranking first (BEIR's
    ``ignore_identical_ids``: the query is itself a corpus document)."""
    per_query: dict[str, dict[str, Any]] = {}
    for query_id, relevance in qrels.items():
        ranking = run.rankings.get(query_id, [])
        if ignore_identical_ids:
            ranking = [doc_id for doc_id in ranking if doc_id != query_id]
        per_query[query_id] = {
            **ranking_metrics(ranking, relevance),
            "top10": ranking[:10],
            "latency_ms": run.latency_s.get(query_id, float("nan")) * 1000.0,
        }
    return {
        "metrics": {m: mean([q[m] for q in per_query.values()]) for m in RANKING_METRICS},
        "latency": latency_summary_ms(list(run.latency_s.values())),
        "server_latency": latency_summary_ms(list(run.server_s.values())),
        "mean_distinct_docs": mean([float(len(r)) for r in run.rankings.values()]),
        "per_query": per_query,
    }
