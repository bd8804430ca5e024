"""One answer from the upstream models: attempts in route order until one produces its
first token, then the relay of its stream, continued on another model if it fails midway.

Retries happen only before the first token reaches the caller. After that, a failure is
either absorbed by a continuation (the partial answer as an assistant prefix) or reported in
the end frame; the stream is never silently truncated.

A timeout that fired while this process's own event loop lagged (see
:class:`~groundwire.server.overload.LagJudge`) is not the model's failure: its breaker is not
charged and no other model is tried, since the next one would wait behind the same loop.
Before the first token the answer ends as an OverloadedError (RESOURCE_EXHAUSTED: the mesh
retries another replica; degrading to snippets would hide the overload as an answer), after
it the end frame says so and the OverloadedError follows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator

from groundwire.clients.chat import ChatChunk, ChatRequest
from groundwire.clients.errors import DeadlineExceededError, LLMCallError, LLMUnavailableError
from groundwire.server.overload import LagJudge, OverloadedError
from groundwire.server.pipeline.generation.catalog import ModelSpec
from groundwire.server.pipeline.generation.citations import CitationTracker
from groundwire.server.pipeline.generation.ledger import AttemptUsage
from groundwire.server.pipeline.generation.prompt import Prompt, PromptBuilder
from groundwire.server.pipeline.generation.pump import ChunkPump
from groundwire.server.pipeline.generation.state import AnswerState
from groundwire.server.pipeline.generation.types import (
    UPSTREAM_FINISH,
    Delta,
    Finish,
    GenerationEvent,
    Route,
    Start,
)

log = logging.getLogger("groundwire.overload")


class _Attempt:
    """One upstream call in flight."""

    def __init__(self, spec: ModelSpec, route: Route, prompt: Prompt, pump: ChunkPump) -> None:
        self.spec = spec
        self.route = route
        self.prompt = prompt
        self.pump = pump
        self.started = time.perf_counter()
        self.usage: AttemptUsage | None = None


class Answerer:
    """Produces one answer's start, deltas and citations from the models of its route plan,
    recording attempts, tokens and how it ended in the answer's :class:`AnswerState` (the
    pipeline adds the end frame from it)."""

    def __init__(
        self,
        state: AnswerState,
        prompts: PromptBuilder,
        *,
        coalesce: bool = True,
        lag: LagJudge | None = None,
    ) -> None:
        """``state`` holds the question, sources, sampling, limit and route plan; ``lag``
        tells timeouts caused by this process's own lag from the model's (None: every
        timeout is the model's)."""
        self._state = state
        self._plan = state.plan
        self._sampling = state.request.sampling
        self._prompts = prompts
        self._coalesce = coalesce
        self._lag = lag
        self.text = ""
        self._current: _Attempt | None = None
        self._started: _Attempt | None = None  # the attempt whose first token was sent
        self._built: dict[str, Prompt | None] = {}

    def head_prompt(self) -> Prompt | None:
        """The prompt the first model in line would be sent (for the answer cache key)."""
        head = self._plan.peek()
        return self._build(head[0]) if head is not None else None

    def _build(self, spec: ModelSpec) -> Prompt | None:
        """The prompt fitted to ``spec``'s window, built once per model."""
        if spec.name not in self._built:
            self._built[spec.name] = self._prompts.build(
                self._state.request.query,
                self._state.sources,
                window=spec.context_window,
                max_output_tokens=self._max_tokens(spec),
            )
        return self._built[spec.name]

    async def events(self) -> AsyncGenerator[GenerationEvent]:
        """Start, deltas and citations. Ends without output when every route failed before
        its first token (the caller degrades); records how it went in the state either way."""
        try:
            first = await self._first_attempt()
            if first is None:
                return
            attempt, next_chunk = first
            chunk: ChatChunk | None = next_chunk
            self._started = attempt
            sources = attempt.prompt.sources
            tracker = CitationTracker({s.number: s.chunk_id for s in sources})
            yield Start(attempt.route, attempt.spec.name, self._state.attempts, sources)
            while chunk is not None:
                if chunk.text:
                    self.text += chunk.text
                    self._state.first_token()
                    yield Delta(chunk.text)
                    for citation in tracker.feed(chunk.text):
                        yield citation
                chunk = await self._next_chunk()
        finally:
            # Still open here only when our caller stopped reading (cancel, deadline).
            await self._close_current(release=True)

    async def _first_attempt(self) -> tuple[_Attempt, ChatChunk] | None:
        while (picked := self._plan.next()) is not None:
            spec, route = picked
            prompt = self._prompt_for(spec, route)
            if prompt is None:
                continue
            attempt = await self._call(spec, route, prompt)
            chunk = await self._first_chunk(attempt)
            if chunk is not None:
                return attempt, chunk
        return None

    def _prompt_for(self, spec: ModelSpec, route: Route) -> Prompt | None:
        """The prompt for ``spec``. When the whole prompt does not fit, the long-context model
        goes first (``spec`` stays next in line, to get fewer sources if that one fails)."""
        prompt = self._build(spec)
        whole = prompt is not None and len(prompt.sources) == len(self._state.sources)
        long_context = self._plan.long_context
        if not whole and spec.name != long_context and self._plan.available(long_context):
            self._plan.put_back(spec, route)
            self._plan.prefer(long_context, Route.LONG_CONTEXT)
            return None
        if prompt is None:
            self._plan.skip(spec, "the prompt does not fit its context window")
        return prompt

    def _max_tokens(self, spec: ModelSpec) -> int:
        return min(self._sampling.max_output_tokens, spec.max_output_tokens)

    async def _call(self, spec: ModelSpec, route: Route, prompt: Prompt) -> _Attempt:
        request = ChatRequest(
            model=spec.upstream_model,
            messages=prompt.messages,
            temperature=self._sampling.temperature,
            max_tokens=max(1, self._max_tokens(spec) - self._completion_so_far()),
            stop=self._sampling.stop,
        )
        self._state.attempts += 1
        attempt = _Attempt(
            spec,
            route,
            prompt,
            ChunkPump(self._plan.client(spec).stream(request), coalesce=self._coalesce),
        )
        self._current = attempt
        return attempt

    def _completion_so_far(self) -> int:
        return sum(a.completion_tokens for a in self._state.ledger.attempts)

    async def _first_chunk(self, attempt: _Attempt) -> ChatChunk | None:
        """The attempt's first output, or None after a failure (recorded, routed around).
        Raises DeadlineExceededError when the time limit comes first."""
        loop = asyncio.get_running_loop()
        limit_at = self._state.limit_at
        first_token_at = loop.time() + self._sampling.first_token_timeout_s
        until = first_token_at if limit_at is None else min(first_token_at, limit_at)
        try:
            async with asyncio.timeout_at(until):
                chunk = await attempt.pump.take()
        except TimeoutError:
            if limit_at is not None and loop.time() >= limit_at:
                await self._close_current(release=True)
                raise DeadlineExceededError(
                    "the time limit passed before the model's first token"
                ) from None
            timeout = LLMCallError("no first token in time", kind="first_token_timeout")
            await self._fail(attempt, timeout)
            return None
        except LLMCallError as exc:
            await self._fail(attempt, exc)
            return None
        if chunk is None:  # an empty stream that still ended properly
            chunk = ChatChunk(finish_reason="stop")
        self._state.upstream_first_token_s = time.perf_counter() - attempt.started
        messages = attempt.prompt.messages
        attempt.usage = self._state.ledger.open(
            attempt.spec, lambda: self._prompts.tokens(messages)
        )
        self._account(attempt, chunk)
        return chunk

    async def _fail(self, attempt: _Attempt, exc: LLMCallError, *, streaming: bool = False) -> None:
        """Close the attempt and charge its failure to the model, or raise OverloadedError
        (nothing charged) when it was a timeout of our own making. ``streaming``: the
        model's first output had arrived."""
        judge = self._lag
        if judge is not None and judge.excuses(
            exc,
            started=attempt.started,
            streaming=streaming,
            first_token_s=self._sampling.first_token_timeout_s,
        ):
            await self._close_current(release=True)
            log.warning(
                "timeout while this process lagged: not charged to the model",
                extra={"model": attempt.spec.name, "kind": exc.kind},
            )
            raise judge.error() from exc
        await self._close_current()
        rate_limited = exc.kind == "rate_limited"
        retry_after = exc.retry_after_s if rate_limited else None
        self._plan.record_failure(
            attempt.spec, _describe(exc), retry_after, rate_limited=rate_limited
        )

    def _account(self, attempt: _Attempt, chunk: ChatChunk) -> None:
        usage = attempt.usage
        assert usage is not None
        usage.pieces += chunk.pieces
        if chunk.usage is not None:
            usage.reported = chunk.usage
        if chunk.finish_reason is not None:
            self._state.finish = UPSTREAM_FINISH.get(chunk.finish_reason, Finish.STOP)
        self._state.final_model = attempt.spec.name

    async def _next_chunk(self) -> ChatChunk | None:
        """The next output of the current attempt (or of a continuation after it failed);
        None when the answer is over (the state's ``finish`` says how)."""
        attempt = self._current
        assert attempt is not None
        try:
            async with asyncio.timeout_at(self._state.limit_at):
                chunk = await attempt.pump.take()
        except TimeoutError:
            await self._close_current(release=True)
            self._state.finish = Finish.TIME_LIMIT
            return None
        except LLMCallError as exc:
            try:
                await self._fail(attempt, exc, streaming=True)
                return await self._continue_after(exc)
            except OverloadedError as behind:
                # After the first delta: the end frame reports it, the status follows.
                self._state.fail(Finish.UPSTREAM_ERROR, behind.message, behind)
                return None
        if chunk is None:
            self._plan.record_success(attempt.spec)
            await self._close_current()
            if self._state.finish is None:
                self._state.finish = Finish.STOP
            return None
        self._account(attempt, chunk)
        return chunk

    async def _continue_after(self, failure: LLMCallError) -> ChatChunk | None:
        """Continue the answer on the next model that can hold the same sources."""
        assert self._current is None
        while (picked := self._plan.next()) is not None:
            spec, route = picked
            assert self._started is not None
            prompt = self._started.prompt.continued(self.text)
            window = spec.context_window
            if not self._prompts.fits(
                prompt.messages, window=window, max_output_tokens=self._max_tokens(spec)
            ):
                self._plan.skip(spec, "cannot hold the sources and the answer so far")
                continue
            attempt = await self._call(spec, route, prompt)
            chunk = await self._first_chunk(attempt)
            if chunk is not None:
                self._state.continued = True
                return chunk
        self._state.fail(
            Finish.UPSTREAM_ERROR,
            "; ".join(self._plan.failures),
            LLMUnavailableError(
                f"the answer failed midway and no model could continue it ({_describe(failure)})"
            ),
        )
        return None

    async def _close_current(self, *, release: bool = False) -> None:
        """Close the attempt in flight (its connection too)."""
        attempt, self._current = self._current, None
        if attempt is None:
            return
        await attempt.pump.aclose()
        self._state.upstream_s += time.perf_counter() - attempt.started
        if release:
            self._plan.release(attempt.spec)


def _describe(exc: LLMCallError) -> str:
    if exc.status is not None:
        return f"HTTP {exc.status}"
    return exc.kind.replace("_", " ")
