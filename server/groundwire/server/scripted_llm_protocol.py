"""Data types and wire format of the scripted LLM (see ``scripted_llm``).

Scripts and recorded requests, minimal HTTP/1.1 framing and OpenAI chat-completion bodies; the
behaviour (queues, timing, disconnect detection) lives in ``scripted_llm``. Constant parts of
stream chunks are encoded once per response so that a token costs one small ``json.dumps``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_READ_SIZE = 64 * 1024

LAST_CHUNK = b"0\r\n\r\n"


class BadRequest(Exception):
    """A request the server answers with an error status instead of a completion."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class HttpRequest:
    """One parsed HTTP request."""

    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        """Whether the client lets the connection carry another request after this one."""
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class RequestReader:
    """Reads HTTP/1.1 requests off one connection.

    It owns a buffer rather than using ``StreamReader.readuntil`` because the disconnect watcher
    reads during a response: whatever a pipelining client sends early must survive for the next
    request instead of being consumed by the watcher.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buf = bytearray()

    async def _fill(self) -> bool:
        try:
            data = await self._reader.read(_READ_SIZE)
        except ConnectionError:
            return False
        if not data:
            return False
        self._buf += data
        return True

    async def wait_eof(self) -> None:
        """Return when the client closes (or resets) the connection, buffering what it sends."""
        while await self._fill():
            if len(self._buf) > MAX_HEAD_BYTES + MAX_BODY_BYTES:
                return

    async def _read_line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                raise BadRequest(431, "line too long")
            if not await self._fill():
                raise ConnectionResetError("connection closed mid-request")
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    async def _read_exactly(self, size: int) -> bytes:
        while len(self._buf) < size:
            if not await self._fill():
                raise ConnectionResetError("connection closed mid-request")
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    async def read_request(self, writer: asyncio.StreamWriter) -> HttpRequest | None:
        """The next request, or None when the client closed the connection between requests."""
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                raise BadRequest(431, "request head too large")
            if not await self._fill():
                if self._buf.strip():
                    raise ConnectionResetError("connection closed mid-request")
                return None
        head = bytes(self._buf[:end]).decode("latin-1").lstrip("\r\n")
        del self._buf[: end + 4]
        request_line, *header_lines = head.split("\r\n")
        try:
            method, target, version = request_line.split(" ", 2)
        except ValueError:
            raise BadRequest(400, f"malformed request line {request_line!r}") from None
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise BadRequest(400, f"malformed header line {line!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if headers.get("expect", "").lower() == "100-continue":
            # curl waits up to a second for this before sending bodies over 1 KiB.
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked()
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise BadRequest(400, "bad content-length") from None
            if not 0 <= length <= MAX_BODY_BYTES:
                raise BadRequest(413, "body too large")
            body = await self._read_exactly(length)
        path = target.split("?", 1)[0]
        return HttpRequest(method.upper(), path, version, headers, body)

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            try:
                size = int((await self._read_line()).split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest(400, "bad chunk size") from None
            if size == 0:
                while await self._read_line():  # trailers, up to the blank line
                    pass
                return bytes(body)
            body += await self._read_exactly(size)
            await self._read_exactly(2)
            if len(body) > MAX_BODY_BYTES:
                raise BadRequest(413, "body too large")


# The citation marker is split across pieces on purpose: real models do that, and citation
# parsing must cope with it.
DEFAULT_ANSWER_TOKENS: list[str] = ["The", " sources", " say", " so", " [1", "]", "."]


@dataclass
class Script:
    """What the upstream does for one request."""

    # Content pieces, one SSE chunk each; None means DEFAULT_ANSWER_TOKENS.
    tokens: list[str] | None = None
    # Delay after the response headers, before the first content chunk (and before an error).
    ttft_s: float = 0.0
    inter_token_s: float = 0.0
    # Anything but 200 answers with an OpenAI-shaped JSON error and no stream.
    status: int = 200
    # With an error status: `Retry-After` (whole seconds, rounded up) and `retry-after-ms`.
    retry_after_s: float | None = None
    # With an error status: a `Retry-After` sent exactly as written ("inf", a date, garbage),
    # instead of the one retry_after_s makes: how a broken or hostile upstream is played.
    retry_after_header: str | None = None
    # 200 and SSE headers, then nothing until the client disconnects.
    hang: bool = False
    # N content chunks, then nothing until the client disconnects.
    stall_after_tokens: int | None = None
    # N content chunks, then the TCP connection is aborted (no final chunk, no [DONE]).
    cut_after_tokens: int | None = None
    finish_reason: str = "stop"
    # Send the usage chunk when the request asks for stream_options.include_usage.
    usage: bool = True
    # None means the word count of all request message contents.
    prompt_tokens: int | None = None
    cached_tokens: int = 0
    # The "model" of the responses; None means the requested model.
    response_model: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Script:
        """A script from its JSON form (the dataclass fields); unknown fields are an error."""
        if not isinstance(data, dict):
            raise BadRequest(400, "a script must be a JSON object")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise BadRequest(400, f"unknown script fields: {sorted(unknown)}")
        tokens = data.get("tokens")
        if tokens is not None and not (
            isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)
        ):
            raise BadRequest(400, "tokens must be a list of strings or null")
        return cls(**data)


@dataclass
class RecordedRequest:
    """One chat-completion request as the upstream saw it; updated while it is answered."""

    index: int
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float
    first_token_at: float | None = None
    tokens_sent: int = 0
    completed: bool = False
    disconnected_at: float | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-friendly form without the (possibly large) messages."""
        messages = self.body.get("messages")
        return {
            "index": self.index,
            "model": self.model,
            "headers": self.headers,
            "stream": bool(self.body.get("stream")),
            "message_count": len(messages) if isinstance(messages, list) else 0,
            "received_at": self.received_at,
            "first_token_at": self.first_token_at,
            "tokens_sent": self.tokens_sent,
            "completed": self.completed,
            "disconnected": self.disconnected_at is not None,
            "disconnected_at": self.disconnected_at,
        }


def count_prompt_words(messages: Any) -> int:
    """Whitespace-separated words in all message contents (text parts included)."""
    count = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            count += len(content.split())
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str):
                    count += len(text.split())
    return count


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def http_chunk(payload: bytes) -> bytes:
    """``payload`` framed as one chunk of a chunked transfer encoding."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _head(status: int, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def stream_head(keep_alive: bool) -> bytes:
    """Status line and headers of a streamed (SSE) completion."""
    headers = [
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache"),
        ("transfer-encoding", "chunked"),
    ]
    return _head(200, headers, keep_alive)


def json_response(
    status: int,
    obj: Any,
    keep_alive: bool,
    extra_headers: list[tuple[str, str]] | None = None,
) -> bytes:
    """A complete response with a JSON body."""
    body = _dumps(obj)
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    return _head(status, headers + (extra_headers or []), keep_alive) + body


_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("timeout_error", "timeout"),
    409: ("conflict_error", None),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def error_response(
    status: int,
    message: str,
    keep_alive: bool,
    retry_after_s: float | None = None,
    retry_after_header: str | None = None,
) -> bytes:
    """An error in OpenAI's shape, with ``Retry-After``/``retry-after-ms`` when given
    (``retry_after_header``: a ``Retry-After`` value sent verbatim, and no milliseconds)."""
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "api_error", None))
    extra: list[tuple[str, str]] = []
    if retry_after_header is not None:
        extra.append(("retry-after", retry_after_header))
    elif retry_after_s is not None:
        extra.append(("retry-after", str(math.ceil(retry_after_s))))
        extra.append(("retry-after-ms", str(round(retry_after_s * 1000))))
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return json_response(status, body, keep_alive, extra)


def usage_obj(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    """The ``usage`` object of a completion."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def completion_body(
    completion_id: str, created: int, model: str, content: str, finish: str, usage: dict[str, Any]
) -> dict[str, Any]:
    """A non-streamed ``chat.completion``."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage,
    }


class ChunkEncoder:
    """Builds the HTTP chunks of one streamed completion (each holding one SSE event)."""

    DONE = http_chunk(b"data: [DONE]\n\n") + LAST_CHUNK

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self._head = (
            b'data: {"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,'
            b'"system_fingerprint":null,"choices":['
            % (_dumps(completion_id), created, _dumps(model))
        )
        # OpenAI sends "usage": null on every chunk but the last when usage was requested.
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._content_prefix = self._head + b'{"index":0,"delta":{"content":'
        self._content_suffix = b'},"logprobs":null,"finish_reason":null}]' + self._tail

    def _choice(self, delta: bytes, finish: str | None) -> bytes:
        choice = b'{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}' % (
            delta,
            _dumps(finish),
        )
        return http_chunk(self._head + choice + b"]" + self._tail)

    def role(self) -> bytes:
        """The opening chunk: the assistant role with empty content."""
        return self._choice(b'{"role":"assistant","content":""}', None)

    def content(self, piece: str) -> bytes:
        """One content piece."""
        return http_chunk(self._content_prefix + _dumps(piece) + self._content_suffix)

    def finish(self, reason: str) -> bytes:
        """The chunk carrying the finish reason and an empty delta."""
        return self._choice(b"{}", reason)

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The final usage chunk (no choices)."""
        return http_chunk(self._head + b'],"usage":' + _dumps(usage) + b"}\n\n")
