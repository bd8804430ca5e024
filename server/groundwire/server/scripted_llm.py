"""A real HTTP server speaking OpenAI chat completions, scripted per model and per request.

It is the only stand-in for a remote LLM in tests and benchmarks: the client under test talks
real HTTP/1.1 + SSE to it, while each response's timing and failure mode (delays, error
statuses, hangs, stalls, cut connections) comes from a queue of :class:`Script` objects. Every
request is recorded, including when the client gave up on it.

Run standalone with ``python -m groundwire.server.scripted_llm --port 8089 --tokens 64``; other
processes can script it over HTTP (``/_scripted/script``, ``/_scripted/reset``,
``/_scripted/requests``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from groundwire.server.scripted_llm_protocol import (
    DEFAULT_ANSWER_TOKENS,
    BadRequest,
    ChunkEncoder,
    HttpRequest,
    RecordedRequest,
    RequestReader,
    Script,
    completion_body,
    count_prompt_words,
    error_response,
    json_response,
    stream_head,
    usage_obj,
)

__all__ = ["DEFAULT_ANSWER_TOKENS", "RecordedRequest", "Script", "ScriptedLLM", "run_in_thread"]

log = logging.getLogger(__name__)

_POLL_S = 0.002


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


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
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Bind and start serving on the running loop."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listening socket and every open connection."""
        if self._server is None:
            return
        self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        requests = RequestReader(reader)
        try:
            while True:
                try:
                    request = await requests.read_request(writer)
                except BadRequest as exc:
                    writer.write(error_response(exc.status, exc.message, keep_alive=False))
                    await writer.drain()
                    break
                if request is None or not await self._dispatch(request, requests, writer):
                    break
                if not request.keep_alive:
                    break
        except (ConnectionError, asyncio.CancelledError):
            # stop() cancels connection tasks; ending normally spares Python 3.11's streams a
            # traceback (its done-callback calls task.exception() on the cancelled task).
            pass
        except Exception:
            log.exception("scripted LLM connection failed")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _dispatch(
        self, request: HttpRequest, requests: RequestReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must not be reused."""
        keep_alive = request.keep_alive
        try:
            if request.path in ("/v1/chat/completions", "/chat/completions"):
                if request.method != "POST":
                    raise BadRequest(405, "use POST")
                return await self._chat(request, requests, writer)
            if request.path.startswith("/_scripted/"):
                response = json_response(200, self._control(request), keep_alive)
            else:
                raise BadRequest(404, f"no route for {request.method} {request.path}")
        except BadRequest as exc:
            response = error_response(exc.status, exc.message, keep_alive)
        writer.write(response)
        await writer.drain()
        return True

    def _control(self, request: HttpRequest) -> Any:
        route = (request.method, request.path)
        if route == ("GET", "/_scripted/requests"):
            return [r.summary() for r in self.requests]
        if route == ("POST", "/_scripted/reset"):
            self.reset()
            return {"ok": True}
        if route == ("POST", "/_scripted/script"):
            data = _parse_json(request.body)
            model = data.get("model")
            scripts = [Script.from_json(s) for s in data.get("scripts") or []]
            if not scripts or not (model is None or isinstance(model, str)):
                raise BadRequest(400, "need a model (string or null) and at least one script")
            if data.get("default"):
                self.set_default(scripts[0], model)
            else:
                self.script(model, *scripts)
            return {"ok": True}
        raise BadRequest(404, f"no route for {request.method} {request.path}")

    async def _chat(
        self, request: HttpRequest, requests: RequestReader, writer: asyncio.StreamWriter
    ) -> bool:
        body = _parse_json(request.body)
        model = body.get("model")
        if not isinstance(model, str):
            raise BadRequest(400, "model must be a string")
        with self._lock:
            record = RecordedRequest(
                len(self._requests), model, body, request.headers, time.monotonic()
            )
            self._requests.append(record)
            script = self._next_script(model)

        # The watcher notices a client that goes away while we wait (ttft, hang, stall) instead
        # of only at the next failed write.
        watcher = asyncio.create_task(requests.wait_eof())
        responder = asyncio.create_task(self._respond(script, record, request.keep_alive, writer))
        try:
            await asyncio.wait((watcher, responder), return_when=asyncio.FIRST_COMPLETED)
            if watcher.done() and not responder.done():
                record.disconnected_at = time.monotonic()
        finally:
            watcher.cancel()
            responder.cancel()
            client_closed, outcome = await asyncio.gather(
                watcher, responder, return_exceptions=True
            )
        if isinstance(outcome, ConnectionError):
            if not record.completed and record.disconnected_at is None:
                record.disconnected_at = time.monotonic()
            return False
        if isinstance(outcome, Exception):
            raise outcome
        # client_closed is None when the watcher saw EOF, a CancelledError when we stopped it.
        return outcome is True and client_closed is not None

    async def _respond(
        self,
        script: Script,
        record: RecordedRequest,
        keep_alive: bool,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Write the scripted response; True when the connection can carry another request."""
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
            message = f"scripted error {script.status}"
            writer.write(
                error_response(
                    script.status,
                    message,
                    keep_alive,
                    script.retry_after_s,
                    script.retry_after_header,
                )
            )
            await writer.drain()
            record.completed = True
            return True

        if not body.get("stream"):
            if script.hang:
                await _forever()
            # A whole answer takes as long as its stream would have.
            delay = script.ttft_s + script.inter_token_s * max(sent - 1, 0)
            if delay > 0:
                await asyncio.sleep(delay)
            if script.cut_after_tokens is not None:
                writer.transport.abort()
                return False
            if script.stall_after_tokens is not None:
                await _forever()
            content = "".join(tokens)
            response = completion_body(completion_id, created, model, content, finish, usage)
            writer.write(json_response(200, response, keep_alive))
            await writer.drain()
            record.first_token_at = time.monotonic()
            record.tokens_sent = len(tokens)
            record.completed = True
            return True

        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        encoder = ChunkEncoder(completion_id, created, model, include_usage)
        writer.write(stream_head(keep_alive))
        await writer.drain()
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
                writer.write(encoder.role())
                await writer.drain()
            elif script.inter_token_s > 0:
                due += script.inter_token_s
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)
            writer.write(encoder.content(tokens[i]))
            await writer.drain()
            if i == 0:
                record.first_token_at = time.monotonic()
            record.tokens_sent += 1
        if script.cut_after_tokens is not None:
            writer.transport.abort()
            return False
        if script.stall_after_tokens is not None:
            await _forever()
        if sent == 0:
            writer.write(encoder.role())
            await writer.drain()
        writer.write(encoder.finish(finish))
        await writer.drain()
        if include_usage and script.usage:
            writer.write(encoder.usage(usage))
            await writer.drain()
        writer.write(ChunkEncoder.DONE)
        await writer.drain()
        record.completed = True
        return True


def _parse_json(raw: bytes) -> dict[str, Any]:
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
