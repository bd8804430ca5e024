"""A real HTTP server speaking OpenAI chat completions, scripted per model and per request.

It is the only stand-in for a remote LLM in tests and benchmarks: the client under test talks
real HTTP/1.1 + SSE to it, while each response's timing and failure mode (delays, error
statuses, hangs, stalls, cut connections) comes from a queue of :class:`Script` objects. Every
request is recorded, including when the client gave up on it.

HTTP is aiohttp's server (a maintained one, so the double does not carry a parser of its own);
the faults stay real at the socket level: a cut aborts the TCP connection mid-stream, a hang
holds it open, and a client that closes is seen at once, because aiohttp cancels the handler
when the connection is lost (``handler_cancellation``), whatever it was waiting for.

Run standalone with ``python -m groundwire.testing.scripted_llm --port 8089 --tokens 64``; other
processes can script it over HTTP (``/_scripted/script``, ``/_scripted/reset``,
``/_scripted/requests``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, NoReturn

from aiohttp import web

from groundwire.testing.scripted_llm_protocol import (
    DEFAULT_ANSWER_TOKENS,
    MAX_BODY_BYTES,
    BadRequest,
    EventEncoder,
    RecordedRequest,
    Script,
    completion_body,
    count_prompt_words,
    dumps,
    error_body,
    retry_headers,
    usage_obj,
)

__all__ = ["DEFAULT_ANSWER_TOKENS", "RecordedRequest", "Script", "ScriptedLLM", "run_in_thread"]

_POLL_S = 0.002
_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
# How long stop() lets aiohttp wait for handlers; ours are cancelled before it is asked to.
_SHUTDOWN_S = 1.0


class _Cut(Exception):
    """The script aborted the connection on purpose (not the client's doing)."""


async def _forever() -> NoReturn:
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")


def _json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=dumps(obj),
        headers={"content-type": "application/json", **(headers or {})},
    )


def _error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return _json_response(status, error_body(status, message), headers)


class ScriptedLLM:
    """The scripted upstream, serving on the loop that calls :meth:`start`.

    ``default`` replaces ``Script()`` as the global default and survives :meth:`reset`.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, default: Script | None = None
    ) -> None:
        self._host = host
        self._port = port
        self._base_default = default or Script()
        # script()/set_default()/reset() may come from another thread (run_in_thread).
        self._lock = threading.Lock()
        self._queues: dict[str | None, deque[Script]] = {}
        self._defaults: dict[str | None, Script] = {}
        self._requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Bind and start serving on the running loop."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=_SHUTDOWN_S
        )
        await runner.setup()
        await web.TCPSite(runner, self._host, self._port).start()
        self._runner = runner
        self._stopping = False
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the listening socket and every open connection."""
        if self._runner is None:
            return
        self._stopping = True
        # Hung and stalled answers never end on their own: end them rather than wait.
        tasks = list(self._handlers)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> ScriptedLLM:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port (known after :meth:`start` when constructed with 0)."""
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` of this server."""
        return f"http://{self._host}:{self._port}/v1"

    def script(self, model: str | None, *scripts: Script) -> None:
        """Queue scripts for the next requests for ``model`` (None: requests for any model)."""
        with self._lock:
            self._queues.setdefault(model, deque()).extend(scripts)

    def set_default(self, script: Script, model: str | None = None) -> None:
        """The script used once the queues are empty (for ``model``, or globally when None)."""
        with self._lock:
            self._defaults[model] = script

    def reset(self) -> None:
        """Forget queued scripts, defaults and recorded requests."""
        with self._lock:
            self._queues.clear()
            self._defaults.clear()
            self._requests = []

    @property
    def requests(self) -> list[RecordedRequest]:
        """The recorded requests so far (a snapshot of the list; entries keep updating)."""
        with self._lock:
            return list(self._requests)

    async def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> None:
        """Wait until at least ``count`` requests arrived; raises TimeoutError."""
        # Polling rather than an asyncio.Event: waiters may run on another loop or thread.
        deadline = time.monotonic() + timeout_s
        while len(self._requests) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._requests)} of {count} requests arrived")
            await asyncio.sleep(_POLL_S)

    async def wait_for_disconnect(self, index: int, timeout_s: float = 5.0) -> float:
        """Wait until the client of request ``index`` disconnected; return when it did."""
        deadline = time.monotonic() + timeout_s
        while True:
            requests = self._requests
            at = requests[index].disconnected_at if index < len(requests) else None
            if at is not None:
                return at
            if time.monotonic() > deadline:
                raise TimeoutError(f"request {index} saw no disconnect")
            await asyncio.sleep(_POLL_S)

    def _next_script(self, model: str) -> Script:
        for key in (model, None):
            queue = self._queues.get(key)
            if queue:
                return queue.popleft()
        return self._defaults.get(model) or self._defaults.get(None) or self._base_default

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Every route: our own dispatch keeps 404/405 in OpenAI's error shape."""
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if request.path in _CHAT_PATHS:
                if request.method != "POST":
                    raise BadRequest(405, "use POST")
                return await self._chat(request)
            if request.path.startswith("/_scripted/"):
                return _json_response(
                    200, self._control(request.method, request.path, await _body(request))
                )
            raise BadRequest(404, f"no route for {request.method} {request.path}")
        except BadRequest as exc:
            return _error_response(exc.status, exc.message)
        finally:
            self._handlers.discard(task)

    def _control(self, method: str, path: str, data: dict[str, Any]) -> Any:
        route = (method, path)
        if route == ("GET", "/_scripted/requests"):
            return [r.summary() for r in self.requests]
        if route == ("POST", "/_scripted/reset"):
            self.reset()
            return {"ok": True}
        if route == ("POST", "/_scripted/script"):
            model = data.get("model")
            scripts = [Script.from_json(s) for s in data.get("scripts") or []]
            if not scripts or not (model is None or isinstance(model, str)):
                raise BadRequest(400, "need a model (string or null) and at least one script")
            if data.get("default"):
                self.set_default(scripts[0], model)
            else:
                self.script(model, *scripts)
            return {"ok": True}
        raise BadRequest(404, f"no route for {method} {path}")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        model = body.get("model")
        if not isinstance(model, str):
            raise BadRequest(400, "model must be a string")
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        with self._lock:
            record = RecordedRequest(len(self._requests), model, body, headers, time.monotonic())
            self._requests.append(record)
            script = self._next_script(model)
        try:
            return await self._respond(script, record, request)
        except _Cut:
            raise asyncio.CancelledError from None
        except asyncio.CancelledError:
            # aiohttp saw the connection close (or stop() ended us).
            self._note_disconnect(record)
            raise
        except ConnectionError:
            # A write found the connection gone; ending as cancelled keeps aiohttp from
            # logging a 500 for it.
            self._note_disconnect(record)
            raise asyncio.CancelledError from None

    def _note_disconnect(self, record: RecordedRequest) -> None:
        if not (self._stopping or record.completed or record.disconnected_at is not None):
            record.disconnected_at = time.monotonic()

    async def _respond(
        self, script: Script, record: RecordedRequest, request: web.Request
    ) -> web.StreamResponse:
        """Send the scripted response (``_Cut`` when the script aborts the connection)."""
        body = record.body
        tokens = DEFAULT_ANSWER_TOKENS if script.tokens is None else script.tokens
        finish = script.finish_reason
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit < len(tokens):
            tokens, finish = tokens[: max(limit, 0)], "length"
        interrupt_at = script.cut_after_tokens
        if interrupt_at is None:
            interrupt_at = script.stall_after_tokens
        sent = len(tokens) if interrupt_at is None else min(interrupt_at, len(tokens))
        prompt = script.prompt_tokens
        if prompt is None:
            prompt = count_prompt_words(body.get("messages"))
        usage = usage_obj(prompt, sent, script.cached_tokens)
        model = script.response_model or record.model
        completion_id = f"chatcmpl-{record.index}"
        created = int(time.time())

        if script.status != 200:
            if script.ttft_s > 0:
                await asyncio.sleep(script.ttft_s)
            extra = retry_headers(script.retry_after_s, script.retry_after_header)
            response = _error_response(script.status, f"scripted error {script.status}", extra)
            await _send(request, response)
            record.completed = True
            return response

        if not body.get("stream"):
            if script.hang:
                await _forever()
            # A whole answer takes as long as its stream would have.
            delay = script.ttft_s + script.inter_token_s * max(sent - 1, 0)
            if delay > 0:
                await asyncio.sleep(delay)
            if script.cut_after_tokens is not None:
                _abort(request)
            if script.stall_after_tokens is not None:
                await _forever()
            content = "".join(tokens)
            completion = completion_body(completion_id, created, model, content, finish, usage)
            response = _json_response(200, completion)
            await _send(request, response)
            record.first_token_at = time.monotonic()
            record.tokens_sent = len(tokens)
            record.completed = True
            return response

        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        encoder = EventEncoder(completion_id, created, model, include_usage)
        stream = web.StreamResponse(
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
            }
        )
        # One write is one HTTP chunk: every SSE event travels in a chunk of its own.
        stream.enable_chunked_encoding()
        await stream.prepare(request)  # a StreamResponse sends its headers here
        if script.hang:
            await _forever()
        if script.ttft_s > 0:
            await asyncio.sleep(script.ttft_s)
        # Tokens follow a fixed schedule from the first one, so a busy loop delays a token
        # without stretching the whole answer.
        loop = asyncio.get_running_loop()
        due = loop.time()
        for i in range(sent):
            if i == 0:
                await stream.write(encoder.role())
            elif script.inter_token_s > 0:
                due += script.inter_token_s
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)
            await stream.write(encoder.content(tokens[i]))
            if i == 0:
                record.first_token_at = time.monotonic()
            record.tokens_sent += 1
        if script.cut_after_tokens is not None:
            _abort(request)
        if script.stall_after_tokens is not None:
            await _forever()
        if sent == 0:
            await stream.write(encoder.role())
        await stream.write(encoder.finish(finish))
        if include_usage and script.usage:
            await stream.write(encoder.usage(usage))
        await stream.write_eof(EventEncoder.DONE)
        record.completed = True
        return stream


def _abort(request: web.Request) -> NoReturn:
    """Abort the TCP connection: no final chunk, no ``[DONE]``, the client reads a reset."""
    if request.transport is not None:
        request.transport.abort()
    raise _Cut


async def _send(request: web.Request, response: web.Response) -> None:
    """Send a whole response now (headers and body in one write), so that what the request
    records happens after the bytes left."""
    await response.prepare(request)
    await response.write_eof()


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest(413, "body too large") from None
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise BadRequest(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "body must be a JSON object")
    return data


@contextlib.contextmanager
def run_in_thread(
    host: str = "127.0.0.1", port: int = 0, default: Script | None = None
) -> Iterator[ScriptedLLM]:
    """Run a ScriptedLLM on its own event loop in a daemon thread for the ``with`` block."""
    llm = ScriptedLLM(host, port, default=default)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="scripted-llm", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(llm.start(), loop).result(timeout=10)
        yield llm
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(llm.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


async def _serve(args: argparse.Namespace) -> None:
    tokens = None if args.tokens is None else [f" w{i}" for i in range(args.tokens)]
    default = Script(tokens=tokens, ttft_s=args.ttft_ms / 1000, inter_token_s=args.itl_ms / 1000)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with ScriptedLLM(args.host, args.port, default=default) as llm:
        print(f"listening on {llm.base_url}", flush=True)
        await stopping.wait()


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: serve a default script until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--tokens", type=int, default=None, help="answer with N tokens")
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
