"""Chat completions from any OpenAI-compatible endpoint, streamed (``/v1/chat/completions``).

The ``ChatModel`` port over OpenAI's protocol (the request and chunk types are ours, in
``chat.py``). One :class:`OpenAIChatClient` per endpoint holds one pooled
``aiohttp.ClientSession``. A call is an async generator of :class:`ChatChunk`; leaving it
early (the caller cancelled, a time limit) closes the HTTP response, and with it the
connection, so the upstream stops generating. Every call opens a client span with
OpenTelemetry's ``gen_ai`` attributes and sends the correlation id and ``traceparent``;
aiohttp's exceptions become :class:`LLMCallError`.

Why aiohttp and not httpx (which the embedder's client still uses, off the streaming path):
reading a token stream is the server's hottest loop, and httpx reads it through httpcore,
h11 and anyio, a dozen Python frames and an anyio cancel scope per network read (the largest
share of the server's CPU per answer in a profile). Measured side by side in one run (``python -m
groundwire.tools.measure.stream_cpu``: 64-token answers, upstream 300 ms to the first token
and 5 ms between tokens, a busy 2-core machine), the server's CPU per answer:

    streams   httpx + asyncio   aiohttp + asyncio   aiohttp + uvloop
    32        17.7 ms           13.9 ms             12.3 ms
    256       13.2 ms            8.4 ms              5.6 ms

and TTFT over the direct call (p50) fell from 156 ms to 26 ms at 32 streams, from 3.8 s to
0.34 s at 256 (the server saturated a core with httpx). h11 over asyncio streams would be
a parser of our own for a gain aiohttp's C parser already gives.

An :class:`LLMCallError`'s message is ours ("the upstream answered HTTP 503"); the
upstream's own words (its error body, aiohttp's text with the endpoint's host and port) go
to the log through :class:`VendorErrorLog`, never into an error a caller could see.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import certifi
from aiohttp.helpers import basicauth_from_netrc, get_env_proxy_for_url, netrc_from_env
from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode
from yarl import URL

from groundwire.clients.chat import ChatChunk, ChatRequest, TokenUsage
from groundwire.clients.correlation import current_correlation_id, outbound_headers
from groundwire.clients.errors import LLMCallError
from groundwire.clients.retry_after import DEFAULT_RETRY_AFTER_CAP_S, check_cap, retry_after_s
from groundwire.clients.telemetry import CORRELATION_ATTRIBUTE, tracer
from groundwire.clients.vendor_log import VendorErrorLog

MAX_ERROR_BODY = 2048


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The JSON body of a streaming request that asks for a final usage chunk."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.stop:
        body["stop"] = list(request.stop)
    return body


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


def _chunk_from_events(
    events: list[dict[str, Any]], vendor_log: VendorErrorLog
) -> tuple[ChatChunk | None, LLMCallError | None]:
    """One chunk for everything ``events`` carry (their texts joined, the last finish reason
    and usage), None when none carries text, a finish reason or usage (role announcements,
    keep-alive deltas). An error event ends the batch: the chunk holds what came before it and
    the error is returned beside it, to be raised once that output is handed over."""
    texts: list[str] = []
    finish_reason = usage = model = None
    for event in events:
        if "error" in event:
            error = event["error"]
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            ours = "the upstream sent an error event in the stream"
            vendor_log("stream", str(message), ours=ours)
            failure = LLMCallError(ours, kind="upstream_error")
            return _chunk(texts, finish_reason, usage, model), failure
        model = model or event.get("model")
        choices = event.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta and (content := delta.get("content")):
                texts.append(content)
            finish_reason = choice.get("finish_reason") or finish_reason
        usage = event.get("usage") or usage
    return _chunk(texts, finish_reason, usage, model), None


def _chunk(
    texts: list[str], finish_reason: str | None, usage: dict[str, Any] | None, model: str | None
) -> ChatChunk | None:
    if not texts and not finish_reason and not usage:
        return None
    chunk = ChatChunk(model=model, finish_reason=finish_reason)
    if texts:
        chunk.text = "".join(texts)
        chunk.pieces = len(texts)
    if usage:
        details = usage.get("prompt_tokens_details") or {}
        chunk.usage = TokenUsage(
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            cached_tokens=details.get("cached_tokens"),
        )
    return chunk


def _decode_events(payloads: list[bytes]) -> tuple[list[dict[str, Any]], LLMCallError | None]:
    """The JSON objects of ``payloads``: one ``json.loads`` over them all (the per-call cost
    of ``json.loads`` is most of a small event's), one by one only to find a bad one. The
    events before a bad one are returned with the error."""
    joined = payloads[0] if len(payloads) == 1 else b"[" + b",".join(payloads) + b"]"
    try:
        decoded = json.loads(joined)
        if len(payloads) == 1:
            decoded = [decoded]
        if all(isinstance(event, dict) for event in decoded):
            return decoded, None
    except ValueError:
        pass
    events: list[dict[str, Any]] = []
    for payload in payloads:
        try:
            event = json.loads(payload)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            return events, LLMCallError("unreadable stream event", kind="upstream_error")
        events.append(event)
    return events, None  # pragma: no cover - the joined parse would have succeeded


class OpenAIChatClient:
    """Streams chat completions from one OpenAI-compatible endpoint (``ports.ChatModel``)."""

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
    ) -> None:
        """``idle_timeout_s`` bounds the wait for each read (a stalled stream fails) and for
        a free connection of the pool; ``connect_timeout_s`` bounds opening a connection;
        ``system`` is the ``gen_ai.system`` span attribute (``openai``, ``deepseek``…); a
        429's ``Retry-After`` is read up to ``retry_after_cap_s``."""
        self._retry_after_cap_s = check_cap(retry_after_cap_s)
        self._vendor_log = VendorErrorLog("llm")
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.system = system
        self._url = URL(f"{self.base_url}/chat/completions")
        self._host = self._url.host or ""
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout_s + idle_timeout_s,  # waiting for the pool, then connecting
            sock_connect=connect_timeout_s,
            sock_read=idle_timeout_s,
        )
        self._max_connections = max_connections
        # Made on first use: an aiohttp session belongs to the event loop that runs it.
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ssl=_ssl_context()
            )
            proxy, proxy_auth = _environment_proxy(self._url)
            headers = self._headers
            if not headers and (netrc := _netrc_auth(self._host)) is not None:
                headers = {"authorization": netrc.encode()}
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=headers,
                timeout=self._timeout,
                # Proxies and netrc from the environment (as httpx did), read once here.
                # aiohttp's trust_env reads them for every request, in two executor jobs that
                # parse ~/.netrc each time: a tenth of the server's CPU at 256 streams.
                proxy=proxy,
                proxy_auth=proxy_auth,
                trust_env=False,
                raise_for_status=False,
            )
        return self._session

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatChunk]:
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
                "server.address": self._host,
            },
        )
        correlation_id = current_correlation_id()
        if correlation_id is not None:
            span.set_attribute(CORRELATION_ATTRIBUTE, correlation_id)
        headers = outbound_headers(trace.set_span_in_context(span))
        totals = ChatChunk()
        response: aiohttp.ClientResponse | None = None
        reusable = False  # the connection may serve another call (the body was read whole)
        try:
            response = await self._client().post(
                self._url, json=request_body(request), headers=headers
            )
            if response.status != 200:
                error = await _status_error(response, self._retry_after_cap_s, self._vendor_log)
                reusable = True
                raise error
            async for chunk in self._chunks(response):
                totals.merge(chunk)
                yield chunk
            reusable = True
        except LLMCallError as exc:
            _fail(span, exc, exc.kind)
            raise
        except aiohttp.ServerTimeoutError as exc:  # connect, pool wait or an idle read
            _fail(span, exc, "timeout")
            ours = "the upstream timed out"
            self._vendor_log("chat", exc, ours=ours)
            raise LLMCallError(ours, kind="timeout") from exc
        except aiohttp.ClientError as exc:
            kind = "stream_cut" if totals.pieces else "connection"
            _fail(span, exc, kind)
            ours = "the upstream stream was cut" if totals.pieces else "the upstream is unreachable"
            self._vendor_log("chat", exc, ours=ours)
            raise LLMCallError(ours, kind=kind) from exc
        except BaseException as exc:  # cancelled or closed early by our caller
            span.set_attribute("error.type", type(exc).__name__)
            raise
        finally:
            if response is not None:
                # Anything but a whole answer closes the connection: the upstream sees the
                # disconnect and stops generating (release() alone would too, as the body is
                # unfinished, but that is aiohttp's bookkeeping, not a promise).
                if reusable:
                    response.release()
                else:
                    response.close()
            _finish_span(span, totals)

    async def _chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[ChatChunk]:
        """One chunk per network read: everything buffered since the last read (several
        events when the reader was busy or paced; see ``pump.py``) is decoded in one pass."""
        parser = _SseParser()
        finished = False
        content = response.content
        while data := await content.readany():
            if payloads := parser.feed(data):
                events, failure = _decode_events(payloads)
                chunk, error = _chunk_from_events(events, self._vendor_log)
                failure = error or failure
                if chunk is not None:
                    finished = finished or chunk.finish_reason is not None
                    yield chunk
                if failure is not None:
                    raise failure
            if parser.done:
                return
        if not finished:
            raise LLMCallError("the stream ended before the answer did", kind="stream_cut")

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _environment_proxy(url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``NO_PROXY``…, with its
    netrc credentials), as aiohttp's ``trust_env`` would pick it; ``(None, None)`` for none."""
    try:
        return get_env_proxy_for_url(url)
    except LookupError:
        return None, None


def _netrc_auth(host: str) -> aiohttp.BasicAuth | None:
    """Basic credentials for ``host`` from ``$NETRC`` or ``~/.netrc``, when there are any."""
    netrc = netrc_from_env()
    if netrc is None or not host:
        return None
    try:
        return basicauth_from_netrc(netrc, host)
    except LookupError:
        return None


def _ssl_context() -> ssl.SSLContext:
    """Certificates from certifi, as httpx verifies them (a slim image may have no system
    store)."""
    return ssl.create_default_context(cafile=certifi.where())


async def _status_error(
    response: aiohttp.ClientResponse, retry_after_cap_s: float, vendor_log: VendorErrorLog
) -> LLMCallError:
    body = b""
    while len(body) < MAX_ERROR_BODY and (data := await response.content.readany()):
        body += data
    status = response.status
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
