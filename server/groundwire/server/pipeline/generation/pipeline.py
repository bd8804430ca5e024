"""Generation: ground → cache → route → stream → cite → account.

The pipeline yields the frames of one answer as domain events: a start, deltas and
citations, and always an end (an error after the first delta is raised after the end
event, so the caller also gets a non-OK status). With no model configured, every model
down, or nothing to ground the answer in, the answer is a degraded, extractive one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol

from groundwire.clients.errors import DeadlineExceededError
from groundwire.clients.ports import SparseEncoder
from groundwire.server.overload import LagJudge
from groundwire.server.pipeline.generation import metrics
from groundwire.server.pipeline.generation.answer_cache import AnswerCache, AnswerLookup
from groundwire.server.pipeline.generation.answering import Answerer
from groundwire.server.pipeline.generation.citations import CitationTracker
from groundwire.server.pipeline.generation.extractive import extractive_answer
from groundwire.server.pipeline.generation.prompt import PromptBuilder
from groundwire.server.pipeline.generation.routing import ModelRoutes
from groundwire.server.pipeline.generation.state import AnswerState
from groundwire.server.pipeline.generation.types import (
    Delta,
    Finish,
    GenerationEvent,
    GenerationRequest,
    Route,
    SourceInfo,
    Start,
)
from groundwire.server.pipeline.retriever import Retriever

log = logging.getLogger("groundwire.answers")
_WORDS = re.compile(r"\S+\s*")
NO_SOURCES_ANSWER = "No passages in the corpus match this question."


class TenantBudget(Protocol):
    """What generation needs of the tenant quotas (``groundwire.server.quotas.Quotas``)."""

    async def check_generation(self, tenant: str) -> None:
        """Raise QuotaExceededError when the tenant's token or spend window is spent."""

    def charge_generation(self, tenant: str, tokens: int, cost_micros: int) -> None:
        """Charge what an answer used; never raises, never waits."""


class GenerationPipeline:
    """Answers questions from a tenant's corpus or from passages the caller supplies."""

    def __init__(
        self,
        *,
        retrieval: Retriever,
        routes: ModelRoutes,
        prompts: PromptBuilder,
        answers: AnswerCache,
        sparse: SparseEncoder,
        coalesce_deltas: bool = True,
        budget: TenantBudget | None = None,
        lag_judge: LagJudge | None = None,
    ) -> None:
        """``coalesce_deltas=False`` relays each upstream chunk as its own delta; ``budget``
        (the tenant quotas) refuses answers once a token or spend window is spent and is
        charged what each answer used; ``lag_judge`` keeps timeouts caused by this process's
        own lag off the models' breakers (see :attr:`lag_judge`)."""
        #: Tells an upstream timeout caused by this process's event-loop lag from the model's
        #: (None: every timeout is the model's). Settable: the server that owns the loop's
        #: lag monitor hands it in after the pipelines are built.
        self.lag_judge = lag_judge
        self._coalesce = coalesce_deltas
        self._budget = budget
        self._retrieval = retrieval
        self._routes = routes
        self._prompts = prompts
        self._answers = answers
        self._sparse = sparse

    @property
    def routes(self) -> ModelRoutes:
        """The catalog, clients and breakers."""
        return self._routes

    async def generate(
        self, tenant: str, request: GenerationRequest, *, deadline_at: float | None = None
    ) -> AsyncGenerator[GenerationEvent]:
        """The events of one answer. ``deadline_at`` is the loop time by which the caller must
        have the end frame (its gRPC deadline less a margin)."""
        if self._budget is not None:
            await self._budget.check_generation(tenant)  # refused before any work: no answer
        answer = AnswerState(
            tenant,
            request,
            self._routes.plan(request.tier, request.model),
            loop_now=asyncio.get_running_loop().time(),
            deadline_at=deadline_at,
        )
        try:
            answer.sources = await self._ground(answer)
            if not answer.sources or self._routes.catalog.empty:
                reason = "" if answer.sources else NO_SOURCES_ANSWER
                async for event in self._degraded(answer, reason):
                    yield event
                return
            answerer = Answerer(answer, self._prompts, coalesce=self._coalesce, lag=self.lag_judge)
            lookup = await self._lookup(answer, answerer)
            if lookup is not None and lookup.hit is not None:
                async for event in self._replay(answer, lookup):
                    yield event
                return
            produced: list[GenerationEvent] = []  # kept for the answer cache only
            async with contextlib.aclosing(answerer.events()) as events:
                async for event in events:
                    if isinstance(event, Start):
                        answer.route = event.route
                    if lookup is not None:
                        produced.append(event)
                    yield event
            if answer.finish is None:  # every route failed before its first token
                async for event in self._degraded(answer, "", "; ".join(answer.plan.failures)):
                    yield event
                return
            end = answer.end(self._routes.catalog.currency)
            yield end
            if lookup is not None:
                self._answers.store(tenant, lookup, [*produced, end])
            if answer.error is not None:
                raise answer.error
            if answer.finish is Finish.TIME_LIMIT and answer.limit_is_deadline:
                raise DeadlineExceededError("the call's deadline ended the answer")
        except (asyncio.CancelledError, GeneratorExit):
            answer.finish = Finish.CANCELLED
            raise
        finally:
            # Also when the caller went away before the end frame: what the upstream produced
            # is paid for, so it is logged and counted.
            self._record(answer)

    async def _ground(self, answer: AnswerState) -> tuple[SourceInfo, ...]:
        request = answer.request
        if request.passages is not None:
            return tuple(
                SourceInfo(i, p.id or f"passage-{i}", "", p.title, p.source_uri, 0.0, p.text)
                for i, p in enumerate(request.passages, start=1)
            )
        assert request.retrieval is not None
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(answer.limit_at):
                result = await self._retrieval.retrieve(answer.tenant, request.retrieval)
        except TimeoutError:
            raise DeadlineExceededError("the time limit passed during retrieval") from None
        answer.retrieval_s = time.perf_counter() - started
        return tuple(
            SourceInfo(
                i,
                c.record.chunk_id,
                c.record.doc_id,
                c.record.title,
                c.record.source_uri,
                c.score,
                c.record.text,
            )
            for i, c in enumerate(result.chunks, start=1)
        )

    async def _lookup(self, answer: AnswerState, answerer: Answerer) -> AnswerLookup | None:
        request = answer.request
        sampling = request.sampling
        if not self._answers.applies(sampling.temperature, request.use_cache):
            return None
        prompt = answerer.head_prompt()
        if prompt is None:
            return None
        key = self._answers.key(
            answer.tenant,
            request.choice,
            prompt.messages,
            {
                "temperature": sampling.temperature,
                "max_tokens": sampling.max_output_tokens,
                "stop": list(sampling.stop),
            },
        )
        lookup = await self._answers.lookup(answer.tenant, key)
        answer.cache_s = lookup.seconds
        return lookup

    async def _replay(
        self, answer: AnswerState, lookup: AnswerLookup
    ) -> AsyncIterator[GenerationEvent]:
        hit = lookup.hit
        assert hit is not None
        answer.route = Route.CACHE
        yield Start(Route.CACHE, hit.model, 0, hit.sources, cache_hit=True)
        for event in hit.body:
            if isinstance(event, Delta):
                answer.first_token()
            yield event
        answer.finish = hit.finish
        yield answer.end(self._routes.catalog.currency, charged=False)

    async def _degraded(
        self, answer: AnswerState, text: str, detail: str = ""
    ) -> AsyncIterator[GenerationEvent]:
        """The extractive answer (or ``text``), streamed like a model's: a word per delta,
        citations as their markers complete."""
        answer.route = Route.DEGRADED
        sources = answer.sources
        if not text:
            text = extractive_answer(
                answer.request.query, [(s.number, s.text) for s in sources], self._sparse
            )
        yield Start(Route.DEGRADED, "", 0, sources)
        tracker = CitationTracker({s.number: s.chunk_id for s in sources})
        for word in _WORDS.findall(text):
            answer.first_token()
            yield Delta(word)
            for citation in tracker.feed(word):
                yield citation
        answer.finish = Finish.DEGRADED
        answer.detail = detail or (
            "no language model is configured" if self._routes.catalog.empty else ""
        )
        answer.final_model = ""
        yield answer.end(self._routes.catalog.currency, charged=False)

    def _record(self, answer: AnswerState) -> None:
        """Log the answer, count it, and charge the tenant what it used: partial, cancelled
        and continued answers included; cache hits and degraded answers used nothing."""
        usage, cost = answer.spent()
        if self._budget is not None:
            self._budget.charge_generation(
                answer.tenant, usage.prompt_tokens + usage.completion_tokens, cost
            )
        total, first = answer.elapsed()
        finish = answer.finish.value if answer.finish else "error"
        route = answer.route.value if answer.route else "none"
        model = answer.final_model
        currency = self._routes.catalog.currency
        metrics.ANSWERS.labels(route, finish).inc()
        if first is not None:
            metrics.FIRST_TOKEN.labels(route).observe(first)
        if model:
            metrics.TOKENS.labels(model, "input").inc(usage.prompt_tokens)
            metrics.TOKENS.labels(model, "output").inc(usage.completion_tokens)
            metrics.COST.labels(model, currency).inc(cost)
        log.info(
            "answer",
            extra={
                "model": model,
                "route": route,
                "finish": finish,
                "attempts": answer.attempts,
                "continued_after_failure": answer.continued,
                "latency_ms": round(total * 1000, 3),
                "ttft_ms": round(first * 1000, 3) if first is not None else None,
                "tokens_in": usage.prompt_tokens,
                "tokens_out": usage.completion_tokens,
                "tokens_cached": usage.cached_tokens,
                "cost_micros": cost,
                "currency": currency,
                "detail": answer.detail or None,
            },
        )
