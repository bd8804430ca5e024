"""``GROUNDWIRE_MAX_CONNECTION_AGE_S``: a connection past its age is replaced (the client
reconnects, so behind a headless Service it re-resolves and reaches replicas an autoscaler
added), and a stream open at that moment still runs to its end frame (the grace)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from groundwire.testing.scripted_llm import ScriptedLLM
from groundwire.testing.scripted_llm_protocol import Script
from groundwire.v1 import generation_pb2, retrieval_pb2
from tests.rpc.conftest import KEY_A, Running, ServerFactory, auth
from tests.rpc.generation import collect, passages_request

RETRIEVE = "/groundwire.v1.RetrievalService/Retrieve"
GENERATE = "/groundwire.v1.GenerationService/Generate"


def last_peer(caplog: pytest.LogCaptureFixture, method: str) -> str:
    """The client address the server saw the last ``method`` call come from (access log)."""
    lines = [r for r in caplog.records if getattr(r, "method", None) == method]
    assert lines[-1].code == "OK"  # type: ignore[attr-defined]
    return str(lines[-1].peer)  # type: ignore[attr-defined]


async def retrieve_peer(running: Running, caplog: pytest.LogCaptureFixture) -> str:
    """Make one Retrieve call; the client address the server saw it come from."""
    await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query="fever", mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE),
        metadata=auth(KEY_A),
    )
    return last_peer(caplog, RETRIEVE)


async def test_an_old_connection_is_replaced_and_its_stream_finishes(
    make_server: ServerFactory, llm: ScriptedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="groundwire.access")
    running = await make_server(
        dense=None,
        cache=None,
        llm_base_url=llm.base_url,
        max_connection_age_s=0.3,
        max_connection_age_grace_s=60,
    )
    # The channel's first call, so its connection is as old as the stream: 20 tokens 0.1 s
    # apart outlive the age many times over. GOAWAY comes while the stream is open, and the
    # grace lets it finish on the old connection.
    llm.set_default(Script(tokens=["tick "] * 20, inter_token_s=0.1))
    stream = await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    assert stream.error is None
    assert stream.end.finish_reason == generation_pb2.FINISH_REASON_STOP
    assert stream.text == "tick " * 20
    old = last_peer(caplog, GENERATE)

    # Later calls arrive over a new connection (a new client port), and succeed.
    for _ in range(100):
        if await retrieve_peer(running, caplog) != old:
            break
        await asyncio.sleep(0.1)
    assert await retrieve_peer(running, caplog) != old
