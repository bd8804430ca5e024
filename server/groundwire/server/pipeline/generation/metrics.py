"""Prometheus metrics of generation: answers, time to first token, tokens, cost, attempts
and the breakers' states."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from groundwire.clients import gauges
from groundwire.clients.breaker import BreakerState, CircuitBreaker

ANSWERS = Counter(
    "groundwire_answers_total", "Finished answers by route and finish reason.", ["route", "finish"]
)
FIRST_TOKEN = Histogram(
    "groundwire_answer_first_token_seconds",
    "From the request reaching the pipeline to the first delta, by route.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TOKENS = Counter(
    "groundwire_llm_tokens_total",
    "Tokens by model and direction (input, output), including answers cut short.",
    ["model", "direction"],
)
COST = Counter(
    "groundwire_llm_cost_micros_total",
    "What answers cost at catalog prices, in micros of the currency.",
    ["model", "currency"],
)
# Each worker process has its own breakers: with several, every live worker's state is shown
# (labelled by pid; "liveall"), since the states are codes, not amounts to add up or compare.
BREAKER_STATE = Gauge(
    "groundwire_llm_breaker_state",
    "Each model's circuit breaker: 0 closed, 1 open, 2 half-open.",
    ["model"],
    multiprocess_mode="liveall",
)
_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}


def export_breakers(breakers: Mapping[str, CircuitBreaker]) -> None:
    """Make the breaker gauge read each breaker's state at scrape time."""
    for name, breaker in breakers.items():
        gauges.read_from(
            BREAKER_STATE.labels(name),
            lambda b=breaker: float(_STATE_VALUE[b.state]),  # type: ignore[misc]
        )
