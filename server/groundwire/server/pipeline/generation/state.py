"""One answer's state, from the request to the log line: its deadline, timings, sources,
route plan, ledger and outcome.

The pipeline opens one :class:`AnswerState` per Generate call and hands that one object to
every step (grounding, the cache, the answerer, the degraded answer, the end frame and the
accounting), so a step's signature says which answer it works on, not which of its pieces.
"""

from __future__ import annotations

import time

from groundwire.server.pipeline.generation.ledger import Ledger
from groundwire.server.pipeline.generation.routing import RoutePlan
from groundwire.server.pipeline.generation.types import (
    ZERO_USAGE,
    End,
    Finish,
    GenerationRequest,
    Route,
    SourceInfo,
    Timings,
    Usage,
)


class AnswerState:
    """Everything one answer carries. The answerer fills in the upstream part (attempts,
    first token, finish, the ledger); the pipeline the rest."""

    def __init__(
        self,
        tenant: str,
        request: GenerationRequest,
        plan: RoutePlan,
        *,
        loop_now: float,
        deadline_at: float | None,
    ) -> None:
        """``deadline_at`` is the loop time by which the caller must have the end frame; the
        request's own time limit counts from ``loop_now``."""
        self.tenant = tenant
        self.request = request
        self.plan = plan
        self.ledger = Ledger()
        self.started = time.perf_counter()
        soft = loop_now + request.time_limit_s if request.time_limit_s is not None else None
        limits = [t for t in (soft, deadline_at) if t is not None]
        #: The loop time the answer must end by (time limit or deadline, whichever is first).
        self.limit_at = min(limits) if limits else None
        #: Whether that limit is the caller's deadline (its end is then also a status).
        self.limit_is_deadline = self.limit_at is not None and self.limit_at == deadline_at
        self.sources: tuple[SourceInfo, ...] = ()
        self.route: Route | None = None
        self.retrieval_s = 0.0
        self.cache_s = 0.0
        self.first_token_at: float | None = None
        self.upstream_first_token_s = 0.0
        self.upstream_s = 0.0
        # The outcome, for the end frame and the log.
        self.finish: Finish | None = None
        self.final_model = ""
        self.attempts = 0
        self.continued = False
        self.detail = ""
        #: Why the answer ended abnormally, raised after the end frame (non-OK status).
        self.error: Exception | None = None

    def first_token(self) -> None:
        """Note the first delta's time (later calls keep the first)."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def fail(self, finish: Finish, detail: str, error: Exception) -> None:
        """End the answer abnormally: the end frame says ``finish`` and ``detail``, then
        ``error`` becomes the call's status."""
        self.finish = finish
        self.detail = detail
        self.error = error

    def spent(self) -> tuple[Usage, int]:
        """What the upstream consumed (tokens, cost in micros), cut-short attempts included;
        a cache hit consumed nothing."""
        if self.route is Route.CACHE:
            return ZERO_USAGE, 0
        return self.ledger.usage(), self.ledger.cost_micros()

    def elapsed(self) -> tuple[float, float | None]:
        """Seconds since the answer began, and to its first delta (None: none yet)."""
        now = time.perf_counter()
        first = self.first_token_at - self.started if self.first_token_at else None
        return now - self.started, first

    def end(self, currency: str, *, charged: bool = True) -> End:
        """The end frame; ``charged=False`` for answers no model produced (cache, degraded)."""
        assert self.finish is not None
        usage, cost = self.spent() if charged else (ZERO_USAGE, 0)
        total, first = self.elapsed()
        return End(
            finish=self.finish,
            usage=usage,
            cost_micros=cost,
            currency=currency,
            timings=Timings(
                retrieval_s=self.retrieval_s,
                cache_s=self.cache_s,
                upstream_first_token_s=self.upstream_first_token_s,
                first_token_s=first or 0.0,
                total_s=total,
                overhead_s=max(0.0, total - self.upstream_s),
            ),
            attempts=self.attempts,
            continued_after_failure=self.continued,
            final_model=self.final_model,
            detail=self.detail,
        )
