"""Data types and wire format of the scripted LLM (see ``scripted_llm``).

Scripts, recorded requests and the OpenAI chat-completion bodies and SSE events; HTTP itself is
aiohttp's, and the behaviour (queues, timing, faults, disconnect detection) lives in
``scripted_llm``. Constant parts of stream events are encoded once per response so that a token
costs one small ``json.dumps``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

MAX_BODY_BYTES = 64 * 1024 * 1024


class BadRequest(Exception):
    """A request the server answers with an error status instead of a completion."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


# One encoder for every call: json.dumps with separators builds a new one each time, which
# costs more than encoding a token.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def dumps(obj: Any) -> bytes:
    """Compact JSON, as OpenAI sends it."""
    return _ENCODER.encode(obj).encode()


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


def error_body(status: int, message: str) -> dict[str, Any]:
    """An error in OpenAI's shape (``type`` and ``code`` follow the status)."""
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "api_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def retry_headers(retry_after_s: float | None, retry_after_header: str | None) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` for ``retry_after_s``;
    ``retry_after_header`` instead is a ``Retry-After`` sent verbatim, without milliseconds."""
    if retry_after_header is not None:
        return {"retry-after": retry_after_header}
    if retry_after_s is not None:
        return {
            "retry-after": str(math.ceil(retry_after_s)),
            "retry-after-ms": str(round(retry_after_s * 1000)),
        }
    return {}


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


class EventEncoder:
    """Builds the SSE events of one streamed completion (the server sends each as one HTTP
    chunk)."""

    DONE = b"data: [DONE]\n\n"

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self._head = (
            b'data: {"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,'
            b'"system_fingerprint":null,"choices":[' % (dumps(completion_id), created, dumps(model))
        )
        # OpenAI sends "usage": null on every chunk but the last when usage was requested.
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._content_prefix = self._head + b'{"index":0,"delta":{"content":'
        self._content_suffix = b'},"logprobs":null,"finish_reason":null}]' + self._tail

    def _choice(self, delta: bytes, finish: str | None) -> bytes:
        choice = b'{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}' % (
            delta,
            dumps(finish),
        )
        return self._head + choice + b"]" + self._tail

    def role(self) -> bytes:
        """The opening event: the assistant role with empty content."""
        return self._choice(b'{"role":"assistant","content":""}', None)

    def content(self, piece: str) -> bytes:
        """One content piece."""
        return self._content_prefix + dumps(piece) + self._content_suffix

    def finish(self, reason: str) -> bytes:
        """The event carrying the finish reason and an empty delta."""
        return self._choice(b"{}", reason)

    def usage(self, usage: dict[str, Any]) -> bytes:
        """The final usage event (no choices)."""
        return self._head + b'],"usage":' + dumps(usage) + b"}\n\n"
