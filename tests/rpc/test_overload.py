"""Overload, through the generated stubs against a real server: past the in-flight bound a
call is refused at once with RESOURCE_EXHAUSTED, ErrorInfo OVERLOADED and RetryInfo, while
the calls already admitted finish as if nothing happened; streams and unary calls are bounded
apart and health checks never are. A timeout that fires while the server's own loop lags
(the test blocks the loop on purpose) is not charged to the model: no breaker failure, no
fallback route, the call ends as overload."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from groundwire.clients.breaker import BreakerState
from groundwire.sdk.errors import ResourceExhausted, from_rpc_error
from groundwire.testing.scripted_llm import Script, ScriptedLLM
from groundwire.v1 import documents_pb2, generation_pb2, retrieval_pb2
from tests.rpc.conftest import KEY_A, Running, ServerFactory, auth
from tests.rpc.errors import details
from tests.rpc.generation import assert_well_formed, collect, seconds, uncached_request

FLASH = "deepseek-ai/DeepSeek-V4-Flash"
GENERATION = "groundwire.v1.GenerationService"
RETRIEVAL = "groundwire.v1.RetrievalService"


@pytest.fixture
def embedder() -> None:
    """No model: nothing here needs the meaning of a text (sparse retrieval only)."""
    return None


def refusals(service: str) -> float:
    value = REGISTRY.get_sample_value(
        "groundwire_overload_refusals_total", {"grpc_service": service}
    )
    return value or 0.0


def inflight(service: str) -> float:
    value = REGISTRY.get_sample_value("groundwire_inflight_calls", {"grpc_service": service})
    return value or 0.0


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay of a failed call, in seconds (None: no RetryInfo)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToMilliseconds() / 1000
    return None


def assert_overloaded(
    error: grpc.aio.AioRpcError | None, correlation_id: str | None = None
) -> None:
    """RESOURCE_EXHAUSTED with ErrorInfo OVERLOADED, the correlation id, a RetryInfo of the
    configured 0.2 s and gRPC's pushback trailer saying the same."""
    assert error is not None
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = details(error)
    assert info.reason == "ERROR_REASON_OVERLOADED"
    assert info.metadata["correlation_id"]
    if correlation_id is not None:
        assert info.metadata["correlation_id"] == correlation_id
    assert retry_delay(error) == pytest.approx(0.2)
    trailers = dict(error.trailing_metadata() or ())
    assert trailers["grpc-retry-pushback-ms"] == "200"
    assert trailers["x-correlation-id"] == info.metadata["correlation_id"]


async def until(condition: Any, what: str) -> None:
    """Wait (bounded) for ``condition()``: the server's side of a call starts a little after
    the client issues it."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def settled(running: Running) -> None:
    await until(
        lambda: running.server.bound.streams == 0 and running.server.bound.unary == 0,
        "every admitted call ended",
    )


async def test_streams_past_the_bound_are_refused_and_the_admitted_finish_untouched(
    make_server: ServerFactory, llm: ScriptedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    running = await make_server(
        dense=None, cache=None, llm_base_url=llm.base_url, max_inflight_streams=2
    )
    # Slow to its first token, so both admitted streams are still open while the rest come.
    llm.set_default(Script(tokens=["Aspirin", " lowers", " fever [1]."], ttft_s=1.5))
    refused_before, inflight_before = refusals(GENERATION), inflight(GENERATION)
    admitted = [
        asyncio.create_task(
            collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
        )
        for _ in range(2)
    ]
    await llm.wait_for_requests(2)
    assert running.server.bound.streams == 2

    caplog.set_level(logging.INFO, logger="groundwire.access")
    for i in range(3):
        correlation_id = f"overload-{i}"
        call = running.generation.Generate(
            uncached_request(), metadata=auth(KEY_A, **{"x-correlation-id": correlation_id})
        )
        stream = await collect(call)
        assert not stream.frames
        assert_overloaded(stream.error, correlation_id)
    # The Python SDK reads it as a retryable ResourceExhausted with the server's delay.
    assert stream.error is not None
    sdk_error = from_rpc_error(stream.error)
    assert isinstance(sdk_error, ResourceExhausted) and sdk_error.retryable
    assert sdk_error.reason == "ERROR_REASON_OVERLOADED" and sdk_error.retry_after == 0.2

    # Unary calls have a bound of their own, and health is never counted.
    reply = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query="fever", mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE),
        metadata=auth(KEY_A),
    )
    assert reply is not None
    health = health_pb2_grpc.HealthStub(running.channel)
    check = await health.Check(health_pb2.HealthCheckRequest(service=GENERATION))
    assert check.status == health_pb2.HealthCheckResponse.SERVING

    for stream in await asyncio.gather(*admitted):
        assert stream.error is None
        assert_well_formed(stream)
        assert stream.start.route == generation_pb2.ROUTE_PRIMARY
        assert stream.end.finish_reason == generation_pb2.FINISH_REASON_STOP
        assert stream.text == "Aspirin lowers fever [1]."
    # The refused calls never reached the upstream, no model was blamed.
    assert len(llm.requests) == 2
    for breaker in running.breakers.values():
        assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 0
    assert refusals(GENERATION) == refused_before + 3
    lines = [r for r in caplog.records if getattr(r, "reason", None) == "ERROR_REASON_OVERLOADED"]
    assert len(lines) == 3
    assert {getattr(r, "code", None) for r in lines} == {"RESOURCE_EXHAUSTED"}
    assert {getattr(r, "method", None) for r in lines} == {f"/{GENERATION}/Generate"}

    await settled(running)
    await until(lambda: inflight(GENERATION) == inflight_before, "the in-flight gauge is back")
    # With room again, the next stream is served.
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.error is None and stream.end.finish_reason == generation_pb2.FINISH_REASON_STOP


async def test_unary_calls_past_their_bound_are_refused_streams_and_health_are_not(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(
        dense=None,
        cache=None,
        llm_base_url=llm.base_url,
        max_inflight_unary=1,
        max_inflight_streams=1,
    )
    llm.set_default(Script(tokens=["Aspirin", " lowers", " fever [1]."]))
    # An ingest whose client has not finished sending holds the one unary slot.
    more = asyncio.Event()

    async def documents() -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
        yield documents_pb2.IngestDocumentsRequest(
            document=documents_pb2.Document(doc_id="d1", text="Aspirin lowers fever.")
        )
        await more.wait()

    ingest = running.documents.IngestDocuments(documents(), metadata=auth(KEY_A))
    await until(lambda: running.server.bound.unary == 1, "the ingest is admitted")
    refused_before = refusals(RETRIEVAL)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.retrieval.Retrieve(
            retrieval_pb2.RetrieveRequest(query="fever", mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE),
            metadata=auth(KEY_A),
        )
    assert_overloaded(refused.value)
    assert refusals(RETRIEVAL) == refused_before + 1
    # A stream still comes in, and health answers whatever the load.
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.error is None and stream.end.finish_reason == generation_pb2.FINISH_REASON_STOP
    health = health_pb2_grpc.HealthStub(running.channel)
    for _ in range(3):
        check = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert check.status == health_pb2.HealthCheckResponse.SERVING

    more.set()
    reply = await ingest
    assert reply is not None
    await settled(running)
    found = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query="fever", mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE),
        metadata=auth(KEY_A),
    )
    assert [c.doc_id for c in found.chunks] == ["d1"]


async def test_while_the_loop_lags_calls_are_refused_under_any_count_and_health_answers(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(dense=None, cache=None, llm_base_url=llm.base_url, shed_lag_s=0.1)
    request = retrieval_pb2.RetrieveRequest(query="fever", mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE)
    await running.retrieval.Retrieve(request, metadata=auth(KEY_A))  # admitted while on time
    await asyncio.sleep(0.2)  # the lag monitor has woken on time a few times since
    refused_before = refusals(RETRIEVAL)

    time.sleep(0.4)  # noqa: ASYNC251 - blocks the event loop the server runs on, on purpose
    health = health_pb2_grpc.HealthStub(running.channel)
    check = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert check.status == health_pb2.HealthCheckResponse.SERVING  # never shed
    time.sleep(0.4)  # noqa: ASYNC251 - behind again, with no call in flight at all
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.retrieval.Retrieve(request, metadata=auth(KEY_A))
    assert_overloaded(refused.value)
    assert "behind" in (refused.value.details() or "")
    assert refusals(RETRIEVAL) == refused_before + 1
    assert running.server.bound.unary == 0

    await asyncio.sleep(0.3)  # caught up: calls come in again
    await running.retrieval.Retrieve(request, metadata=auth(KEY_A))


async def test_a_first_token_timeout_while_our_loop_lags_is_not_the_models_failure(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    # Blame is taken only for a loop behind for 90 % of the timeout: the stall below is all of
    # it, while the control (no stall) stays the model's even on a badly oversubscribed machine.
    running = await make_server(
        dense=None, cache=None, llm_base_url=llm.base_url, lag_blame_share=0.9
    )
    flash = running.breakers["deepseek-v4-flash"]
    # A healthy but slow primary: 3 s to its first token, against a 1 s first-token timeout.
    llm.set_default(Script(tokens=["Aspirin", " lowers", " fever [1]."]))
    llm.script(FLASH, Script(tokens=["Aspirin", " lowers", " fever [1]."], ttft_s=3.0))
    request = uncached_request(first_token_timeout=seconds(1.0))

    # Our loop stalls for 1.5 s while the call waits (as a saturated loop does): the timeout
    # fires behind the stall.
    call = asyncio.create_task(collect(running.generation.Generate(request, metadata=auth(KEY_A))))
    await llm.wait_for_requests(1)
    time.sleep(1.5)  # noqa: ASYNC251 - blocks the event loop the server runs on, on purpose
    stream = await call
    assert not stream.frames  # no start: not served by a fallback, not degraded
    assert_overloaded(stream.error)
    assert [r.model for r in llm.requests] == [FLASH]  # no other model was tried
    assert flash.state is BreakerState.CLOSED and flash.consecutive_failures == 0

    # The same timeout without a stall is the model's: a failure, and the fallback serves.
    llm.script(FLASH, Script(tokens=["Aspirin"], ttft_s=3.0))
    stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    assert stream.error is None
    assert stream.start.route == generation_pb2.ROUTE_FALLBACK
    assert flash.consecutive_failures == 1


async def test_an_idle_timeout_mid_stream_while_our_loop_lags_ends_as_overload(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(
        dense=None,
        cache=None,
        llm_base_url=llm.base_url,
        llm_idle_timeout_s=1.0,
        lag_blame_share=0.5,  # the default (the test fixture's is 1.0)
    )
    flash = running.breakers["deepseek-v4-flash"]
    tokens = ["Aspirin", " lowers", " fever", " [1]", "."]
    llm.script(FLASH, Script(tokens=tokens, stall_after_tokens=1))
    call = running.generation.Generate(uncached_request(), metadata=auth(KEY_A))
    frames = []
    async for frame in call:
        frames.append(frame)
        if frame.HasField("delta"):
            break
    time.sleep(1.5)  # noqa: ASYNC251 - the loop stalls past the idle timeout, on purpose
    stream = await collect(call)
    stream.frames[:0] = frames
    # The end frame still comes, then the overload status; no other model continued it.
    assert stream.end.finish_reason == generation_pb2.FINISH_REASON_UPSTREAM_ERROR
    assert not stream.end.continued_after_failure
    assert_overloaded(stream.error)
    assert [r.model for r in llm.requests] == [FLASH]
    assert flash.state is BreakerState.CLOSED and flash.consecutive_failures == 0
