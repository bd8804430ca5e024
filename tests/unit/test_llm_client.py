"""The OpenAI-compatible streaming client against the scripted upstream, and the pieces the
pipeline builds on it: the chunk pump, the prompt fitter and the ledger."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from groundwire.clients.chat import ChatChunk, ChatMessage, ChatRequest, TokenUsage
from groundwire.clients.errors import LLMCallError
from groundwire.clients.llm import OpenAIChatClient
from groundwire.clients.tokenization import WhitespaceTokenizer
from groundwire.server.pipeline.generation.catalog import ModelSpec
from groundwire.server.pipeline.generation.ledger import Ledger
from groundwire.server.pipeline.generation.prompt import PromptBuilder, TokenCounter
from groundwire.server.pipeline.generation.pump import ChunkPump
from groundwire.server.pipeline.generation.types import SourceInfo
from groundwire.testing.scripted_llm import Script, ScriptedLLM

REQUEST = ChatRequest("m", (ChatMessage("user", "hi there"),), temperature=0.1, max_tokens=50)


async def drain(client: OpenAIChatClient, request: ChatRequest = REQUEST) -> list[ChatChunk]:
    return [chunk async for chunk in client.stream(request)]


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM() as llm:
        yield llm


async def test_streams_text_finish_and_usage(upstream: ScriptedLLM) -> None:
    upstream.set_default(Script(tokens=["a", "b", "c"], prompt_tokens=9, cached_tokens=4))
    client = OpenAIChatClient(upstream.base_url, api_key="secret")
    chunks = await drain(client)
    await client.close()
    assert "".join(c.text for c in chunks) == "abc"
    assert sum(c.pieces for c in chunks) == 3
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.cached_tokens) == (9, 4)
    assert any(c.finish_reason == "stop" for c in chunks)
    assert upstream.requests[0].headers["authorization"] == "Bearer secret"


@pytest.mark.parametrize(
    ("script", "kind", "status", "retry_after"),
    [
        (Script(status=429, retry_after_s=2.5), "rate_limited", 429, 2.5),
        (Script(status=500), "server_error", 500, None),
        (Script(status=401), "client_error", 401, None),
        (Script(tokens=["a", "b", "c"], cut_after_tokens=2), "stream_cut", None, None),
    ],
)
async def test_failures_become_typed_call_errors(
    upstream: ScriptedLLM, script: Script, kind: str, status: int | None, retry_after: float | None
) -> None:
    upstream.set_default(script)
    client = OpenAIChatClient(upstream.base_url)
    with pytest.raises(LLMCallError) as caught:
        await drain(client)
    await client.close()
    assert (caught.value.kind, caught.value.status) == (kind, status)
    assert caught.value.retry_after_s == retry_after


@pytest.mark.parametrize(
    ("header", "expected"), [("inf", 45.0), ("1e9", 45.0), ("garbage", None), ("-1", 0.0)]
)
async def test_a_429_retry_after_is_read_by_the_shared_capped_reader(
    upstream: ScriptedLLM, header: str, expected: float | None
) -> None:
    upstream.set_default(Script(status=429, retry_after_header=header))
    client = OpenAIChatClient(upstream.base_url, retry_after_cap_s=45.0)
    with pytest.raises(LLMCallError) as caught:
        await drain(client)
    await client.close()
    assert caught.value.kind == "rate_limited" and caught.value.retry_after_s == expected
    # Our words; the upstream's ("scripted error 429") went to the log.
    assert str(caught.value) == "the upstream answered HTTP 429"


async def test_a_stall_is_an_idle_timeout(upstream: ScriptedLLM) -> None:
    upstream.set_default(Script(tokens=["a", "b"], stall_after_tokens=1))
    client = OpenAIChatClient(upstream.base_url, idle_timeout_s=0.2)
    with pytest.raises(LLMCallError) as caught:
        await drain(client)
    await client.close()
    assert caught.value.kind == "timeout"


async def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = OpenAIChatClient(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(LLMCallError) as caught:
        await drain(client)
    await client.close()
    assert caught.value.kind == "connection"


async def test_leaving_a_stream_early_closes_its_connection(upstream: ScriptedLLM) -> None:
    upstream.set_default(Script(tokens=[f" w{i}" for i in range(500)], inter_token_s=0.01))
    client = OpenAIChatClient(upstream.base_url)
    stream = client.stream(REQUEST)
    assert (await anext(stream)).text == " w0"
    await stream.aclose()  # what the pump does on a cancel or a time limit
    await upstream.wait_for_disconnect(0)  # the upstream saw it and stops generating
    record = upstream.requests[0]
    assert not record.completed and record.tokens_sent < 500
    # The pool is still usable: the next call gets a connection of its own.
    upstream.set_default(Script(tokens=["x", "y"]))
    assert "".join(c.text for c in await drain(client)) == "xy"
    await client.close()


async def test_calls_in_a_row_and_at_once_all_complete(upstream: ScriptedLLM) -> None:
    upstream.set_default(Script(tokens=["a", "b"], inter_token_s=0.001))
    client = OpenAIChatClient(upstream.base_url, max_connections=2)
    for _ in range(3):  # a whole answer leaves its connection reusable
        assert "".join(c.text for c in await drain(client)) == "ab"
    # More calls than connections: the rest wait for one to come free.
    answers = await asyncio.gather(*(drain(client) for _ in range(6)))
    assert ["".join(c.text for c in chunks) for chunks in answers] == ["ab"] * 6
    await client.close()


async def test_the_pump_reads_nothing_ahead_and_the_rest_of_a_finished_answer_unpaced() -> None:
    reads = 0

    async def source() -> AsyncIterator[ChatChunk]:
        nonlocal reads
        for chunk in (
            ChatChunk("ab", 2, finish_reason="stop"),
            ChatChunk(usage=TokenUsage(prompt_tokens=5, completion_tokens=2)),
        ):
            reads += 1
            yield chunk

    pump = ChunkPump(source(), min_interval_s=3600)  # a pace no test would wait out
    first = await pump.take()
    assert first is not None and (first.text, first.finish_reason) == ("ab", "stop")
    await asyncio.sleep(0.01)
    assert reads == 1  # the upstream is read when the caller asks, not before
    # The answer is over: its usage and its end are read at once, not a pace later.
    usage = await asyncio.wait_for(pump.take(), 10)
    assert usage is not None and usage.usage is not None and usage.usage.completion_tokens == 2
    assert await asyncio.wait_for(pump.take(), 10) is None
    await pump.aclose()


async def test_the_pump_paces_reads_after_the_first_and_holds_the_end_one_pace_at_most() -> None:
    # A chunk is what one network read brought (ChatModel's contract).
    step = asyncio.Event()
    finish = asyncio.Event()
    reads: list[float] = []
    loop = asyncio.get_running_loop()

    async def source() -> AsyncIterator[ChatChunk]:
        reads.append(loop.time())
        yield ChatChunk("first", 1)
        await step.wait()
        reads.append(loop.time())
        yield ChatChunk("ab", 2)
        await finish.wait()
        reads.append(loop.time())
        yield ChatChunk("c", 1, finish_reason="stop")

    pace = 0.3
    pump = ChunkPump(source(), min_interval_s=pace)
    first = await pump.take()  # the first chunk is never held
    assert first is not None and first.text == "first"
    step.set()
    finish.set()  # the rest has arrived: it is read and sent a pace apart, the end included
    second = await asyncio.wait_for(pump.take(), 10)
    third = await asyncio.wait_for(pump.take(), 10)
    assert second is not None and second.text == "ab"
    assert third is not None and (third.text, third.finish_reason) == ("c", "stop")
    assert await pump.take() is None
    assert reads[2] - reads[1] >= pace * 0.9  # no read sooner than the next frame may leave
    await pump.aclose()


async def test_the_pump_raises_an_error_after_the_chunks_before_it() -> None:
    async def source() -> AsyncIterator[ChatChunk]:
        yield ChatChunk("x", 1)
        raise LLMCallError("cut", kind="stream_cut")

    pump = ChunkPump(source())
    await asyncio.sleep(0.01)
    chunk = await pump.take()
    assert chunk is not None and chunk.text == "x"
    with pytest.raises(LLMCallError):
        await pump.take()
    await pump.aclose()


async def test_closing_the_pump_closes_the_source_at_once() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[ChatChunk]:
        try:
            yield ChatChunk("x", 1)
            await asyncio.sleep(3600)
            yield ChatChunk("never", 1)
        finally:
            closed.set()

    pump = ChunkPump(source())
    await pump.take()
    await pump.aclose()
    assert closed.is_set()


def source(number: int, words: int) -> SourceInfo:
    return SourceInfo(number, f"c{number}", f"d{number}", "", "", 1.0, "word " * words)


def test_the_prompt_keeps_the_best_sources_that_fit_the_window() -> None:
    builder = PromptBuilder(TokenCounter(WhitespaceTokenizer(), margin=1.0))
    sources = [source(1, 100), source(2, 100), source(3, 100)]
    whole = builder.build("q?", sources, window=100_000, max_output_tokens=100)
    assert whole is not None and len(whole.sources) == 3
    assert whole.messages[1].content.startswith("Sources:\n\n[1]\nword")
    fitted = builder.build("q?", sources, window=500, max_output_tokens=200)
    assert fitted is not None and [s.number for s in fitted.sources] == [1, 2]
    assert builder.build("q?", sources, window=150, max_output_tokens=100) is None
    continued = whole.continued("so far")
    assert continued.messages[-1] == ChatMessage("assistant", "so far")


def test_the_ledger_rounds_once_after_summing_attempts() -> None:
    spec = ModelSpec("m", "m", 1000, 100, 270_000, 1_100_000)
    ledger = Ledger()
    for _ in range(2):
        attempt = ledger.open(spec, lambda: 1)
        attempt.pieces = 1  # 1 * 0.27 + 1 * 1.10 = 1.37 micros each
    assert ledger.cost_micros() == 3  # 2.74 rounded, not 1 + 1
    assert ledger.usage().prompt_tokens == 2 and ledger.usage().cached_tokens is None


def _event(content: str | None = None, **fields: object) -> bytes:
    choice: dict[str, object] = {"index": 0, "delta": {"content": content} if content else {}}
    if "finish_reason" in fields:
        choice["finish_reason"] = fields.pop("finish_reason")
    body = {"model": "m", "choices": [choice], **fields}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def _serve_raw(body: bytes) -> tuple[web.AppRunner, str]:
    """An upstream that sends ``body`` (SSE events) in one write: the reader gets every event
    of it in one network read."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/v1"


async def test_events_read_together_become_one_chunk() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 3}
    body = (
        _event()  # the role announcement: no chunk of its own
        + _event("a")
        + _event("b")
        + _event("c", finish_reason="stop")
        + _event(choices=[], usage=usage)
        + b"data: [DONE]\n\n"
    )
    runner, url = await _serve_raw(body)
    client = OpenAIChatClient(url)
    try:
        chunks = await drain(client)
    finally:
        await client.close()
        await runner.cleanup()
    assert len(chunks) == 1
    chunk = chunks[0]
    assert (chunk.text, chunk.pieces, chunk.finish_reason) == ("abc", 3, "stop")
    assert chunk.usage is not None and chunk.usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b'data: {"error": {"message": "overloaded"}}\n\n', "error event"),
        (b'data: {"choices": [\n\n', "unreadable stream event"),
        (b"data: [1, 2]\n\n", "unreadable stream event"),
    ],
)
async def test_output_before_a_bad_event_of_the_same_read_is_handed_over_first(
    bad: bytes, message: str
) -> None:
    runner, url = await _serve_raw(_event("a") + _event("b") + bad + _event("c"))
    client = OpenAIChatClient(url)
    seen: list[ChatChunk] = []
    try:
        with pytest.raises(LLMCallError, match=message) as failure:
            async for chunk in client.stream(REQUEST):
                seen.append(chunk)
    finally:
        await client.close()
        await runner.cleanup()
    assert failure.value.kind == "upstream_error"
    assert [c.text for c in seen] == ["ab"]


async def test_the_proxy_and_netrc_of_the_environment_are_used(
    upstream: ScriptedLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The endpoint's name does not resolve: only the proxy the environment names reaches it.
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy = upstream.base_url.removesuffix("/v1")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine llm.invalid login reader password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    upstream.set_default(Script(tokens=["via", " proxy"]))
    client = OpenAIChatClient("http://llm.invalid/v1")
    try:
        first = await drain(client)
        second = await drain(client)  # read once, used again
    finally:
        await client.close()
    assert "".join(c.text for c in first) == "".join(c.text for c in second) == "via proxy"
    expected = "Basic " + base64.b64encode(b"reader:s3cret").decode()
    assert [r.headers.get("authorization") for r in upstream.requests] == [expected] * 2
