"""The real `groundwire serve` process: SIGTERM drains in-flight calls (an ingest stream,
Generate streams answering from an upstream) and refuses new ones."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from groundwire.testing.scripted_llm import Script, ScriptedLLM
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


def _serve(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    """``groundwire serve`` as a child process on ``port``: sparse only, no Redis, a long
    grace period, its log in ``tmp_path/server.log``; ``env`` adds ``GROUNDWIRE_*`` settings."""
    variables = {
        **os.environ,
        "GROUNDWIRE_LISTEN": f"127.0.0.1:{port}",
        "GROUNDWIRE_EMBEDDER": "none",
        "GROUNDWIRE_DATA_DIR": str(tmp_path),
        "GROUNDWIRE_METRICS_PORT": "0",
        "GROUNDWIRE_GRACE_PERIOD_S": "20",
        "GROUNDWIRE_REDIS_URL": "",
        **env,
    }
    return start_serve(variables, tmp_path / "server.log")


async def test_sigterm_lets_the_call_in_flight_finish(tmp_path: Path) -> None:
    port = free_port()
    process = _serve(tmp_path, port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(f"127.0.0.1:{port}", process, attempts=300)
            sent_first = asyncio.Event()
            terminated = asyncio.Event()

            async def documents() -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
                yield documents_pb2.IngestDocumentsRequest(
                    document=documents_pb2.Document(doc_id="before", text="sent before SIGTERM")
                )
                sent_first.set()
                await terminated.wait()
                yield documents_pb2.IngestDocumentsRequest(
                    document=documents_pb2.Document(doc_id="after", text="sent after SIGTERM")
                )

            stub = documents_pb2_grpc.DocumentServiceStub(channel)
            in_flight = asyncio.ensure_future(stub.IngestDocuments(documents(), timeout=30))
            await sent_first.wait()
            await asyncio.sleep(0.3)  # let the server start handling the stream
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)

            # A new call is refused while the old one drains.
            retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await retrieval.Retrieve(retrieval_pb2.RetrieveRequest(query="x"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            terminated.set()
            summary = await in_flight
            assert summary.created == 2 and summary.failed == 0
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = (tmp_path / "server.log").read_text(encoding="utf-8", errors="replace")
    assert '"message": "draining"' in log and '"message": "stopped"' in log


async def test_sigterm_lets_generate_streams_in_flight_finish(tmp_path: Path) -> None:
    port = free_port()
    async with ScriptedLLM() as llm:
        # Each answer takes ~1.5 s of upstream time: long enough to be cut by a hasty stop.
        llm.set_default(Script(tokens=[f" t{i}" for i in range(30)], inter_token_s=0.05))
        process = _serve(tmp_path, port, GROUNDWIRE_LLM_BASE_URL=llm.base_url)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await wait_serving(f"127.0.0.1:{port}", process, attempts=300)
                stub = generation_pb2_grpc.GenerationServiceStub(channel)
                request = passages_request(bypass_cache=True)
                calls = [stub.Generate(request, timeout=30) for _ in range(4)]
                streams = [asyncio.ensure_future(collect(call)) for call in calls]
                await llm.wait_for_requests(4)
                for _ in range(500):  # until every stream has started answering
                    if all(r.tokens_sent > 0 for r in llm.requests):
                        break
                    await asyncio.sleep(0.02)
                process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)

                # A new call is refused while the four drain.
                late = await collect(stub.Generate(request, timeout=5))
                assert late.error is not None
                assert late.error.code() == grpc.StatusCode.UNAVAILABLE

                for stream in await asyncio.gather(*streams):
                    assert stream.error is None
                    assert stream.frames[-1].HasField("end")
                    assert stream.end.finish_reason == generation_pb2.FINISH_REASON_STOP
                    assert stream.text.count(" t") == 30  # the whole answer, not a cut one
            assert process.wait(timeout=30) == 0
            assert all(r.completed for r in llm.requests)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
