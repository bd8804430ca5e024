"""Routing: which model to try next, given the tier, the failures so far and the breakers.

A request's chain is its tier's models in order (an explicit model goes first, before its
tier's chain). HTTP 429 sends the next attempt to the economy model; a prompt too long for
a model sends it to the long-context model; an open breaker skips its model.

A breaker that a 429 opened is the same rate limit seen from a later request: that request
goes to the economy model too, as the direct 429 would have sent it, not down the standard
chain. All of this lives in :class:`RoutePlan`; the answerer only reports what happened.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from groundwire.clients.breaker import BreakerState, CircuitBreaker
from groundwire.clients.ports import ChatModel
from groundwire.server.pipeline.generation.catalog import Catalog, ModelSpec
from groundwire.server.pipeline.generation.types import Route, Tier


class ModelRoutes:
    """The catalog with one client and one circuit breaker per available model."""

    def __init__(
        self,
        catalog: Catalog,
        clients: Mapping[str, ChatModel],
        breakers: Mapping[str, CircuitBreaker],
    ) -> None:
        missing = set(catalog.models) - set(clients) | set(catalog.models) - set(breakers)
        if missing:
            raise ValueError(f"no client or breaker for {sorted(missing)}")
        self.catalog = catalog
        self.clients = clients
        self.breakers = breakers

    def plan(self, tier: Tier, model: str | None) -> RoutePlan:
        """A fresh plan for one request."""
        chain = self.catalog.chain(tier, model) or self.catalog.chain(Tier.STANDARD)
        catalog = self.catalog
        return RoutePlan(
            self, chain, economy=catalog.economy_model, long_context=catalog.long_context_model
        )

    async def close(self) -> None:
        """Close every endpoint's connection pool (clients may be shared between models)."""
        for client in {id(c): c for c in self.clients.values()}.values():
            await client.close()


class RoutePlan:
    """The models still to try for one request, in order, each with the route it serves.

    :meth:`next` acquires the model's breaker (a half-open breaker lets one probe through);
    the caller must then record a success or failure, or release it; :meth:`peek` only reads.
    ``economy`` is where rate-limited traffic goes (None: nowhere special, the chain
    continues); ``long_context`` is where a prompt too long for a model goes.
    """

    def __init__(
        self,
        routes: ModelRoutes,
        chain: tuple[str, ...],
        *,
        economy: str | None = None,
        long_context: str | None = None,
    ) -> None:
        self._routes = routes
        self._economy = economy
        #: The model prompts too long for another model go to (None: none).
        self.long_context = long_context
        self._queue: deque[tuple[str, Route]] = deque(
            (name, Route.PRIMARY if i == 0 else Route.FALLBACK) for i, name in enumerate(chain)
        )
        self.tried: list[str] = []
        self.failures: list[str] = []

    def peek(self) -> tuple[ModelSpec, Route] | None:
        """The first untried model in line and its route, touching no breaker: what the
        answer would be asked of first (its prompt keys the answer cache)."""
        for name, route in self._queue:
            if name not in self.tried:
                return self._routes.catalog.models[name], route
        return None

    def next(self) -> tuple[ModelSpec, Route] | None:
        """The next model to call and its route; None when every model is spent."""
        while self._queue:
            name, route = self._queue.popleft()
            if name in self.tried:
                continue
            breaker = self._routes.breakers[name]
            if not breaker.try_acquire():
                rate_limited = breaker.rate_limited
                self.failures.append(f"{name}: circuit open{' (rate limited)' * rate_limited}")
                self.tried.append(name)
                if rate_limited:
                    self._to_economy(name)
                continue
            self.tried.append(name)
            return self._routes.catalog.models[name], route
        return None

    def put_back(self, spec: ModelSpec, route: Route) -> None:
        """Return a model taken by :meth:`next` to the front, untried (its breaker released)."""
        self._routes.breakers[spec.name].release()
        self.tried.remove(spec.name)
        self._queue.appendleft((spec.name, route))

    def available(self, name: str | None) -> bool:
        """Whether ``name`` is an untried model of the catalog whose breaker is not open."""
        if name is None or name in self.tried or name not in self._routes.catalog.models:
            return False
        return self._routes.breakers[name].state is not BreakerState.OPEN

    def prefer(self, name: str | None, route: Route) -> bool:
        """Try ``name`` next (serving ``route``) when it is :meth:`available`."""
        if name is None or not self.available(name):
            return False
        self._queue.appendleft((name, route))
        return True

    def skip(self, spec: ModelSpec, reason: str) -> None:
        """Give up on a model taken by :meth:`next` without calling it (not its fault)."""
        self._routes.breakers[spec.name].release()
        self.failures.append(f"{spec.name}: {reason}")

    def record_failure(
        self,
        spec: ModelSpec,
        reason: str,
        retry_after_s: float | None,
        *,
        rate_limited: bool = False,
    ) -> None:
        """Count a failure against the model's breaker and remember why; a rate limit
        (``rate_limited``: HTTP 429) sends the next attempt to the economy model."""
        self._routes.breakers[spec.name].record_failure(
            retry_after_s=retry_after_s, rate_limited=rate_limited
        )
        self.failures.append(f"{spec.name}: {reason}")
        if rate_limited:
            self._to_economy(spec.name)

    def _to_economy(self, rate_limited_model: str) -> None:
        """Try the economy model next, unless it is the model that is rate limited."""
        if self._economy is not None and self._economy != rate_limited_model:
            self.prefer(self._economy, Route.ECONOMY)

    def record_success(self, spec: ModelSpec) -> None:
        """Count a success for the model's breaker."""
        self._routes.breakers[spec.name].record_success()

    def release(self, spec: ModelSpec) -> None:
        """The call ended neither way (cancelled, time limit): free the breaker's probe."""
        self._routes.breakers[spec.name].release()

    def client(self, spec: ModelSpec) -> ChatModel:
        """The client serving ``spec``."""
        return self._routes.clients[spec.name]
