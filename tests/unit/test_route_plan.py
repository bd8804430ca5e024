"""RoutePlan.peek: the head of a request's chain, read without touching any breaker (the
answer cache keys on its prompt before any model is called)."""

from __future__ import annotations

from groundwire.clients.breaker import BreakerState, CircuitBreaker
from groundwire.clients.llm import OpenAIChatClient
from groundwire.server.pipeline.generation.catalog import BUILTIN_MODELS, Catalog
from groundwire.server.pipeline.generation.routing import ModelRoutes
from groundwire.server.pipeline.generation.types import Route, Tier


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def routes(clock: Clock) -> ModelRoutes:
    models = {m.name: m for m in BUILTIN_MODELS[:3]}  # flash, pro, qwen
    catalog = Catalog(
        models=models,
        tiers={Tier.STANDARD: ("deepseek-v4-flash", "qwen3-32b")},
    )
    client = OpenAIChatClient("http://127.0.0.1:9")  # never called
    breakers = {
        name: CircuitBreaker(name, failure_threshold=1, reset_timeout_s=5, clock=clock)
        for name in models
    }
    return ModelRoutes(catalog, dict.fromkeys(models, client), breakers)


def test_peek_leaves_a_half_open_breakers_one_probe_to_the_call() -> None:
    clock = Clock()
    model_routes = routes(clock)
    head = model_routes.breakers["deepseek-v4-flash"]
    head.record_failure()
    clock.now = 10.0
    assert head.state is BreakerState.HALF_OPEN
    plan = model_routes.plan(Tier.STANDARD, None)
    for _ in range(3):
        peeked = plan.peek()
        assert peeked is not None and peeked[0].name == "deepseek-v4-flash"
        assert peeked[1] is Route.PRIMARY
    # The probe is still free: the call takes it, and a second taker is refused.
    taken = plan.next()
    assert taken is not None and taken[0].name == "deepseek-v4-flash"
    assert not head.try_acquire()


def test_peek_skips_what_was_tried_and_is_none_at_the_end() -> None:
    plan = routes(Clock()).plan(Tier.STANDARD, None)
    first = plan.next()
    assert first is not None
    plan.record_failure(first[0], "HTTP 500", None)
    peeked = plan.peek()
    assert peeked is not None and (peeked[0].name, peeked[1]) == ("qwen3-32b", Route.FALLBACK)
    second = plan.next()
    assert second is not None
    plan.record_success(second[0])
    assert plan.peek() is None
