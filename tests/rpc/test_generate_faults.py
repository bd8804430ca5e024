"""Generate when the upstream misbehaves: 429, 5xx, hangs, cut streams, every model down,
open breakers; and when the caller cancels or runs out of time."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import pytest

from groundwire.clients.breaker import BreakerState
from groundwire.testing.scripted_llm import Script, ScriptedLLM
from groundwire.v1 import generation_pb2
from tests.redis_server import free_port
from tests.rpc.conftest import KEY_A, ServerFactory, auth
from tests.rpc.errors import details
from tests.rpc.generation import assert_well_formed, collect, read_deltas, seconds, uncached_request

FLASH = "deepseek-ai/DeepSeek-V4-Flash"
QWEN = "Qwen/Qwen3-32B"
GLM = "glm-4-plus"


class FakeClock:
    """Breaker time, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_rate_limit_goes_to_the_economy_model_and_feeds_the_breaker(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    clock = FakeClock()
    running = await make_server(llm_base_url=llm.base_url, clock=clock)
    llm.script(FLASH, Script(status=429, retry_after_s=20))
    started = time.perf_counter()
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert time.perf_counter() - started < 5  # no sleep on the caller's time
    assert stream.error is None
    assert stream.start.route == generation_pb2.ROUTE_ECONOMY
    assert stream.start.model == "glm-4-plus" and stream.start.attempt == 2
    assert [r.model for r in llm.requests] == [FLASH, GLM]
    assert stream.end.attempts == 2 and stream.end.final_model == "glm-4-plus"
    flash = running.breakers["deepseek-v4-flash"]
    assert flash.state is BreakerState.OPEN and flash.open_until == pytest.approx(1020.0)
    assert flash.rate_limited
    # While it is open the standard tier skips it without calling it, and the request goes
    # where the 429 itself would have sent it: the economy model, not the next standard one.
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.start.model == "glm-4-plus" and stream.start.route == generation_pb2.ROUTE_ECONOMY
    assert [r.model for r in llm.requests][-1] == GLM and len(llm.requests) == 3
    assert stream.end.attempts == 1  # the skipped primary was never called
    clock.now += 21  # Retry-After has passed: one probe goes to the primary again
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.start.model == "deepseek-v4-flash"
    assert flash.state is BreakerState.CLOSED


async def test_a_primary_opened_by_failures_still_falls_back_along_the_standard_chain(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url, breaker_failure_threshold=1)
    llm.script(FLASH, Script(status=500))
    await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    flash = running.breakers["deepseek-v4-flash"]
    assert flash.state is BreakerState.OPEN and not flash.rate_limited
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    # Down is not rate limited: the standard chain's next model, as before.
    assert stream.start.model == "qwen3-32b" and stream.start.route == generation_pb2.ROUTE_FALLBACK


async def test_a_rate_limited_economy_model_too_goes_on_down_the_standard_chain(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.script(FLASH, Script(status=429, retry_after_s=20))
    llm.script(GLM, Script(status=429, retry_after_s=20))
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.error is None
    assert [r.model for r in llm.requests] == [FLASH, GLM, QWEN]
    assert stream.start.model == "qwen3-32b" and stream.end.attempts == 3
    # Both are open now; a later request skips both without calling either.
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.start.model == "qwen3-32b" and len(llm.requests) == 4
    assert stream.start.route == generation_pb2.ROUTE_FALLBACK and stream.end.attempts == 1


@pytest.mark.parametrize(
    "header", ["inf", "1e300", "999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"]
)
async def test_a_huge_retry_after_opens_the_breaker_for_the_cap_only(
    make_server: ServerFactory, llm: ScriptedLLM, header: str
) -> None:
    clock = FakeClock()
    running = await make_server(llm_base_url=llm.base_url, clock=clock, retry_after_cap_s=120)
    llm.script(FLASH, Script(status=429, retry_after_header=header))
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.start.route == generation_pb2.ROUTE_ECONOMY
    flash = running.breakers["deepseek-v4-flash"]
    assert flash.state is BreakerState.OPEN and flash.open_until == pytest.approx(1120.0)
    clock.now += 120  # the cap has passed: the primary gets its probe
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.start.model == "deepseek-v4-flash" and flash.state is BreakerState.CLOSED


@pytest.mark.parametrize("header", ["soon", "nan", "", "-5"])
async def test_an_unreadable_or_negative_retry_after_parks_nothing(
    make_server: ServerFactory, llm: ScriptedLLM, header: str
) -> None:
    clock = FakeClock()
    running = await make_server(llm_base_url=llm.base_url, clock=clock)
    llm.script(FLASH, Script(status=429, retry_after_header=header))
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.start.route == generation_pb2.ROUTE_ECONOMY  # the 429 itself still counts
    flash = running.breakers["deepseek-v4-flash"]
    # No hint: one failure counted, not open. Negative: "retry now", open for no time at all.
    assert flash.state is not BreakerState.OPEN
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.start.model == "deepseek-v4-flash"


async def test_a_server_error_falls_back_along_the_chain(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.script(FLASH, Script(status=500))
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.error is None
    assert stream.start.route == generation_pb2.ROUTE_FALLBACK
    assert (stream.start.model, stream.start.attempt) == ("qwen3-32b", 2)
    assert stream.kinds.count("start") == 1  # the failure stayed invisible
    assert running.breakers["deepseek-v4-flash"].consecutive_failures == 1


async def test_a_hang_before_the_first_token_times_out_and_falls_back(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.script(FLASH, Script(hang=True))
    request = uncached_request(first_token_timeout=seconds(0.3))
    stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    assert stream.start.model == "qwen3-32b" and stream.start.route == generation_pb2.ROUTE_FALLBACK
    # The hung request was abandoned: its connection closed.
    await llm.wait_for_disconnect(0)
    assert running.breakers["deepseek-v4-flash"].consecutive_failures == 1


async def test_a_stream_cut_midway_continues_on_the_next_model(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.script(
        FLASH,
        Script(
            tokens=["Aspirin", " lowers", " fever", " [1]", " and"],
            cut_after_tokens=3,
            prompt_tokens=50,
        ),
    )
    llm.script(QWEN, Script(tokens=[" [1]", " it", " thins", " blood."], prompt_tokens=60))
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.error is None
    assert_well_formed(stream)
    assert stream.text == "Aspirin lowers fever [1] it thins blood."
    assert stream.start.model == "deepseek-v4-flash"  # who started the answer
    end = stream.end
    assert end.continued_after_failure and end.final_model == "qwen3-32b"
    assert end.finish_reason == generation_pb2.FINISH_REASON_STOP and end.attempts == 2
    # The continuation got the partial answer as an assistant prefix.
    messages = llm.requests[1].body["messages"]
    assert messages[-1] == {"role": "assistant", "content": "Aspirin lowers fever"}
    assert llm.requests[1].body["max_tokens"] == 1024 - 3
    # Usage sums both attempts: the cut one counted locally, the second as reported.
    assert end.usage.completion_tokens == 3 + 4
    assert end.usage.prompt_tokens > 60
    assert [c.number for c in stream.citations] == [1]


async def test_a_cut_with_no_model_left_ends_with_an_upstream_error_after_the_end_frame(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(tokens=["one", " two", " three"], cut_after_tokens=2))
    request = uncached_request(model="gpt-4o")  # gpt-4o, then the rest of standard
    stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    assert stream.frames[-1].HasField("end")
    end = stream.end
    assert end.finish_reason == generation_pb2.FINISH_REASON_UPSTREAM_ERROR
    assert end.usage.completion_tokens >= 2 and end.cost.micros > 0
    assert "stream cut" in end.detail
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.UNAVAILABLE
    assert details(stream.error)[0].reason == "ERROR_REASON_LLM_UNAVAILABLE"
    assert stream.text.startswith("one two")


async def test_every_model_down_degrades_to_a_cited_extract(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(status=503))
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.error is None
    assert_well_formed(stream)
    assert stream.start.route == generation_pb2.ROUTE_DEGRADED
    assert stream.end.finish_reason == generation_pb2.FINISH_REASON_DEGRADED
    assert stream.end.attempts == 3 and "HTTP 503" in stream.end.detail
    assert "Aspirin lowers fever" in stream.text
    assert stream.citations and stream.citations[0].chunk_id == "aspirin"


async def test_no_upstream_listening_at_all_degrades_too(make_server: ServerFactory) -> None:
    running = await make_server(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.error is None
    assert_well_formed(stream)
    assert stream.start.route == generation_pb2.ROUTE_DEGRADED
    assert stream.end.attempts == 3 and "connection" in stream.end.detail
    assert "127.0.0.1" not in stream.end.detail  # our words, not httpx's


async def test_the_breaker_opens_after_repeated_failures_then_half_opens_and_closes(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    clock = FakeClock()
    running = await make_server(
        llm_base_url=llm.base_url, clock=clock, breaker_failure_threshold=3, breaker_reset_s=30
    )
    flash = running.breakers["deepseek-v4-flash"]
    llm.script(FLASH, *[Script(status=500)] * 3)
    for _ in range(3):
        stream = await collect(
            running.generation.Generate(uncached_request(), metadata=auth(KEY_A))
        )
        assert stream.start.model == "qwen3-32b"
    assert flash.state is BreakerState.OPEN
    calls = len(llm.requests)
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.start.model == "qwen3-32b" and len(llm.requests) == calls + 1  # skipped
    clock.now += 30
    assert flash.state is BreakerState.HALF_OPEN
    llm.script(FLASH, Script(status=500))  # the probe fails: open again
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert llm.requests[-2].model == FLASH and flash.state is BreakerState.OPEN
    clock.now += 30
    stream = await collect(running.generation.Generate(uncached_request(), metadata=auth(KEY_A)))
    assert stream.start.model == "deepseek-v4-flash" and flash.state is BreakerState.CLOSED


async def test_cancel_closes_the_upstream_and_still_accounts_the_tokens(
    make_server: ServerFactory, llm: ScriptedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(tokens=[f" t{i}" for i in range(400)], inter_token_s=0.01))
    call = running.generation.Generate(uncached_request(), metadata=auth(KEY_A))
    with caplog.at_level(logging.INFO, logger="groundwire.answers"):
        assert await read_deltas(call, 5) == 5
        cancelled_at = time.monotonic()
        call.cancel()
        disconnected_at = await llm.wait_for_disconnect(0)
        assert not llm.requests[0].completed
        for _ in range(100):
            if any(r.message == "answer" for r in caplog.records):
                break
            await asyncio.sleep(0.01)
    assert disconnected_at - cancelled_at < 1.0
    sent = llm.requests[0].tokens_sent
    assert sent < 400
    line = next(r for r in caplog.records if r.message == "answer")
    assert line.finish == "cancelled"  # type: ignore[attr-defined]
    # Every token the upstream produced before the disconnect is accounted.
    assert 5 <= line.tokens_out <= sent  # type: ignore[attr-defined]
    assert line.cost_micros > 0 and line.model == "deepseek-v4-flash"  # type: ignore[attr-defined]
    assert running.breakers["deepseek-v4-flash"].state is BreakerState.CLOSED


async def test_a_deadline_ends_the_answer_with_an_end_frame_and_closes_the_upstream(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(tokens=[f" t{i}" for i in range(400)], inter_token_s=0.01))
    call = running.generation.Generate(uncached_request(), metadata=auth(KEY_A), timeout=1.0)
    stream = await collect(call)
    assert stream.frames[-1].HasField("end")
    assert stream.end.finish_reason == generation_pb2.FINISH_REASON_TIME_LIMIT
    assert stream.end.usage.completion_tokens > 0
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await llm.wait_for_disconnect(0)


async def test_a_soft_time_limit_ends_the_answer_cleanly(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(tokens=[f" t{i}" for i in range(400)], inter_token_s=0.01))
    request = uncached_request(time_limit=seconds(0.5))
    stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    assert stream.error is None
    assert stream.end.finish_reason == generation_pb2.FINISH_REASON_TIME_LIMIT
    assert 0 < stream.end.usage.completion_tokens < 400
    await llm.wait_for_disconnect(0)


async def test_a_time_limit_before_the_first_token_is_a_deadline_status(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(hang=True))
    request = uncached_request(time_limit=seconds(0.3))
    stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    assert not stream.frames
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert details(stream.error)[0].reason == "ERROR_REASON_DEADLINE_EXCEEDED"
    await llm.wait_for_disconnect(0)
