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
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from groundwire.clients.errors import DeadlineExceededError
from groundwire.clients.ports import SparseEncoder
from groundwire.server.overload import LagJudge
from groundwire.server.pipeline.generation import metrics
from groundwire.server.pipeline.generation.answer_cache import AnswerCache, AnswerLookup
from groundwire.server.pipeline.generation.answering import Answerer, Outcome, Sampling
from groundwire.server.pipeline.generation.catalog import Tier
from groundwire.server.pipeline.generation.citations import CitationTracker
from groundwire.server.pipeline.generation.events import (
    Delta,
    End,
    Finish,
    GenerationEvent,
    Route,
    SourceInfo,
    Start,
    Timings,
    Usage,
)
from groundwire.server.pipeline.generation.extractive import extractive_answer
from groundwire.server.pipeline.generation.prompt import PromptBuilder
from groundwire.server.pipeline.generation.routing import ModelRoutes
from groundwire.server.pipeline.retrieval import RetrievalQuery
from groundwire.server.pipeline.retriever import Retriever

log = logging.getLogger("groundwire.answers")
_WORDS = re.compile(r"\S+\s*")
NO_SOURCES_ANSWER = "No passages in the corpus match this question."
ZERO_USAGE = Usage(0, 0, None)


@dataclass(frozen=True)
class Passage:
    """A caller-supplied grounding passage."""

    text: str
    id: str = ""
    title: str = ""
    source_uri: str = ""


@dataclass(frozen=True)
class GenerationRequest:
    """A validated Generate request: grounding is ``passages`` or else ``retrieval``."""

    query: str
    retrieval: RetrievalQuery | None
    passages: tuple[Passage, ...] | None
    tier: Tier
    model: str | None
    sampling: Sampling
    time_limit_s: float | None = None
    use_cache: bool = True

    @property
    def choice(self) -> str:
        """What the caller chose, as part of the answer cache key."""
        return f"model:{self.model}" if self.model else f"tier:{self.tier.value}"


class TenantBudget(Protocol):
    """What generation needs of the tenant quotas (``groundwire.server.quotas.Quotas``)."""

    async def check_generation(self, tenant: str) -> None:
        """Raise QuotaExceededError when the tenant's token or spend window is spent."""

    def charge_generation(self, tenant: str, tokens: int, cost_micros: int) -> None:
        """Charge what an answer used; never raises, never waits."""


class _Clock:
    """The answer's timings and the loop time it must end by."""

    def __init__(self, limit_at: float | None, limit_is_deadline: bool) -> None:
        self.started = time.perf_counter()
        self.limit_at = limit_at
        self.limit_is_deadline = limit_is_deadline
        self.retrieval_s = 0.0
        self.cache_s = 0.0


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
        loop_now = asyncio.get_running_loop().time()
        soft = loop_now + request.time_limit_s if request.time_limit_s is not None else None
        limits = [t for t in (soft, deadline_at) if t is not None]
        limit_at = min(limits) if limits else None
        clock = _Clock(limit_at, limit_at is not None and limit_at == deadline_at)
        outcome = Outcome()
        answerer: Answerer | None = None
        route: Route | None = None
        try:
            sources = await self._ground(tenant, request, clock)
            if not sources or self._routes.catalog.empty:
                route = Route.DEGRADED
                reason = "" if sources else NO_SOURCES_ANSWER
                async for event in self._degraded(request, sources, clock, outcome, reason):
                    yield event
                return
            answerer = self._answerer(request, sources, clock)
            outcome = answerer.outcome
            lookup = await self._lookup(tenant, request, answerer, clock)
            if lookup is not None and lookup.hit is not None:
                route = Route.CACHE
                async for event in self._replay(lookup, clock, outcome):
                    yield event
                return
            produced: list[GenerationEvent] = []  # kept for the answer cache only
            async with contextlib.aclosing(answerer.events()) as events:
                async for event in events:
                    if isinstance(event, Start):
                        route = event.route
                    if lookup is not None:
                        produced.append(event)
                    yield event
            if outcome.finish is None:  # every route failed before its first token
                route = Route.DEGRADED
                detail = "; ".join(answerer.failures)
                async for event in self._degraded(request, sources, clock, outcome, "", detail):
                    yield event
                return
            end = self._end(clock, outcome, answerer.ledger.usage(), answerer.ledger.cost_micros())
            yield end
            if lookup is not None:
                self._answers.store(tenant, lookup, [*produced, end])
            if outcome.error is not None:
                raise outcome.error
            if outcome.finish is Finish.TIME_LIMIT and clock.limit_is_deadline:
                raise DeadlineExceededError("the call's deadline ended the answer")
        except (asyncio.CancelledError, GeneratorExit):
            outcome.finish = Finish.CANCELLED
            raise
        finally:
            # Also when the caller went away before the end frame: what the upstream produced
            # is paid for, so it is logged and counted.
            ledger = answerer.ledger if answerer is not None and route is not Route.CACHE else None
            usage = ledger.usage() if ledger is not None else ZERO_USAGE
            cost = ledger.cost_micros() if ledger is not None else 0
            self._record(route, outcome, usage, cost, clock)
            if self._budget is not None:
                # The same figures as the log line: partial, cancelled and continued answers
                # included; cache hits and degraded answers used nothing and charge nothing.
                tokens = usage.prompt_tokens + usage.completion_tokens
                self._budget.charge_generation(tenant, tokens, cost)

    def _answerer(
        self, request: GenerationRequest, sources: Sequence[SourceInfo], clock: _Clock
    ) -> Answerer:
        catalog = self._routes.catalog
        return Answerer(
            plan=self._routes.plan(request.tier, request.model),
            prompts=self._prompts,
            query=request.query,
            sources=sources,
            sampling=request.sampling,
            limit_at=clock.limit_at,
            long_context_model=catalog.long_context_model,
            coalesce=self._coalesce,
            lag=self.lag_judge,
        )

    async def _ground(
        self, tenant: str, request: GenerationRequest, clock: _Clock
    ) -> list[SourceInfo]:
        if request.passages is not None:
            return [
                SourceInfo(i, p.id or f"passage-{i}", "", p.title, p.source_uri, 0.0, p.text)
                for i, p in enumerate(request.passages, start=1)
            ]
        assert request.retrieval is not None
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(clock.limit_at):
                result = await self._retrieval.retrieve(tenant, request.retrieval)
        except TimeoutError:
            raise DeadlineExceededError("the time limit passed during retrieval") from None
        clock.retrieval_s = time.perf_counter() - started
        return [
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
        ]

    async def _lookup(
        self, tenant: str, request: GenerationRequest, answerer: Answerer, clock: _Clock
    ) -> AnswerLookup | None:
        sampling = request.sampling
        if not self._answers.applies(sampling.temperature, request.use_cache):
            return None
        prompt = answerer.first_prompt()
        if prompt is None:
            return None
        key = self._answers.key(
            tenant,
            request.choice,
            prompt.messages,
            {
                "temperature": sampling.temperature,
                "max_tokens": sampling.max_output_tokens,
                "stop": list(sampling.stop),
            },
        )
        lookup = await self._answers.lookup(tenant, key)
        clock.cache_s = lookup.seconds
        return lookup

    async def _replay(
        self, lookup: AnswerLookup, clock: _Clock, outcome: Outcome
    ) -> AsyncIterator[GenerationEvent]:
        hit = lookup.hit
        assert hit is not None
        yield Start(Route.CACHE, hit.model, 0, hit.sources, cache_hit=True)
        for event in hit.body:
            if isinstance(event, Delta) and outcome.first_token_at is None:
                outcome.first_token_at = time.perf_counter()
            yield event
        outcome.finish = hit.finish
        yield self._end(clock, outcome, ZERO_USAGE, 0)

    async def _degraded(
        self,
        request: GenerationRequest,
        sources: Sequence[SourceInfo],
        clock: _Clock,
        outcome: Outcome,
        text: str,
        detail: str = "",
    ) -> AsyncIterator[GenerationEvent]:
        """The extractive answer, streamed like a model's: a word per delta, citations as
        their markers complete."""
        if not text:
            text = extractive_answer(
                request.query, [(s.number, s.text) for s in sources], self._sparse
            )
        yield Start(Route.DEGRADED, "", 0, tuple(sources))
        tracker = CitationTracker({s.number: s.chunk_id for s in sources})
        for word in _WORDS.findall(text):
            if outcome.first_token_at is None:
                outcome.first_token_at = time.perf_counter()
            yield Delta(word)
            for citation in tracker.feed(word):
                yield citation
        outcome.finish = Finish.DEGRADED
        outcome.detail = detail or (
            "no language model is configured" if self._routes.catalog.empty else ""
        )
        outcome.final_model = ""
        yield self._end(clock, outcome, ZERO_USAGE, 0)

    def _end(self, clock: _Clock, outcome: Outcome, usage: Usage, cost: int) -> End:
        assert outcome.finish is not None
        total = time.perf_counter() - clock.started
        first = outcome.first_token_at - clock.started if outcome.first_token_at else 0.0
        return End(
            finish=outcome.finish,
            usage=usage,
            cost_micros=cost,
            currency=self._routes.catalog.currency,
            timings=Timings(
                retrieval_s=clock.retrieval_s,
                cache_s=clock.cache_s,
                upstream_first_token_s=outcome.upstream_first_token_s,
                first_token_s=first,
                total_s=total,
                overhead_s=max(0.0, total - outcome.upstream_s),
            ),
            attempts=outcome.attempts,
            continued_after_failure=outcome.continued,
            final_model=outcome.final_model,
            detail=outcome.detail,
        )

    def _record(
        self, route: Route | None, outcome: Outcome, usage: Usage, cost: int, clock: _Clock
    ) -> None:
        total = time.perf_counter() - clock.started
        first = outcome.first_token_at - clock.started if outcome.first_token_at else None
        finish = outcome.finish.value if outcome.finish else "error"
        route_name = route.value if route else "none"
        model = outcome.final_model
        metrics.ANSWERS.labels(route_name, finish).inc()
        if first is not None:
            metrics.FIRST_TOKEN.labels(route_name).observe(first)
        if model:
            metrics.TOKENS.labels(model, "input").inc(usage.prompt_tokens)
            metrics.TOKENS.labels(model, "output").inc(usage.completion_tokens)
            metrics.COST.labels(model, self._routes.catalog.currency).inc(cost)
        log.info(
            "answer",
            extra={
                "model": model,
                "route": route_name,
                "finish": finish,
                "attempts": outcome.attempts,
                "continued_after_failure": outcome.continued,
                "latency_ms": round(total * 1000, 3),
                "ttft_ms": round(first * 1000, 3) if first is not None else None,
                "tokens_in": usage.prompt_tokens,
                "tokens_out": usage.completion_tokens,
                "tokens_cached": usage.cached_tokens,
                "cost_micros": cost,
                "currency": self._routes.catalog.currency,
                "detail": outcome.detail or None,
            },
        )
