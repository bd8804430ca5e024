"""``groundwire reindex`` on Qdrant Edge while ``groundwire serve --workers 2`` keeps serving:
the command finds the server that owns the store and has it run build, switch and
catch-up over its owner socket, while a bounded Retrieve and ingest load runs through the
public port; rollback moves the pointer file. Real processes (the server, the command),
Redis, and an OpenAI-compatible embeddings endpoint standing in for the new embedder.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from groundwire.clients.vector_store import edge_pointer as ep
from groundwire.internal.v1 import reindex_pb2, reindex_pb2_grpc
from groundwire.server.owner_socket import ADVERTISEMENT_FILE
from groundwire.v1 import documents_pb2, documents_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from tests.e2e.serving import start_serve, wait_serving
from tests.redis_server import RedisServer, free_port
from tests.rpc.embeddings_server import EmbeddingsServer

API_KEY = "reindex-online-key-0123456789"
AUTH = (("authorization", f"Bearer {API_KEY}"),)
TENANT = "acme"
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
CORPUS = 300  # documents before the reindex
LOAD_CONNECTIONS = 4  # connections of the load (SO_REUSEPORT spreads them over the workers)


def word(i: int) -> str:
    """A token only document ``i`` holds (BM25 finds it first)."""
    return f"marker{i:05d}x"


def text(i: int) -> str:
    return f"note {i}: a paragraph about lichens on granite, kept as {word(i)} in the corpus."


@dataclass
class Config:
    """The environments of the old and the new configuration."""

    tmp: Path
    old: dict[str, str]
    new: dict[str, str]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Config]:
    tmp = tmp_path_factory.mktemp("online")
    if redis_server.process is None:
        redis_server.start()
    redis = redis_server
    with EmbeddingsServer(dimension=8) as endpoint:
        base = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDWIRE_")}
        base.update(
            {
                "GROUNDWIRE_DATA_DIR": str(tmp / "data"),
                "GROUNDWIRE_REDIS_URL": redis.url,
                "GROUNDWIRE_METRICS_PORT": "0",
                "GROUNDWIRE_GRACE_PERIOD_S": "5",
                "GROUNDWIRE_AUTH_MODE": "api_key",
                "GROUNDWIRE_API_KEYS": json.dumps({TENANT: API_KEY}),
                "GROUNDWIRE_LOG_LEVEL": "INFO",
                "GROUNDWIRE_WORKERS": "2",
            }
        )
        new = {
            **base,
            "GROUNDWIRE_EMBEDDER": "openai",
            "GROUNDWIRE_EMBEDDINGS_BASE_URL": endpoint.base_url,
            "GROUNDWIRE_EMBEDDINGS_MODEL": "hash-8",
            "GROUNDWIRE_EMBEDDINGS_DIMENSION": "8",
        }
        yield Config(tmp, {**base, "GROUNDWIRE_EMBEDDER": "none"}, new)


def start_server(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    address = f"127.0.0.1:{free_port()}"
    return start_serve({**env, "GROUNDWIRE_LISTEN": address}, log_path), address


def ready(log_path: Path) -> bool:
    """Both workers serve and the owner advertises its socket."""
    lines = log_path.read_text(errors="replace").count('"message": "serving"')
    return lines >= 2 and (log_path.parent / "data" / "edge" / ADVERTISEMENT_FILE).exists()


async def serving(process: subprocess.Popen[bytes], address: str, log_path: Path) -> None:
    try:
        await wait_serving(address, process)
        for _ in range(600):
            if await asyncio.to_thread(ready, log_path):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the workers never all served")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {log_path.read_text()}") from None  # noqa: ASYNC240


async def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert await asyncio.to_thread(process.wait, 60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def reindex(env: dict[str, str], *step: str) -> tuple[int, str, str]:
    """Run ``groundwire reindex <step>``; (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "groundwire.server.cli",
        "reindex",
        *step,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def ingest_request(i: int) -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
    async def requests() -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
        yield documents_pb2.IngestDocumentsRequest(
            document=documents_pb2.Document(doc_id=f"doc-{i}", text=text(i))
        )

    return requests()


def sparse_query(i: int) -> retrieval_pb2.RetrieveRequest:
    return retrieval_pb2.RetrieveRequest(
        query=word(i), top_k=3, mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE, bypass_cache=True
    )


@dataclass
class Load:
    """A bounded Retrieve and ingest load through the public port; every call counted."""

    address: str
    next_doc: int
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)  # docs whose ingest succeeded
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def retrieving(self, channel: grpc.aio.Channel, offset: int) -> None:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        i = offset
        while not self.stop.is_set():
            i = (i + 7) % CORPUS
            try:
                answer = await stub.Retrieve(sparse_query(i), metadata=AUTH, timeout=30)
                if not answer.chunks or answer.chunks[0].doc_id != f"doc-{i}":
                    self.failures.append(f"retrieve {i}: {[c.doc_id for c in answer.chunks]}")
            except grpc.aio.AioRpcError as exc:
                self.failures.append(f"retrieve: {exc.code()} {exc.details()}")
            self.calls += 1

    async def ingesting(self, channel: grpc.aio.Channel) -> None:
        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        while not self.stop.is_set():
            i, self.next_doc = self.next_doc, self.next_doc + 1
            try:
                await stub.IngestDocuments(ingest_request(i), metadata=AUTH, timeout=30)
                self.acknowledged.append(i)
            except grpc.aio.AioRpcError as exc:
                self.failures.append(f"ingest: {exc.code()} {exc.details()}")
            self.calls += 1
            await asyncio.sleep(0.02)

    async def run(self) -> None:
        channels = [
            grpc.aio.insecure_channel(self.address, options=OWN_CONNECTION)
            for _ in range(LOAD_CONNECTIONS)
        ]
        try:
            tasks = [self.retrieving(c, n * 50) for n, c in enumerate(channels[:-1])]
            await asyncio.gather(*tasks, self.ingesting(channels[-1]))
        finally:
            for channel in channels:
                await channel.close()


async def present(address: str, docs: list[int]) -> list[int]:
    """Those of ``docs`` that a sparse Retrieve does not find first."""
    missing = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        for i in docs:
            answer = await stub.Retrieve(sparse_query(i), metadata=AUTH, timeout=30)
            if not answer.chunks or answer.chunks[0].doc_id != f"doc-{i}":
                missing.append(i)
    return missing


async def test_build_switch_catch_up_and_rollback_while_the_server_serves(config: Config) -> None:
    log_path = config.tmp / "old.log"
    process, address = start_server(config.old, log_path)
    try:
        await serving(process, address, log_path)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = documents_pb2_grpc.DocumentServiceStub(channel)

            async def corpus() -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
                for i in range(CORPUS):
                    yield documents_pb2.IngestDocumentsRequest(
                        document=documents_pb2.Document(doc_id=f"doc-{i}", text=text(i))
                    )

            summary = await stub.IngestDocuments(corpus(), metadata=AUTH, timeout=120)
            assert summary.created == CORPUS

        # build and switch under load: no call fails, every acknowledged write survives.
        load = Load(address, next_doc=CORPUS)
        running = asyncio.create_task(load.run())
        await asyncio.sleep(0.5)
        before_build = load.calls
        code, out, err = await reindex(config.new, "build")
        assert code == 0, out + err
        assert "a running server (pid" in out and "runs the build step and keeps serving" in out
        assert "chunks embedded" in out and "built gen-2; live is still ." in out
        during_build = load.calls - before_build
        written_before_switch = list(load.acknowledged)
        code, out, err = await reindex(config.new, "switch")
        assert code == 0, out + err
        assert "switched: gen-2 is live" in out and "keeps serving . until it restarts" in out
        switched = len(load.acknowledged)  # later writes land on "." only
        await asyncio.sleep(0.5)
        load.stop.set()
        await running
        assert load.failures == []
        assert during_build > 0 and load.calls > during_build
        assert ep.read_pointer(config.tmp / "data" / "edge") == ep.Pointer("gen-2", ".")
        written_after_switch = load.acknowledged[switched:]
        assert written_after_switch

        # The public port never serves the internal service.
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await reindex_pb2_grpc.ReindexServiceStub(channel).GetOwner(
                    reindex_pb2.GetOwnerRequest(), timeout=10
                )
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        await stop_server(process)

        # The restart with the new configuration serves gen-2: the writes made during the
        # build are there (switch caught up); those after the switch come with catch-up.
        log_path = config.tmp / "new.log"
        process, address = start_server(config.new, log_path)
        await serving(process, address, log_path)
        assert await present(address, written_before_switch) == []
        assert await present(address, written_after_switch) == written_after_switch
        code, out, err = await reindex(config.new, "catch-up")
        assert code == 0, out + err
        assert "serves gen-2" in out
        assert await present(address, [*range(CORPUS), *load.acknowledged]) == []

        code, out, err = await reindex(config.new, "status")
        assert code == 0, out + err
        assert "running server (pid" in out and "serves gen-2 until it restarts" in out
        code, out, err = await reindex(config.old, "rollback")
        assert code == 0, out + err
        assert "rolled back: . is live again" in out
        assert ep.read_pointer(config.tmp / "data" / "edge") == ep.Pointer(".", "gen-2")
    finally:
        if process.poll() is None:
            await stop_server(process)
