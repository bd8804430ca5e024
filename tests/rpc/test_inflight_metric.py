"""``groundwire_inflight_calls``: the per-pod autoscaling signal of the Kubernetes HPA
(deploy/kubernetes). It must count a Generate stream for as long as it is open, go back down
when the stream ends however it ends, and leave out health checks (the kubelet's probes)."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from groundwire.testing.scripted_llm import ScriptedLLM
from groundwire.testing.scripted_llm_protocol import Script
from groundwire.v1 import retrieval_pb2
from tests.rpc.conftest import KEY_A, ServerFactory, auth
from tests.rpc.generation import passages_request

GENERATION = "groundwire.v1.GenerationService"
RETRIEVAL = "groundwire.v1.RetrievalService"
HEALTH = "grpc.health.v1.Health"


def inflight(service: str) -> float:
    """The gauge's value for ``service`` in the process registry (0 before its first call)."""
    value = REGISTRY.get_sample_value("groundwire_inflight_calls", {"grpc_service": service})
    return value or 0.0


async def settled(service: str, expected: float) -> float:
    """The gauge once it reaches ``expected`` (the stream's handler finishes a little after the
    caller sees its end), or its value after a generous bound."""
    for _ in range(200):
        if inflight(service) == expected:
            break
        await asyncio.sleep(0.025)
    return inflight(service)


async def test_an_open_generate_stream_is_counted_until_it_ends(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(dense=None, cache=None, llm_base_url=llm.base_url)
    # One token, then the upstream says nothing more: the stream stays open until cancelled.
    llm.set_default(Script(tokens=["Fever", " is", " lowered"], stall_after_tokens=1))
    generation_before, retrieval_before = inflight(GENERATION), inflight(RETRIEVAL)

    call = running.generation.Generate(passages_request(), metadata=auth(KEY_A), timeout=30)
    frames = []
    async for frame in call:
        frames.append(frame.WhichOneof("frame"))
        if frame.HasField("delta"):
            break
    assert frames[0] == "start"
    assert inflight(GENERATION) == generation_before + 1

    # Calls that come and go meanwhile do not disturb the open stream's count, and the
    # kubelet's health checks are not load.
    await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query="fever", mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE),
        metadata=auth(KEY_A),
    )
    health = health_pb2_grpc.HealthStub(running.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=GENERATION))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert inflight(GENERATION) == generation_before + 1
    assert inflight(RETRIEVAL) == retrieval_before
    assert inflight(HEALTH) == 0

    call.cancel()
    assert await settled(GENERATION, generation_before) == generation_before


async def test_a_stream_that_finishes_and_a_refused_call_leave_no_count(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(dense=None, cache=None, llm_base_url=llm.base_url)
    llm.set_default(Script(tokens=["Aspirin", " lowers", " fever [1]."]))
    before = inflight(GENERATION)

    kinds = [
        frame.WhichOneof("frame")
        async for frame in running.generation.Generate(passages_request(), metadata=auth(KEY_A))
    ]
    assert kinds[-1] == "end"
    assert await settled(GENERATION, before) == before

    # Refused before it is admitted (no credentials): never counted, so never decremented.
    call = running.generation.Generate(passages_request())
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        assert exc.code() is grpc.StatusCode.UNAUTHENTICATED
    else:
        raise AssertionError("a call without credentials was served")
    assert await settled(GENERATION, before) == before
