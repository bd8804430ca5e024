"""Retrieve latency and throughput through gRPC, side by side with calling the same parts
directly in-process.

Setup: an in-process groundwire server from real parts (Qdrant Edge on disk in a temporary
directory, the bundled all-MiniLM-L6-v2, a private ``redis-server`` on a free port; auth off;
127.0.0.1:0). The first ``--docs`` SciFact documents (default 2,000) are ingested through
``IngestDocuments``; the SciFact queries (train and test, 1,109) are the query set.

For each mode (``--modes``, default hybrid and dense) and each concurrency level C
(``--concurrency``, default 1 and 16: C concurrent ``grpc.aio`` workers over one channel),
four variants run, interleaved in ``--rounds`` rounds (the order rotates each round, so drift
in machine load falls on all of them alike):

- ``direct``: the baseline, no gRPC and no pipeline: ``embed_query`` on the same embedder,
  ``Bm25Encoder.encode_query``, ``store.search`` on the server's own store;
- ``grpc bypass``: ``Retrieve`` with ``bypass_cache=True`` (the miss path without Redis);
- ``grpc miss``: ``Retrieve`` with the cache on and cold keys (Redis flushed before each
  slice, distinct queries): version lookup + get + embed + search + set;
- ``grpc hit``: ``Retrieve`` with the cache on, a few warmed queries repeated.

``direct``, ``grpc bypass`` and ``grpc miss`` run the very same query texts in each round.
Each row reports p50/p99 latency (client-side, per call), throughput (completed calls / wall
time), the server's own ``timings`` p50 (total, cache, embed), and the ratios ours/direct
(p50 latency and QPS): the cost of gRPC + servicer + pipeline over the bare parts, or the
gain of the cache.
Requests are bounded per variant and level by ``--requests`` and ``--max-seconds``.

Caveat printed with the results: the machine has few cores (2 here) and the load generator,
the gRPC client, the server, the embedder thread and Redis all share them; the client and
server even share one event loop. Compare rows with each other, not with other machines.

Rerun (from the repository root)::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/retrieval_bench.py
    HF_HUB_OFFLINE=1 .venv/bin/python bench/retrieval_bench.py --docs 500 --requests 100 \\
        --concurrency 1,4,16 --modes hybrid

Writes ``bench/results/retrieval.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_DATASET,
    RESULTS_DIR,
    TENANT,
    RunningServer,
    environment,
    ingest_documents,
    load_corpus,
    load_embedder,
    load_queries,
    percentile,
    print_table,
    private_redis,
    quiet_logs,
    running_server,
    write_json,
)
from tqdm import tqdm

from groundwire.clients.models import SearchMode
from groundwire.clients.sparse import Bm25Encoder
from groundwire.server.cli import MODES
from groundwire.server.pipeline.retrieval import normalize_query
from groundwire.v1 import retrieval_pb2

VARIANTS = ("direct", "grpc bypass", "grpc miss", "grpc hit")

# One call: returns the server-reported timings in seconds (empty for direct calls) and
# whether the answer came from the cache (None for direct calls).
Call = Callable[[str], Awaitable[tuple[dict[str, float], bool | None]]]
TIMINGS = ("total", "cache", "embed", "search")


@dataclass
class Measured:
    """Accumulated over the rounds of one (mode, concurrency, variant)."""

    latencies: list[float] = field(default_factory=list)
    server: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TIMINGS})
    wall_s: float = 0.0
    errors: int = 0
    unexpected_cache: int = 0  # a hit row that missed, or a miss row that hit

    @property
    def qps(self) -> float:
        return len(self.latencies) / self.wall_s if self.wall_s > 0 else math.nan


async def run_slice(
    call: Call,
    texts: Sequence[str],
    concurrency: int,
    deadline_s: float,
    into: Measured,
    expect_hit: bool | None,
) -> None:
    """Run ``texts`` through ``call`` with ``concurrency`` workers pulling from one queue,
    stopping early at ``deadline_s`` seconds."""
    pending: Iterator[str] = iter(texts)
    started = time.perf_counter()
    stop_at = started + deadline_s

    async def worker() -> None:
        for text in pending:
            if time.perf_counter() > stop_at:
                return
            begun = time.perf_counter()
            try:
                timings, hit = await call(text)
            except Exception as exc:  # a benchmark counts failures rather than dying on one
                into.errors += 1
                if into.errors <= 3:
                    print(f"call failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            into.latencies.append(time.perf_counter() - begun)
            for name, seconds in timings.items():
                into.server[name].append(seconds)
            if expect_hit is not None and hit is not None and hit != expect_hit:
                into.unexpected_cache += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    into.wall_s += time.perf_counter() - started


def make_calls(running: RunningServer, bm25: Bm25Encoder, mode: str, top_k: int) -> dict[str, Call]:
    """The four ways of answering one query."""
    search_mode = SearchMode(mode)
    store = running.components.store
    dense_embedder = running.components.dense
    assert dense_embedder is not None
    stub = running.retrieval

    async def direct(text: str) -> tuple[dict[str, float], bool | None]:
        normalized = normalize_query(text)
        dense = (
            await dense_embedder.embed_query(normalized)
            if search_mode in (SearchMode.DENSE, SearchMode.HYBRID)
            else None
        )
        sparse = (
            bm25.encode_query(normalized)
            if search_mode in (SearchMode.SPARSE, SearchMode.HYBRID)
            else None
        )
        await store.search(TENANT, mode=search_mode, dense=dense, sparse=sparse, limit=top_k)
        return {}, None

    def through_grpc(bypass: bool) -> Call:
        async def call(text: str) -> tuple[dict[str, float], bool | None]:
            response = await stub.Retrieve(  # type: ignore[misc]  # aio channel
                retrieval_pb2.RetrieveRequest(
                    query=text, top_k=top_k, mode=MODES[mode], bypass_cache=bypass
                ),
                timeout=30,
            )
            timings = {
                name: getattr(response.timings, name).ToTimedelta().total_seconds()
                for name in TIMINGS
            }
            return timings, response.cache_hit

        return call

    return {
        "direct": direct,
        "grpc bypass": through_grpc(True),
        "grpc miss": through_grpc(False),
        "grpc hit": through_grpc(False),
    }


async def bench_level(
    running: RunningServer,
    redis: Any,
    bm25: Bm25Encoder,
    *,
    mode: str,
    concurrency: int,
    queries: Sequence[str],
    hit_queries: Sequence[str],
    args: argparse.Namespace,
) -> dict[str, Measured]:
    """All variants at one (mode, concurrency), interleaved over ``args.rounds`` rounds."""
    calls = make_calls(running, bm25, mode, args.top_k)
    measured = {v: Measured() for v in VARIANTS}
    per_slice = max(1, math.ceil(args.requests / args.rounds))
    slice_deadline = args.max_seconds / args.rounds
    cycle = itertools.cycle(queries)
    # Untimed warm-up: first calls pay for connection set-up and lazy initialisation.
    for variant in VARIANTS:
        for text in hit_queries[:2]:
            await calls[variant](text)
    bar = tqdm(total=args.rounds * len(VARIANTS), desc=f"{mode} c={concurrency}", unit="slice")
    for round_number in range(args.rounds):
        texts = [next(cycle) for _ in range(per_slice)]
        hits = [hit_queries[i % len(hit_queries)] for i in range(per_slice)]
        shift = round_number % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            if variant == "grpc miss":
                redis.flush()  # cold keys: every call misses, then fills the cache
            if variant == "grpc hit":
                redis.flush()
                for text in hit_queries:  # warm, untimed
                    await calls[variant](text)
            expect = {"grpc miss": False, "grpc hit": True}.get(variant)
            await run_slice(
                calls[variant],
                hits if variant == "grpc hit" else texts,
                concurrency,
                slice_deadline,
                measured[variant],
                expect,
            )
            bar.update(1)
    bar.close()
    return measured


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="See the module docstring (head -40 bench/retrieval_bench.py) for details.",
    )
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR SciFact dir")
    parser.add_argument("--docs", type=int, default=2000, help="first N corpus documents")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated levels")
    parser.add_argument("--modes", default="hybrid,dense", help="comma-separated modes")
    parser.add_argument(
        "--requests", type=int, default=400, help="requests per variant per level (bound)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="time bound per variant per level, spread over the rounds",
    )
    parser.add_argument("--rounds", type=int, default=4, help="interleaving rounds per level")
    parser.add_argument("--top-k", type=int, default=10, help="chunks per Retrieve")
    parser.add_argument("--hit-queries", type=int, default=8, help="warmed queries for hits")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "retrieval.json", help="JSON results"
    )
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(c < 1 for c in args.concurrency):
        parser.error("--concurrency levels must be >= 1")
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {sorted(MODES)}")
    if args.rounds < 1 or args.requests < 1 or args.hit_queries < 1:
        parser.error("--rounds, --requests and --hit-queries must be >= 1")
    return args


def summarise(mode: str, concurrency: int, measured: dict[str, Measured]) -> list[dict[str, Any]]:
    base = measured["direct"]
    base_p50 = percentile([s * 1000 for s in base.latencies], 50)
    rows = []
    for variant, m in measured.items():
        ms = [s * 1000 for s in m.latencies]
        p50 = percentile(ms, 50)
        rows.append(
            {
                "mode": mode,
                "concurrency": concurrency,
                "variant": variant,
                "requests": len(ms),
                "errors": m.errors,
                "unexpected_cache_outcome": m.unexpected_cache,
                "p50_ms": p50,
                "p95_ms": percentile(ms, 95),
                "p99_ms": percentile(ms, 99),
                "qps": m.qps,
                **{
                    f"server_{name}_p50_ms": percentile([s * 1000 for s in m.server[name]], 50)
                    for name in TIMINGS
                },
                "p50_ratio_vs_direct": p50 / base_p50 if base_p50 > 0 else math.nan,
                "qps_ratio_vs_direct": m.qps / base.qps if base.qps > 0 else math.nan,
            }
        )
    return rows


async def run(args: argparse.Namespace) -> int:
    quiet_logs()
    corpus = load_corpus(args.dataset, args.docs)
    # SciFact repeats a few claims (1,109 queries, 1,105 distinct): a repeat would be a hit.
    all_queries = list(
        {normalize_query(q): q for q in load_queries(args.dataset).values()}.values()
    )
    hit_queries = all_queries[: args.hit_queries]
    miss_queries = all_queries[args.hit_queries :]
    embedder = await load_embedder()
    rows: list[dict[str, Any]] = []
    output: dict[str, Any] = {
        "documents": len(corpus),
        "query_pool": len(miss_queries),
        "top_k": args.top_k,
        "requests_per_variant_per_level": args.requests,
        "max_seconds_per_variant_per_level": args.max_seconds,
        "rounds": args.rounds,
        "embedder_id": embedder.embedder_id,
        "environment": environment(),
        "note": (
            f"{os.cpu_count()} CPU cores shared by the load generator, the gRPC client, the "
            "server (one process, one event loop), the embedder thread and redis-server"
        ),
        "rows": rows,
    }
    try:
        with private_redis() as redis:
            async with running_server(embedder, redis_url=redis.url) as running:
                totals = await ingest_documents(running, corpus)
                chunks = await running.components.store.count(TENANT)
                output["ingest"] = {
                    "created": totals.created,
                    "failed": totals.failed,
                    "chunks": chunks,
                    "seconds": totals.seconds,
                }
                print(f"ingested {totals.created} docs as {chunks} chunks in {totals.seconds:.0f}s")
                bm25 = Bm25Encoder(avg_len=running.settings.bm25_avg_len)
                for mode in args.modes:
                    for concurrency in args.concurrency:
                        measured = await bench_level(
                            running,
                            redis,
                            bm25,
                            mode=mode,
                            concurrency=concurrency,
                            queries=miss_queries,
                            hit_queries=hit_queries,
                            args=args,
                        )
                        rows.extend(summarise(mode, concurrency, measured))
    finally:
        await embedder.close()

    print()
    print(
        f"Retrieve over {len(corpus)} SciFact docs ({output['ingest']['chunks']} chunks), "
        f"top_k={args.top_k}; ratio = ours / direct (p50 latency, QPS)"
    )
    print_table(
        [
            "mode",
            "conc",
            "variant",
            "n",
            "p50 ms",
            "p99 ms",
            "QPS",
            "srv p50 ms",
            "srv cache p50",
            "srv embed p50",
            "p50 ratio",
            "QPS ratio",
        ],
        [
            [
                r["mode"],
                r["concurrency"],
                r["variant"],
                r["requests"],
                r["p50_ms"],
                r["p99_ms"],
                r["qps"],
                r["server_total_p50_ms"],
                r["server_cache_p50_ms"],
                r["server_embed_p50_ms"],
                r["p50_ratio_vs_direct"],
                r["qps_ratio_vs_direct"],
            ]
            for r in rows
        ],
    )
    problems = [r for r in rows if r["errors"] or r["unexpected_cache_outcome"]]
    for r in problems:
        print(
            f"warning: {r['mode']} c={r['concurrency']} {r['variant']}: {r['errors']} errors, "
            f"{r['unexpected_cache_outcome']} unexpected cache outcomes",
            file=sys.stderr,
        )
    print(f"note: {output['note']}; compare rows within this run, not across machines.")
    write_json(args.output, output)
    print(f"wrote {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
