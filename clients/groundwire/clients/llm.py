"""Chat completions from any OpenAI-compatible endpoint, streamed (``/v1/chat/completions``).

One :class:`OpenAIChatClient` per endpoint holds a pooled ``httpx.AsyncClient``. A call is an
async generator of :class:`ChatChunk`; leaving it early (the caller cancelled, a time limit)
closes the HTTP response, and with it the connection, so the upstream stops generating.
Every call opens a client span with OpenTelemetry's ``gen_ai`` attributes and sends the
correlation id and ``traceparent``; httpx's exceptions become :class:`LLMCallError`.

An :class:`LLMCallError`'s message is ours ("the upstream answered HTTP 503"); the
upstream's own words (its error body, httpx's text with the endpoint's host and port) go to
the log through :class:`VendorErrorLog`, never into an error a caller could see.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode

from groundwire.clients.correlation import current_correlation_id, outbound_headers
from groundwire.clients.errors import LLMCallError
from groundwire.clients.retry_after import DEFAULT_RETRY_AFTER_CAP_S, check_cap, retry_after_s
from groundwire.clients.telemetry import CORRELATION_ATTRIBUTE, tracer
from groundwire.clients.vendor_log import VendorErrorLog

MAX_ERROR_BODY = 2048


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat prompt."""

    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """A chat completion request, in the upstream's terms."""

    model: str  # the upstream model name
    messages: tuple[ChatMessage, ...]
    temperature: float
    max_tokens: int
    stop: tuple[str, ...] = ()

    def body(self) -> dict[str, Any]:
        """The JSON body of a streaming request that asks for a final usage chunk."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.stop:
            body["stop"] = list(self.stop)
        return body


@dataclass(frozen=True)
class TokenUsage:
    """Token counts as the upstream reported them (None: not reported)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass
class ChatChunk:
    """New output of a streaming call. ``pieces`` counts the upstream's content events merged
    into ``text`` (roughly its tokens, used when no usage is reported)."""

    text: str = ""
    pieces: int = 0
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    model: str | None = None

    def merge(self, other: ChatChunk) -> None:
        """Append ``other`` (a later chunk) to this one."""
        self.text += other.text
        self.pieces += other.pieces
        self.finish_reason = other.finish_reason or self.finish_reason
        self.usage = other.usage or self.usage
        self.model = self.model or other.model


@dataclass
class _SseParser:
    """Splits a byte stream into SSE ``data:`` payloads (events end with a blank line)."""

    buffer: bytes = b""
    done: bool = False

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        if b"\r" in self.buffer:
            self.buffer = self.buffer.replace(b"\r\n", b"\n")
        *events, self.buffer = self.buffer.split(b"\n\n")
        out = []
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        self.done = True
                    elif payload:
                        out.append(payload)
        return out


def _chunk_from_event(event: dict[str, Any], vendor_log: VendorErrorLog) -> ChatChunk:
    if "error" in event:
        error = event["error"]
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        ours = "the upstream sent an error event in the stream"
        vendor_log("stream", str(message), ours=ours)
        raise LLMCallError(ours, kind="upstream_error")
    chunk = ChatChunk(model=event.get("model"))
    choices = event.get("choices") or ()
    if choices:
        choice = choices[0]
        content = (choice.get("delta") or {}).get("content")
        if content:
            chunk.text = content
            chunk.pieces = 1
        chunk.finish_reason = choice.get("finish_reason")
    usage = event.get("usage")
    if usage:
        details = usage.get("prompt_tokens_details") or {}
        chunk.usage = TokenUsage(
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            cached_tokens=details.get("cached_tokens"),
        )
    return chunk


class OpenAIChatClient:
    """Streams chat completions from one OpenAI-compatible endpoint."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        system: str = "openai",
        connect_timeout_s: float = 2.0,
        idle_timeout_s: float = 30.0,
        max_connections: int = 256,
        retry_after_cap_s: float = DEFAULT_RETRY_AFTER_CAP_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``idle_timeout_s`` bounds the wait for each read (a stalled stream fails);
        ``system`` is the ``gen_ai.system`` span attribute (``openai``, ``deepseek``…);
        a 429's ``Retry-After`` is read up to ``retry_after_cap_s``."""
        self._retry_after_cap_s = check_cap(retry_after_cap_s)
        self._vendor_log = VendorErrorLog("llm")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.system = system
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(idle_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """The completion as chunks: one per content event, then one carrying the finish
        reason and usage. Raises :class:`LLMCallError`; a stream that ends without
        ``[DONE]`` and without a finish reason is a ``stream_cut``."""
        span = tracer().start_span(
            f"chat {request.model}",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": self.system,
                "gen_ai.request.model": request.model,
                "gen_ai.request.temperature": request.temperature,
                "gen_ai.request.max_tokens": request.max_tokens,
                "server.address": self._client.base_url.host,
            },
        )
        correlation_id = current_correlation_id()
        if correlation_id is not None:
            span.set_attribute(CORRELATION_ATTRIBUTE, correlation_id)
        headers = outbound_headers(trace.set_span_in_context(span))
        totals = ChatChunk()
        try:
            async with self._client.stream(
                "POST", "/chat/completions", json=request.body(), headers=headers
            ) as response:
                if response.status_code != 200:
                    raise await _status_error(response, self._retry_after_cap_s, self._vendor_log)
                async for chunk in self._chunks(response):
                    totals.merge(chunk)
                    yield chunk
        except LLMCallError as exc:
            _fail(span, exc, exc.kind)
            raise
        except httpx.TimeoutException as exc:
            _fail(span, exc, "timeout")
            ours = "the upstream timed out"
            self._vendor_log("chat", exc, ours=ours)
            raise LLMCallError(ours, kind="timeout") from exc
        except httpx.HTTPError as exc:
            kind = "stream_cut" if totals.pieces else "connection"
            _fail(span, exc, kind)
            ours = "the upstream stream was cut" if totals.pieces else "the upstream is unreachable"
            self._vendor_log("chat", exc, ours=ours)
            raise LLMCallError(ours, kind=kind) from exc
        except BaseException as exc:  # cancelled or closed early by our caller
            span.set_attribute("error.type", type(exc).__name__)
            raise
        finally:
            _finish_span(span, totals)

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[ChatChunk]:
        parser = _SseParser()
        finished = False
        async for data in response.aiter_bytes():
            for payload in parser.feed(data):
                try:
                    event = json.loads(payload)
                except ValueError as exc:
                    raise LLMCallError("unreadable stream event", kind="upstream_error") from exc
                chunk = _chunk_from_event(event, self._vendor_log)
                finished = finished or chunk.finish_reason is not None
                if chunk.pieces or chunk.finish_reason or chunk.usage:
                    yield chunk
            if parser.done:
                return
        if not finished:
            raise LLMCallError("the stream ended before the answer did", kind="stream_cut")

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


async def _status_error(
    response: httpx.Response, retry_after_cap_s: float, vendor_log: VendorErrorLog
) -> LLMCallError:
    body = b""
    async for data in response.aiter_bytes():
        body += data
        if len(body) >= MAX_ERROR_BODY:
            break
    status = response.status_code
    detail = body[:MAX_ERROR_BODY].decode("utf-8", "replace")
    with contextlib.suppress(ValueError, KeyError, TypeError):
        detail = json.loads(body)["error"]["message"]
    if status == 429:
        kind = "rate_limited"
    elif status >= 500:
        kind = "server_error"
    elif status == 408:
        kind = "timeout"
    else:
        kind = "client_error"
    ours = f"the upstream answered HTTP {status}"
    vendor_log(f"HTTP {status}", detail, ours=ours)
    return LLMCallError(
        ours,
        kind=kind,
        status=status,
        retry_after_s=(
            retry_after_s(response.headers, cap_s=retry_after_cap_s) if status == 429 else None
        ),
    )


def _fail(span: Span, exc: BaseException, kind: str) -> None:
    span.set_attribute("error.type", kind)
    span.set_status(StatusCode.ERROR, kind)
    span.record_exception(exc)


def _finish_span(span: Span, totals: ChatChunk) -> None:
    if totals.model:
        span.set_attribute("gen_ai.response.model", totals.model)
    if totals.finish_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [totals.finish_reason])
    usage = totals.usage
    if usage is not None and usage.prompt_tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
    output = usage.completion_tokens if usage is not None else None
    if output is None:
        output = totals.pieces
    span.set_attribute("gen_ai.usage.output_tokens", output)
    span.end()
