"""The scripted LLM speaks OpenAI chat completions well enough for the real clients."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from groundwire.testing.scripted_llm import (
    DEFAULT_ANSWER_TOKENS,
    Script,
    ScriptedLLM,
    run_in_thread,
)

ROOT = Path(__file__).resolve().parents[2]
MESSAGES: list[Any] = [
    {"role": "system", "content": "Answer from the sources."},
    {"role": "user", "content": "what do the sources say"},
]


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM() as server:
        yield server


@pytest.fixture
async def client(llm: ScriptedLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=llm.base_url, api_key="x", max_retries=0) as c:
        yield c


async def _stream(client: openai.AsyncOpenAI, model: str = "m", **kwargs: Any) -> list[Any]:
    stream = await client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        **kwargs,
    )
    return [chunk async for chunk in stream]


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_streams_tokens_finish_reason_and_usage(
    llm: ScriptedLLM, client: openai.AsyncOpenAI
) -> None:
    llm.script(None, Script(tokens=["a", " b", " c"], cached_tokens=4, response_model="served"))
    chunks = await _stream(client)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:4]] == ["a", " b", " c"]
    assert chunks[4].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    # The prompt counts whitespace-separated words of every message: 4 + 5.
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (9, 3, 12)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert {c.model for c in chunks} == {"served"}
    [record] = llm.requests
    assert (record.model, record.tokens_sent, record.completed) == ("m", 3, True)
    assert record.disconnected_at is None
    assert record.first_token_at is not None and record.first_token_at >= record.received_at


async def test_default_answer_and_no_usage_chunk_unless_asked(
    llm: ScriptedLLM, client: openai.AsyncOpenAI
) -> None:
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    chunks = [c async for c in stream]
    assert _text(chunks) == "".join(DEFAULT_ANSWER_TOKENS) == "The sources say so [1]."
    assert all(c.usage is None and c.choices for c in chunks)
    llm.script(None, Script(usage=False))
    assert all(c.choices for c in await _stream(client))


async def test_non_streaming_completion(llm: ScriptedLLM, client: openai.AsyncOpenAI) -> None:
    llm.script(None, Script(tokens=["x", "y"], ttft_s=0.05, prompt_tokens=100, cached_tokens=64))
    started = time.monotonic()
    completion = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert time.monotonic() - started >= 0.05
    assert completion.choices[0].message.content == "xy"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (100, 2)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 64
    assert llm.requests[0].completed


async def test_rate_limit_with_retry_after(llm: ScriptedLLM, client: openai.AsyncOpenAI) -> None:
    llm.script(None, Script(status=429, retry_after_s=1.5))
    with pytest.raises(openai.RateLimitError) as caught:
        await _stream(client)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.response.headers["retry-after-ms"] == "1500"
    assert caught.value.response.headers["content-type"] == "application/json"
    assert caught.value.body is not None
    assert caught.value.body["type"] == "rate_limit_error"  # type: ignore[index]
    # The connection stays usable: the next request answers normally.
    assert _text(await _stream(client)) == "".join(DEFAULT_ANSWER_TOKENS)


async def test_server_error(llm: ScriptedLLM, client: openai.AsyncOpenAI) -> None:
    llm.script(None, Script(status=500))
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.body["type"] == "server_error"  # type: ignore[index]


async def test_cut_connection_fails_the_client_after_n_tokens(
    llm: ScriptedLLM, client: openai.AsyncOpenAI
) -> None:
    llm.script(None, Script(tokens=["a", "b", "c", "d"], cut_after_tokens=2))
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "ab"
    [record] = llm.requests
    assert (record.tokens_sent, record.completed, record.disconnected_at) == (2, False, None)


async def test_hang_times_out_the_client_and_the_disconnect_is_seen(
    llm: ScriptedLLM, client: openai.AsyncOpenAI
) -> None:
    llm.script(None, Script(hang=True))
    with pytest.raises(openai.APITimeoutError):
        await _stream(client.with_options(timeout=0.1))
    disconnected_at = await llm.wait_for_disconnect(0, timeout_s=1.0)
    record = llm.requests[0]
    assert disconnected_at == record.disconnected_at
    assert 0.05 < disconnected_at - record.received_at < 1.0
    assert (record.tokens_sent, record.completed) == (0, False)


async def test_non_streaming_hang_and_ttft_wait_notice_the_disconnect(
    llm: ScriptedLLM, client: openai.AsyncOpenAI
) -> None:
    llm.script(None, Script(hang=True), Script(ttft_s=30))
    for index in range(2):
        with pytest.raises(openai.APITimeoutError):
            await client.with_options(timeout=0.05).chat.completions.create(
                model="m", messages=MESSAGES
            )
        await llm.wait_for_disconnect(index, timeout_s=1.0)


async def test_client_closing_mid_stream_is_recorded_promptly(llm: ScriptedLLM) -> None:
    llm.script(None, Script(tokens=[f" t{i}" for i in range(100)], inter_token_s=0.01))
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    async with (
        httpx.AsyncClient() as http,
        http.stream("POST", f"{llm.base_url}/chat/completions", json=body) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["transfer-encoding"] == "chunked"
        events = 0
        async for line in response.aiter_lines():
            events += line.startswith("data: ")
            if events == 4:  # the role chunk and three tokens
                break
        closed_at = time.monotonic()
    disconnected_at = await llm.wait_for_disconnect(0)
    assert closed_at <= disconnected_at < closed_at + 0.1
    record = llm.requests[0]
    assert 3 <= record.tokens_sent < 10 and not record.completed
    # Nothing is written after the disconnect.
    sent = record.tokens_sent
    await asyncio.sleep(0.05)
    assert record.tokens_sent == sent


async def test_stall_sends_n_tokens_then_waits_for_the_client(
    llm: ScriptedLLM, client: openai.AsyncOpenAI
) -> None:
    llm.script(None, Script(tokens=["a", "b", "c"], stall_after_tokens=1))
    stream = await client.with_options(timeout=0.1).chat.completions.create(
        model="m", messages=MESSAGES, stream=True
    )
    seen: list[str] = []
    with pytest.raises(openai.APITimeoutError):
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert seen == ["", "a"]
    await llm.wait_for_disconnect(0, timeout_s=1.0)
    assert llm.requests[0].tokens_sent == 1


async def test_per_model_queues_and_defaults(llm: ScriptedLLM, client: openai.AsyncOpenAI) -> None:
    llm.script("a", Script(tokens=["a1"]), Script(tokens=["a2"]))
    llm.script(None, Script(tokens=["any"]))
    llm.set_default(Script(tokens=["b-default"]), model="b")
    llm.set_default(Script(tokens=["global-default"]))
    answers = [
        _text(await _stream(client, model)) for model in ["b", "a", "a", "a", "c", "b", "a", "c"]
    ]
    assert answers == [
        "any",  # the None queue serves any model without its own queued script
        "a1",
        "a2",
        "global-default",
        "global-default",
        "b-default",
        "global-default",
        "global-default",
    ]
    assert [r.index for r in llm.requests] == list(range(8))
    llm.reset()
    assert llm.requests == []
    assert _text(await _stream(client, "b")) == "".join(DEFAULT_ANSWER_TOKENS)


@pytest.mark.parametrize("limit_field", ["max_tokens", "max_completion_tokens"])
async def test_token_limit_truncates_with_finish_reason_length(
    llm: ScriptedLLM, client: openai.AsyncOpenAI, limit_field: str
) -> None:
    llm.script(None, Script(tokens=["a", "b", "c", "d"]), Script(tokens=["a", "b", "c", "d"]))
    limit: dict[str, Any] = {limit_field: 2}
    chunks = await _stream(client, **limit)
    assert _text(chunks) == "ab"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    limit[limit_field] = 3
    completion = await client.chat.completions.create(model="m", messages=MESSAGES, **limit)
    assert completion.choices[0].message.content == "abc"
    assert completion.choices[0].finish_reason == "length"


async def test_custom_headers_are_recorded(llm: ScriptedLLM, client: openai.AsyncOpenAI) -> None:
    await _stream(client, extra_headers={"X-Correlation-Id": "corr-42"})
    headers = llm.requests[0].headers
    assert headers["x-correlation-id"] == "corr-42"
    assert headers["authorization"] == "Bearer x"
    assert llm.requests[0].body["messages"] == MESSAGES


async def test_http_control_endpoints(llm: ScriptedLLM, client: openai.AsyncOpenAI) -> None:
    root = llm.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root) as http:
        scripts = [{"tokens": ["one"]}, {"status": 429, "retry_after_s": 1}]
        response = await http.post("/_scripted/script", json={"model": "m", "scripts": scripts})
        assert response.json() == {"ok": True}
        default = {"model": None, "scripts": [{"tokens": ["dflt"]}], "default": True}
        assert (await http.post("/_scripted/script", json=default)).status_code == 200
        bad = await http.post("/_scripted/script", json={"model": None, "scripts": [{"x": 1}]})
        assert bad.status_code == 400 and "x" in bad.json()["error"]["message"]

        assert _text(await _stream(client, extra_headers={"x-correlation-id": "c1"})) == "one"
        with pytest.raises(openai.RateLimitError):
            await _stream(client)
        assert _text(await _stream(client)) == "dflt"

        recorded = (await http.get("/_scripted/requests")).json()
        assert [r["index"] for r in recorded] == [0, 1, 2]
        assert recorded[0]["headers"]["x-correlation-id"] == "c1"
        assert recorded[0]["model"] == "m"
        assert (recorded[0]["tokens_sent"], recorded[0]["completed"]) == (1, True)
        assert recorded[0]["disconnected"] is False

        assert (await http.post("/_scripted/reset")).json() == {"ok": True}
        assert (await http.get("/_scripted/requests")).json() == []
        assert _text(await _stream(client)) == "".join(DEFAULT_ANSWER_TOKENS)

        missing = await http.get("/v1/models")
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found_error"


async def test_raw_keep_alive_and_one_http_chunk_per_event(llm: ScriptedLLM) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", llm.port)

    def request(body: dict[str, Any]) -> bytes:
        payload = json.dumps(body).encode()
        head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(payload)}"
        return head.encode() + b"\r\n\r\n" + payload

    llm.script(None, Script(tokens=["a", "b"]), Script(tokens=["a", "b"]))
    writer.write(request({"model": "m", "messages": MESSAGES}))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert json.loads(await reader.readexactly(length))["choices"][0]["message"]["content"] == "ab"

    writer.write(request({"model": "m", "messages": MESSAGES, "stream": True}))
    await reader.readuntil(b"\r\n\r\n")
    events: list[bytes] = []
    while size := int(await reader.readuntil(b"\r\n"), 16):
        chunk = await reader.readexactly(size + 2)
        assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n\r\n")
        events.append(chunk[6:-4])
    assert await reader.readexactly(2) == b"\r\n"
    assert len(events) == 5 and events[-1] == b"[DONE]"
    assert json.loads(events[3])["choices"][0]["finish_reason"] == "stop"
    writer.close()
    await writer.wait_closed()
    assert [r.completed for r in llm.requests] == [True, True]


async def test_many_concurrent_streams(llm: ScriptedLLM, client: openai.AsyncOpenAI) -> None:
    tokens = [f" w{i}" for i in range(20)]
    llm.set_default(Script(tokens=tokens, inter_token_s=0.005))
    started = time.monotonic()
    results = await asyncio.gather(*(_stream(client) for _ in range(32)))
    elapsed = time.monotonic() - started
    assert all(_text(chunks) == "".join(tokens) for chunks in results)
    # 20 tokens 5 ms apart: about 0.1 s when the streams really run concurrently.
    assert elapsed < 1.5


def test_run_in_thread_serves_a_sync_client() -> None:
    with run_in_thread() as llm:
        llm.script("m", Script(tokens=["from", " thread"]))
        sync = openai.OpenAI(base_url=llm.base_url, api_key="x", max_retries=0)
        completion = sync.chat.completions.create(model="m", messages=MESSAGES)
        assert completion.choices[0].message.content == "from thread"
        assert asyncio.run(_wait_requests(llm)) == 1
        sync.close()


async def _wait_requests(llm: ScriptedLLM) -> int:
    # Waiting from another loop than the server's works too.
    await llm.wait_for_requests(1, timeout_s=1.0)
    with pytest.raises(TimeoutError):
        await llm.wait_for_requests(2, timeout_s=0.02)
    return len(llm.requests)


async def test_cli_serves_its_default_script() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "groundwire.testing.scripted_llm", "--port", "0"),
        *("--tokens", "3", "--ttft-ms", "1", "--itl-ms", "1"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        assert line.startswith("listening on http://127.0.0.1:")
        base_url = line.split()[-1]
        async with openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as cli:
            assert _text(await _stream(cli)) == " w0 w1 w2"
            async with httpx.AsyncClient() as http:
                reset = await http.post(base_url.removesuffix("/v1") + "/_scripted/reset")
                assert reset.status_code == 200
            assert _text(await _stream(cli)) == " w0 w1 w2"  # the CLI default survives reset
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
