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
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from groundwire.server.cli import MODES
from groundwire.server.evaluation.beir import Document, Qrels
from groundwire.server.evaluation.metrics import (
    RANKING_METRICS,
    documents_in_rank_order,
    ranking_metrics,
)
from groundwire.server.measure.progress import progress_bar
from groundwire.server.measure.stats import latency_summary_ms, mean
from groundwire.server.measure.target import Metadata
from groundwire.v1 import (
    documents_pb2,
    documents_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)

DOCS_PER_STREAM = 128  # progress moves as the server confirms, not as the client buffers
INGEST_TIMEOUT_S = 3600.0
RETRIEVE_TIMEOUT_S = 60.0
_FAILURES_KEPT = 20


@dataclass
class IngestSummary:
    """The summed ``IngestDocuments`` responses, and how long the ingest took."""

    documents: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


async def ingest_corpus(
    channel: grpc.aio.Channel,
    metadata: Metadata,
    corpus: Sequence[Document],
    *,
    progress: bool,
) -> IngestSummary:
    """Send the corpus through ``IngestDocuments``, :data:`DOCS_PER_STREAM` documents per
    client stream. The server skips documents it already holds unchanged."""
    stub = documents_pb2_grpc.DocumentServiceStub(channel)
    summary = IngestSummary(documents=len(corpus))
    started = time.perf_counter()
    with progress_bar(len(corpus), "ingest", "doc", enabled=progress) as bar:
        for first in range(0, len(corpus), DOCS_PER_STREAM):
            part = corpus[first : first + DOCS_PER_STREAM]

            async def requests(
                part: Sequence[Document] = part,
            ) -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
                for doc in part:
                    yield documents_pb2.IngestDocumentsRequest(
                        document=documents_pb2.Document(
                            doc_id=doc.doc_id, title=doc.title, text=doc.text
                        )
                    )

            # The generated stubs are typed for the sync API; this is the aio channel.
            response = await stub.IngestDocuments(
                requests(),
                metadata=metadata,
                timeout=INGEST_TIMEOUT_S,
            )
            summary.created += response.created
            summary.updated += response.updated
            summary.unchanged += response.unchanged
            summary.failed += response.failed
            summary.chunks_written += response.chunks_written
            summary.chunks_deleted += response.chunks_deleted
            for failure in response.failures:
                if len(summary.failures) < _FAILURES_KEPT:
                    summary.failures.append(
                        {"doc_id": failure.doc_id, "field": failure.field, "reason": failure.reason}
                    )
            bar.update(len(part))
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
    progress: bool,
) -> dict[str, ModeRun]:
    """Retrieve every query in every mode, ``concurrency`` queries in flight."""
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    runs = {mode: ModeRun() for mode in modes}
    work: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue()
    for number, (query_id, text) in enumerate(queries.items()):
        work.put_nowait((number, query_id, text))

    async def one(mode: str, query_id: str, text: str) -> None:
        request = retrieval_pb2.RetrieveRequest(
            query=text, top_k=top_k, mode=MODES[mode], bypass_cache=True
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


def score_mode(run: ModeRun, qrels: Qrels) -> dict[str, Any]:
    """A mode's mean metrics, latency summaries and per-query figures."""
    per_query: dict[str, dict[str, Any]] = {}
    for query_id, relevance in qrels.items():
        ranking = run.rankings.get(query_id, [])
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
