"""The Retrieve scenario: our server's Retrieve (cache miss, cache hit, optionally cache
bypassed) beside the direct baseline, at each concurrency level and mode, interleaved.

The server is a separate ``groundwire serve`` process (Qdrant Edge on disk, the bundled
MiniLM, a private ``redis-server``; auth off), like the Generate scenario's: so the load
generator never shares its event loop or its GIL, and the CPU the server spends per call can
be read from ``/proc`` (the sizing figure, Retrieve QPS per core). The direct baseline runs
in this process on its own copy of the same index: the corpus is ingested once, through
``IngestDocuments`` into a first server process, whose data directory is then copied for
the measured one (only one process may own an Edge shard); the original is opened here
through the client layer (:mod:`groundwire.clients`) with the embedder, BM25 encoder and
store the server's settings name: ``GROUNDWIRE_EMBEDDER`` (``local``, ``local-torch`` or
``none``), ``GROUNDWIRE_EMBED_QUERY_THREADS``, ``GROUNDWIRE_BM25_AVG_LEN`` and
``GROUNDWIRE_EDGE_HNSW`` of ``--server-env`` apply to both.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from groundwire.clients.ports import DenseEmbedder
from groundwire.testing.redis_process import RedisServer, free_port
from groundwire.tools.benchmark.load import Measured, Tick, run_slice
from groundwire.tools.benchmark.plan import Plan, rotation
from groundwire.tools.benchmark.processes import (
    CpuProbe,
    child_env,
    child_process,
    serve_argv,
    wait_until_serving,
)
from groundwire.tools.benchmark.retrieve_calls import (
    DirectParts,
    RetrieveCall,
    RetrieveTiming,
    cycled,
    direct_call,
    grpc_call,
    read_corpus,
    read_queries,
)
from groundwire.tools.benchmark.summaries import retrieve_comparison, retrieve_summary
from groundwire.tools.measure.target import local_server, open_channel
from groundwire.v1 import documents_pb2

SERVER_VARIANTS = ("bypass", "miss", "hit")
EXPECT_HIT = {"miss": False, "hit": True}
WARM_CONCURRENCY = 8
# The server's defaults for what the direct baseline builds (README, "Configuration").
DEFAULT_BM25_AVG_LEN = 256.0
DIRECT_EMBEDDERS = ("local", "local-torch", "none")


@dataclass(frozen=True)
class RetrieveOptions:
    """What the Retrieve scenario runs besides the plan."""

    dataset: Path
    docs: int
    modes: tuple[str, ...]
    variants: tuple[str, ...]  # of SERVER_VARIANTS; direct always runs
    top_k: int
    hit_queries: int
    server_env: Mapping[str, str]  # GROUNDWIRE_* for the servers started here


def server_settings(server_env: Mapping[str, str]) -> dict[str, str]:
    """The ``GROUNDWIRE_*`` variables of the benchmark's Retrieve servers: Qdrant Edge, the
    local model, auth off, no LLM; ``server_env`` over them."""
    return {
        "GROUNDWIRE_VECTOR_STORE": "edge",
        "GROUNDWIRE_EMBEDDER": "local",
        "GROUNDWIRE_AUTH_MODE": "off",
        "GROUNDWIRE_LOG_LEVEL": "WARNING",
        **server_env,
    }


def check_direct_env(server_env: Mapping[str, str]) -> str | None:
    """Why the direct baseline cannot mirror a server of ``server_env``, or None."""
    embedder = server_settings(server_env)["GROUNDWIRE_EMBEDDER"]
    if embedder not in DIRECT_EMBEDDERS:
        return (
            f"GROUNDWIRE_EMBEDDER={embedder}: the direct Retrieve baseline runs "
            f"{', '.join(DIRECT_EMBEDDERS)}"
        )
    if server_settings(server_env).get("GROUNDWIRE_VECTOR_STORE") != "edge":
        return "the Retrieve scenario measures Qdrant Edge (GROUNDWIRE_VECTOR_STORE=edge)"
    return None


async def _ingest(
    docs: Sequence[documents_pb2.Document], data_dir: Path, options: RetrieveOptions, tick: Tick
) -> dict[str, Any]:
    """Ingest ``docs`` through ``IngestDocuments`` into a server process over ``data_dir``,
    stopped afterwards (the Edge shard is then free for the copies)."""
    from groundwire.tools.measure.ingest import ingest_documents

    started = time.perf_counter()
    settings = server_settings(options.server_env)
    async with (
        local_server(
            data_dir, settings, inherit=False, log_dir=data_dir.parent, log_name="server-ingest"
        ) as (address, _),
        open_channel(address) as channel,
    ):

        def confirmed(count: int) -> None:
            for _ in range(count):
                tick("retrieve ingest")

        summary = await ingest_documents(channel, docs, on_confirmed=confirmed)
    return {
        "documents": len(docs),
        "failed": summary.failed,
        "chunks": summary.chunks_written,
        "seconds": time.perf_counter() - started,
    }


async def _dense_embedder(env: Mapping[str, str]) -> DenseEmbedder | None:
    from groundwire.clients.embedder import TorchEmbedder
    from groundwire.clients.onnx_embedder import OnnxEmbedder

    threads = int(env.get("GROUNDWIRE_EMBED_QUERY_THREADS", "1"))
    kind = env["GROUNDWIRE_EMBEDDER"]
    if kind == "local":
        return await OnnxEmbedder.load(query_threads=threads)
    if kind == "local-torch":
        return await TorchEmbedder.load(query_threads=threads)
    return None


@contextlib.asynccontextmanager
async def _direct_parts(
    data_dir: Path, server_env: Mapping[str, str]
) -> AsyncIterator[DirectParts]:
    """The embedder, BM25 encoder and Edge store over ``data_dir`` (its live generation),
    as a server of ``server_env`` builds them."""
    from groundwire.clients.sparse import Bm25Encoder
    from groundwire.clients.vector_store import EdgeVectorStore
    from groundwire.clients.vector_store.edge_pointer import live_dir

    env = server_settings(server_env)
    hnsw = env.get("GROUNDWIRE_EDGE_HNSW", "false").lower() in ("1", "true", "yes", "on")
    avg_len = float(env.get("GROUNDWIRE_BM25_AVG_LEN", DEFAULT_BM25_AVG_LEN))
    dense = await _dense_embedder(env)
    store = EdgeVectorStore(live_dir(data_dir / "edge"), hnsw=hnsw)
    try:
        await store.ensure_collection(
            dense.embedder_id if dense else "", dense.dimension if dense else 0
        )
        yield DirectParts(dense, Bm25Encoder(avg_len=avg_len), store)
    finally:
        await store.close()
        if dense is not None:
            await dense.close()


async def run_retrieve(
    plan: Plan, options: RetrieveOptions, work: Path, tick: Tick
) -> dict[str, Any]:
    """Ingest, start the server and Redis, measure every mode and level; the results."""
    docs = read_corpus(options.dataset, options.docs)
    queries = read_queries(options.dataset)
    hit_pool, miss_pool = queries[: options.hit_queries], queries[options.hit_queries :]
    direct_dir, server_dir = work / "retrieve-direct", work / "retrieve-server"
    ingest = await _ingest(docs, direct_dir, options, tick)
    shutil.copytree(direct_dir, server_dir)
    port = free_port()
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        env = child_env(
            {
                "GROUNDWIRE_LISTEN": f"127.0.0.1:{port}",
                "GROUNDWIRE_DATA_DIR": str(server_dir),
                "GROUNDWIRE_REDIS_URL": redis.url,
                "GROUNDWIRE_METRICS_PORT": "0",
                "GROUNDWIRE_LOG_LEVEL": "WARNING",
                "GROUNDWIRE_GRACE_PERIOD_S": "0",
                **options.server_env,
            }
        )
        child = stack.enter_context(child_process("server-retrieve", serve_argv(), env, work))
        address = f"127.0.0.1:{port}"
        # The child loads its model while this process loads its own.
        async with _direct_parts(direct_dir, options.server_env) as parts:
            await wait_until_serving(child, address)
            assert redis.process is not None
            probe = CpuProbe({"server": child.pid, "redis": redis.process.pid})
            async with open_channel(address) as channel:
                levels = []
                for mode in options.modes:
                    for concurrency in plan.levels:
                        level = _Level(plan, options, parts, channel, redis, probe, tick)
                        levels.append(await level.run(mode, concurrency, hit_pool, miss_pool))
    return {
        "dataset": str(options.dataset),
        "ingest": ingest,
        "queries": len(miss_pool),
        "hit_queries": len(hit_pool),
        "top_k": options.top_k,
        "variants": ["direct", *options.variants],
        "levels": levels,
    }


@dataclass
class _Level:
    """Every variant at one (mode, level)."""

    plan: Plan
    options: RetrieveOptions
    parts: DirectParts
    channel: grpc.aio.Channel
    redis: RedisServer
    probe: CpuProbe
    tick: Tick

    def _call(self, variant: str, mode: str, texts: Sequence[str]) -> RetrieveCall:
        top_k = self.options.top_k
        if variant == "direct":
            return direct_call(self.parts, mode, top_k, texts)
        return grpc_call(self.channel, mode, top_k, texts, bypass=variant == "bypass")

    async def _warm_hits(self, mode: str, hit_pool: Sequence[str]) -> None:
        """Fill the cache with the hit queries until each one hits (entries are written after
        the answer, in the background)."""
        call = self._call("hit", mode, hit_pool)
        for _ in range(5):
            done = await run_slice(call, len(hit_pool), WARM_CONCURRENCY, deadline_s=60)
            if all(r is not None and r.cache_hit for r in done.results):
                return
            await asyncio.sleep(0.05)

    async def run(
        self, mode: str, concurrency: int, hit_pool: Sequence[str], miss_pool: Sequence[str]
    ) -> dict[str, Any]:
        """An untimed warm-up, then the rounds, the variants' order rotating each round. The
        direct, bypass and miss calls of a round ask the same (distinct) queries; Redis is
        emptied before each miss slice and refilled with the hit queries before each hit one."""
        order = ["direct", *self.options.variants]
        per_slice = self.plan.calls_per_slice(concurrency)
        warm = cycled(hit_pool, 0, concurrency)
        for variant in order:
            await run_slice(self._call(variant, mode, warm), len(warm), concurrency, deadline_s=60)
        measured: dict[str, Measured[RetrieveTiming]] = {v: Measured() for v in order}
        for round_number in range(self.plan.rounds):
            texts = cycled(miss_pool, round_number * per_slice, per_slice)
            for variant in rotation(order, round_number):
                if variant in EXPECT_HIT:
                    await asyncio.to_thread(self.redis.flush)
                if variant == "hit":
                    await self._warm_hits(mode, hit_pool)
                asked = cycled(hit_pool, 0, per_slice) if variant == "hit" else texts
                measured[variant].slices.append(
                    await run_slice(
                        self._call(variant, mode, asked),
                        per_slice,
                        concurrency,
                        deadline_s=self.plan.slice_seconds,
                        cpu=self.probe,
                        on_done=functools.partial(
                            self.tick, f"retrieve {mode} c={concurrency} {variant}"
                        ),
                    )
                )
        planned = per_slice * self.plan.rounds
        rows = {
            v: retrieve_summary(
                measured[v],
                planned=planned,
                worker="bench" if v == "direct" else "server",
                expect_hit=EXPECT_HIT.get(v),
            )
            for v in order
        }
        return {
            "mode": mode,
            "concurrency": concurrency,
            "variants": rows,
            "versus_direct": {
                v: retrieve_comparison(rows[v], rows["direct"]) for v in self.options.variants
            },
        }
