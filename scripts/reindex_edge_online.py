"""An online Edge reindex on SciFact documents, under a bounded Retrieve and ingest load.

Starts redis-server and ``groundwire serve --workers 2`` on Qdrant Edge with the int8 ONNX
MiniLM (``GROUNDWIRE_EMBEDDER=local``), ingests the first ``--docs`` SciFact documents, then,
while ``--retrievers`` Retrieve loops (dense) and one ingest loop run through the public port:

1. ``groundwire reindex build`` to ``--new-embedder`` (default ``local-torch``: another
   embedder id), run by the server that owns the store;
2. ``groundwire reindex switch``.

Prints each step's time, and per phase (before, build, switch) the calls, their failures and
Retrieve p50/p95. Run: ``.venv/bin/python scripts/reindex_edge_online.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from groundwire.testing.redis_process import RedisServer, free_port  # noqa: E402
from groundwire.v1 import (  # noqa: E402
    documents_pb2,
    documents_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from tests.e2e.serving import wait_serving  # noqa: E402

KEY = "key-scifact-0123456789"
AUTH = (("authorization", f"Bearer {KEY}"),)
SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


@dataclass
class Phase:
    """The calls made during one phase."""

    calls: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def line(self, name: str) -> str:
        ordered = sorted(self.latencies) or [0.0]
        p50 = ordered[len(ordered) // 2] * 1000
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000
        return (
            f"{name:>7}: {self.calls:5d} calls, {len(self.failures)} failed; "
            f"Retrieve p50 {p50:.0f} ms, p95 {p95:.0f} ms"
        )


class Load:
    """Retrieve loops and one ingest loop; calls are counted in the current phase."""

    def __init__(self, address: str, queries: list[str], docs: list[dict[str, str]]) -> None:
        self.address = address
        self.queries = queries
        self.docs = docs
        self.phases: dict[str, Phase] = {}
        self.phase = Phase()
        self.stop = asyncio.Event()

    def enter(self, name: str) -> None:
        self.phase = self.phases.setdefault(name, Phase())

    async def retrieving(self, channel: grpc.aio.Channel, offset: int) -> None:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        i = offset
        while not self.stop.is_set():
            i = (i + 1) % len(self.queries)
            request = retrieval_pb2.RetrieveRequest(query=self.queries[i], top_k=10)
            request.bypass_cache = True
            phase, started = self.phase, time.perf_counter()
            try:
                await stub.Retrieve(request, metadata=AUTH, timeout=30)
                phase.latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as exc:
                phase.failures.append(f"retrieve: {exc.code()} {exc.details()}")
            phase.calls += 1

    async def ingesting(self, channel: grpc.aio.Channel) -> None:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        n = 0
        while not self.stop.is_set():
            row = self.docs[n % len(self.docs)]
            n += 1

            async def one(
                row: dict[str, str] = row, n: int = n
            ) -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
                yield documents_pb2.IngestDocumentsRequest(
                    document=documents_pb2.Document(
                        doc_id=f"live-{n}", title=row.get("title", ""), text=row["text"]
                    )
                )

            phase = self.phase
            try:
                await stub.IngestDocuments(one(), metadata=AUTH, timeout=60)
            except grpc.aio.AioRpcError as exc:
                phase.failures.append(f"ingest: {exc.code()} {exc.details()}")
            phase.calls += 1
            await asyncio.sleep(0.5)

    async def run(self, retrievers: int) -> None:
        channels = [
            grpc.aio.insecure_channel(self.address, options=OWN_CONNECTION)
            for _ in range(retrievers + 1)
        ]
        try:
            loops = [self.retrieving(c, 37 * n) for n, c in enumerate(channels[:-1])]
            await asyncio.gather(*loops, self.ingesting(channels[-1]))
        finally:
            for channel in channels:
                await channel.close()


async def reindex(env: dict[str, str], step: str) -> tuple[float, str]:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "groundwire.server.cli",
        "reindex",
        step,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"reindex {step} failed:\n{out.decode()}")
    return time.perf_counter() - started, out.decode()


async def main(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()][: args.docs]
    queries = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").open()][:200]
    tmp = Path(tempfile.mkdtemp(prefix="gw-reindex-"))
    with RedisServer() as redis:
        base = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDWIRE_")}
        base.update(
            {
                "GROUNDWIRE_DATA_DIR": str(tmp / "data"),
                "GROUNDWIRE_REDIS_URL": redis.url,
                "GROUNDWIRE_METRICS_PORT": "0",
                "GROUNDWIRE_AUTH_MODE": "api_key",
                "GROUNDWIRE_API_KEYS": json.dumps({"scifact": KEY}),
                "GROUNDWIRE_WORKERS": "2",
                "GROUNDWIRE_LOG_LEVEL": "WARNING",
            }
        )
        old = {**base, "GROUNDWIRE_EMBEDDER": "local"}
        new = {**base, "GROUNDWIRE_EMBEDDER": args.new_embedder}
        port = free_port()
        address = f"127.0.0.1:{port}"
        log_path = tmp / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(  # noqa: ASYNC220  (long-lived; returns at once)
                [sys.executable, "-m", "groundwire.server.cli", "serve"],
                env={**old, "GROUNDWIRE_LISTEN": address},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            await wait_serving(address, server, attempts=1200)
            await asyncio.sleep(3)  # the second worker
            started = time.perf_counter()
            async with grpc.aio.insecure_channel(address) as channel:

                async def corpus() -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
                    for row in rows:
                        yield documents_pb2.IngestDocumentsRequest(
                            document=documents_pb2.Document(
                                doc_id=row["_id"], title=row.get("title", ""), text=row["text"]
                            )
                        )

                summary = await documents_pb2_grpc.DocumentServiceStub(channel).IngestDocuments(
                    corpus(), metadata=AUTH, timeout=1800
                )
            print(
                f"ingested {summary.created} SciFact documents ({summary.chunks_written} chunks) "
                f"with local in {time.perf_counter() - started:.1f} s"
            )
            load = Load(address, queries, rows)
            load.enter("before")
            running = asyncio.create_task(load.run(args.retrievers))
            await asyncio.sleep(args.settle_s)
            load.enter("build")
            build_s, build_out = await reindex(new, "build")
            load.enter("switch")
            switch_s, switch_out = await reindex(new, "switch")
            load.enter("after")
            await asyncio.sleep(args.settle_s)
            load.stop.set()
            await running
            print(build_out.rstrip())
            print(switch_out.rstrip())
            print(f"build {build_s:.1f} s, switch {switch_s:.1f} s (command wall time)")
            for name, phase in load.phases.items():
                print(phase.line(name))
                for failure in phase.failures[:5]:
                    print(f"    {failure}")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--new-embedder", default="local-torch")
    parser.add_argument("--retrievers", type=int, default=3, help="Retrieve loops")
    parser.add_argument("--settle-s", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
