"""``groundwire serve`` with two worker processes on one port: both answer, the Edge shard's
owner serves the other worker's retrieval and ingest over its Unix socket, the metrics
endpoint sums both, a generation-only process reaches retrieval over the network, and a
SIGTERM drains everything.

One server (a supervisor and two workers, sparse retrieval so nothing loads a model) is
shared by the tests of this module, in order; the last one stops it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import pytest

from groundwire.server.pipeline.remote_retrieval import INTERNAL_TENANT_HEADER
from groundwire.testing.scripted_llm import Script, ScriptedLLM, run_in_thread
from groundwire.v1 import (
    documents_pb2,
    documents_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from tests.e2e.serving import start_serve, wait_serving
from tests.redis_server import free_port
from tests.rpc.generation import collect, passages_request

API_KEY = "workers-test-key-0123456789"
AUTH = (("authorization", f"Bearer {API_KEY}"),)
TENANT = "acme"
# Connections a test opens so that SO_REUSEPORT spreads calls over both workers (the kernel
# picks a worker per connection): two workers all missing one of 16 has odds 2^-15.
CONNECTIONS = 16
# Without it channels to one address share gRPC's global subchannel pool: one connection.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
ANIMALS = [
    "cat",
    "dog",
    "owl",
    "fox",
    "bat",
    "elk",
    "yak",
    "cow",
    "pig",
    "hen",
    "ant",
    "bee",
    "eel",
    "emu",
    "gnu",
    "ram",
]
DOCS = {f"doc-{i}": f"note {i}: the {animal} sleeps here" for i, animal in enumerate(ANIMALS)}


@dataclass
class Server:
    """The supervisor process, where it listens and logs."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    data_dir: Path
    log_path: Path
    llm: ScriptedLLM

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    def workers_of(self, method: str) -> set[object]:
        """The worker indices whose access log shows ``method``."""
        return {
            line.get("worker")
            for line in self.log_lines()
            if line.get("message") == "rpc" and line.get("method") == method
        }


def _env(tmp: Path, port: int, llm: ScriptedLLM, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDWIRE_")}
    env.update(
        {
            "GROUNDWIRE_LISTEN": f"127.0.0.1:{port}",
            "GROUNDWIRE_EMBEDDER": "none",
            "GROUNDWIRE_DATA_DIR": str(tmp / "data"),
            "GROUNDWIRE_METRICS_PORT": "0",
            "GROUNDWIRE_GRACE_PERIOD_S": "20",
            "GROUNDWIRE_AUTH_MODE": "api_key",
            "GROUNDWIRE_API_KEYS": json.dumps({TENANT: API_KEY}),
            "GROUNDWIRE_LLM_BASE_URL": llm.base_url,
            "GROUNDWIRE_LOG_LEVEL": "INFO",
            **extra,
        }
    )
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("workers")
    port, metrics_port = free_port(), free_port()
    with run_in_thread() as llm:
        env = _env(
            tmp, port, llm, GROUNDWIRE_WORKERS="2", GROUNDWIRE_METRICS_PORT=str(metrics_port)
        )
        log_path = tmp / "server.log"
        process = start_serve(env, log_path)
        running = Server(process, port, metrics_port, tmp / "data", log_path, llm)
        try:
            asyncio.run(wait_serving(running.address, process))
            # Both workers are up when the second has said "serving".
            for _ in range(600):
                if len([x for x in running.log_lines() if x.get("message") == "serving"]) == 2:
                    break
                assert process.poll() is None, log_path.read_text()
                asyncio.run(asyncio.sleep(0.1))
            yield running
        finally:
            _stop(process)


async def _on_many_connections(address: str, call: object) -> list[object]:
    """``call(channel)`` once on each of CONNECTIONS fresh connections."""
    results = []
    for _ in range(CONNECTIONS):
        async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
            results.append(await call(channel))  # type: ignore[operator]
    return results


def _query(text: str) -> retrieval_pb2.RetrieveRequest:
    return retrieval_pb2.RetrieveRequest(query=text, top_k=5, bypass_cache=True)


def _chunks(response: retrieval_pb2.RetrieveResponse) -> list[tuple[str, float]]:
    return [(c.chunk_id, round(c.score, 5)) for c in response.chunks]


def _ingest_each(documents: dict[str, str]) -> object:
    """A call that ingests the next of ``documents`` on the channel it is given."""
    items = iter(documents.items())

    async def ingest_one(channel: grpc.aio.Channel) -> documents_pb2.IngestDocumentsResponse:
        doc_id, text = next(items)

        async def requests() -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
            yield documents_pb2.IngestDocumentsRequest(
                document=documents_pb2.Document(doc_id=doc_id, text=text)
            )

        stub = documents_pb2_grpc.DocumentServiceStub(channel)
        return await stub.IngestDocuments(requests(), metadata=AUTH, timeout=30)

    return ingest_one


@pytest.fixture(scope="module")
def ingested(server: Server) -> list[documents_pb2.IngestDocumentsResponse]:
    """DOCS ingested once, one per fresh connection (so through both workers), whichever
    test asks first; the replies of that first ingest."""
    replies = asyncio.run(_on_many_connections(server.address, _ingest_each(DOCS)))
    return cast(list[documents_pb2.IngestDocumentsResponse], replies)


async def test_ingest_through_either_worker_lands_in_the_one_shard(
    server: Server, ingested: list[documents_pb2.IngestDocumentsResponse]
) -> None:
    assert [(s.created, s.failed) for s in ingested] == [(1, 0)] * len(DOCS)
    # Both workers took ingest calls: the non-owner's went through the owner's socket.
    assert server.workers_of("/groundwire.v1.DocumentService/IngestDocuments") == {0, 1}
    # The same documents again, through either worker: nothing changes (idempotent).
    again = await _on_many_connections(server.address, _ingest_each(DOCS))
    assert [(s.unchanged, s.chunks_written) for s in again] == [(1, 0)] * len(DOCS)  # type: ignore[attr-defined]
    socket = server.data_dir / "edge" / "owner.sock"
    async with grpc.aio.insecure_channel(f"unix:{socket}") as owner:
        found = await retrieval_pb2_grpc.RetrievalServiceStub(owner).Retrieve(
            retrieval_pb2.RetrieveRequest(query="sleeps", top_k=50, bypass_cache=True),
            metadata=((INTERNAL_TENANT_HEADER, TENANT),),
            timeout=10,
        )
    assert {c.doc_id for c in found.chunks} == set(DOCS)


@pytest.mark.usefixtures("ingested")
async def test_retrieval_from_either_worker_matches_the_owner(server: Server) -> None:
    socket = server.data_dir / "edge" / "owner.sock"
    assert socket.is_socket()
    assert (socket.stat().st_mode & 0o777) == 0o600
    async with grpc.aio.insecure_channel(f"unix:{socket}") as owner:
        direct = await retrieval_pb2_grpc.RetrievalServiceStub(owner).Retrieve(
            _query("where does the owl sleep"),
            metadata=((INTERNAL_TENANT_HEADER, TENANT),),
            timeout=10,
        )
    assert direct.chunks and direct.chunks[0].doc_id == "doc-2"

    async def retrieve(channel: grpc.aio.Channel) -> retrieval_pb2.RetrieveResponse:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        return await stub.Retrieve(_query("where does the owl sleep"), metadata=AUTH, timeout=10)

    answers = await _on_many_connections(server.address, retrieve)
    assert server.workers_of("/groundwire.v1.RetrievalService/Retrieve") == {0, 1}
    for answer in answers:
        assert _chunks(answer) == _chunks(direct)  # type: ignore[arg-type]


async def test_a_bad_filter_through_the_hop_names_the_field(server: Server) -> None:
    from grpc_status import rpc_status

    request = _query("owl")
    request.filter.must.add(field="bad field!", string_equals="x")

    async def bad(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Retrieve(request, metadata=AUTH, timeout=10)
        return error.value

    for error in await _on_many_connections(server.address, bad):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        assert status is not None
        assert any(b"filter.must[0].field" in d.value for d in status.details)


async def test_the_metrics_endpoint_sums_both_workers(server: Server) -> None:
    def scrape() -> str:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return str(reply.read().decode())

    def retrieves_ok(text: str) -> float:
        pattern = re.compile(
            r'^groundwire_rpc_requests_total\{code="OK",method='
            r'"/groundwire.v1.RetrievalService/Retrieve"\} (\S+)$',
            re.MULTILINE,
        )
        found = pattern.search(text)
        return float(found.group(1)) if found else 0.0

    before = retrieves_ok(await asyncio.to_thread(scrape))

    async def retrieve(channel: grpc.aio.Channel) -> retrieval_pb2.RetrieveResponse:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        return await stub.Retrieve(_query("fox"), metadata=AUTH, timeout=10)

    await _on_many_connections(server.address, retrieve)
    text = await asyncio.to_thread(scrape)
    # Each call counted once, whichever worker took it (the owner's hop is not a call).
    assert retrieves_ok(text) - before == CONNECTIONS
    assert "groundwire_inflight_calls" in text


@pytest.mark.usefixtures("ingested")
async def test_a_generation_only_process_answers_from_the_retrieval_deployment(
    server: Server, tmp_path: Path
) -> None:
    server.llm.set_default(Script(tokens=[" the", " owl", " sleeps"]))
    port = free_port()
    env = _env(
        tmp_path,
        port,
        server.llm,
        GROUNDWIRE_WORKERS="1",
        GROUNDWIRE_SERVICES="generation",
        GROUNDWIRE_RETRIEVAL_URL=server.address,
        # The start-up GetCapabilities is authenticated over there too.
        GROUNDWIRE_RETRIEVAL_API_KEY=API_KEY,
    )
    log_path = tmp_path / "generation.log"
    process = start_serve(env, log_path)
    try:
        try:
            await wait_serving(f"127.0.0.1:{port}", process)
        except AssertionError:
            raise AssertionError(log_path.read_text()) from None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = generation_pb2.GenerateRequest(query="where does the owl sleep")
            request.retrieval.top_k = 3
            stream = await collect(
                generation_pb2_grpc.GenerationServiceStub(channel).Generate(
                    request, metadata=AUTH, timeout=30
                )
            )
            assert stream.error is None
            sources = next(f for f in stream.frames if f.HasField("start")).start.sources
            assert sources and sources[0].doc_id == "doc-2"
            assert "owl" in stream.text
            # The sources above came through the caller's key, forwarded and checked by the
            # retrieval deployment; retrieval itself is not served here.
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await retrieval_pb2_grpc.RetrievalServiceStub(channel).Retrieve(
                    _query("owl"), metadata=AUTH, timeout=5
                )
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
            bad_key = await collect(
                generation_pb2_grpc.GenerationServiceStub(channel).Generate(
                    request, metadata=(("authorization", "Bearer nope-nope-nope-nope"),), timeout=10
                )
            )
            assert bad_key.error is not None
            assert bad_key.error.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0
        finally:
            _stop(process)


async def test_sigterm_drains_every_worker(server: Server) -> None:
    server.llm.set_default(Script(tokens=[f" t{i}" for i in range(30)], inter_token_s=0.05))
    pids = next(x["pids"] for x in server.log_lines() if x.get("message") == "workers started")
    channels = [
        grpc.aio.insecure_channel(server.address, options=OWN_CONNECTION)
        for _ in range(CONNECTIONS // 2)
    ]
    try:
        calls = [
            generation_pb2_grpc.GenerationServiceStub(channel).Generate(
                passages_request(bypass_cache=True), metadata=AUTH, timeout=60
            )
            for channel in channels
        ]
        streams = [asyncio.ensure_future(collect(call)) for call in calls]
        await server.llm.wait_for_requests(len(calls))
        for _ in range(500):  # until every stream has started answering
            if all(r.tokens_sent > 0 for r in server.llm.requests[-len(calls) :]):
                break
            await asyncio.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        for stream in await asyncio.gather(*streams):
            assert stream.error is None
            assert stream.end.finish_reason == generation_pb2.FINISH_REASON_STOP
            assert stream.text.count(" t") == 30  # the whole answer, not a cut one
    finally:
        for channel in channels:
            await channel.close()
    assert await asyncio.to_thread(server.process.wait, 60) == 0
    assert server.workers_of("/groundwire.v1.GenerationService/Generate") == {0, 1}
    for pid in pids:  # type: ignore[attr-defined]
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    stopped = [x.get("worker") for x in server.log_lines() if x.get("message") == "stopped"]
    assert sorted(stopped, key=str) == [0, 1]


async def test_a_worker_that_dies_stops_the_others_and_the_supervisor_fails(
    tmp_path: Path,
) -> None:
    """A worker killed from outside (the OOM killer, a crash in native code) is not replaced
    behind the orchestrator's back: the supervisor stops the other worker and exits non-zero,
    so Kubernetes restarts the pod and counts the restart."""
    port = free_port()
    with run_in_thread() as llm:
        log_path = tmp_path / "server.log"
        process = start_serve(_env(tmp_path, port, llm, GROUNDWIRE_WORKERS="2"), log_path)
        running = Server(process, port, 0, tmp_path / "data", log_path, llm)
        try:
            await wait_serving(running.address, process)
            for _ in range(600):
                started = [x for x in running.log_lines() if x.get("message") == "workers started"]
                serving = [x for x in running.log_lines() if x.get("message") == "serving"]
                if started and len(serving) == 2:
                    break
                await asyncio.sleep(0.1)
            pids = started[0]["pids"]
            assert isinstance(pids, list) and len(pids) == 2
            os.kill(pids[1], signal.SIGKILL)  # the worker that does not own the shard
            code = await asyncio.to_thread(process.wait, 60)
            assert code != 0, log_path.read_text()
            for pid in pids:
                with pytest.raises(ProcessLookupError):
                    os.kill(pid, 0)
        finally:
            _stop(process)
