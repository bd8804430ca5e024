"""Accounting for one answer: tokens and cost summed over its upstream attempts.

When an attempt ends before the upstream reports usage (cancelled, cut, timed out), its
prompt tokens are counted locally and its completion tokens are the content events
received: we still pay for them, so they are still accounted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from groundwire.clients.chat import TokenUsage
from groundwire.server.pipeline.generation.catalog import ModelSpec
from groundwire.server.pipeline.generation.types import Usage


@dataclass
class AttemptUsage:
    """What one attempt consumed."""

    spec: ModelSpec
    estimate_prompt_tokens: Callable[[], int]
    reported: TokenUsage | None = None
    pieces: int = 0

    @property
    def prompt_tokens(self) -> int:
        reported = self.reported.prompt_tokens if self.reported else None
        return reported if reported is not None else self.estimate_prompt_tokens()

    @property
    def completion_tokens(self) -> int:
        reported = self.reported.completion_tokens if self.reported else None
        return reported if reported is not None else self.pieces

    @property
    def cached_tokens(self) -> int | None:
        return self.reported.cached_tokens if self.reported else None


class Ledger:
    """The attempts of one answer that consumed tokens."""

    def __init__(self) -> None:
        self.attempts: list[AttemptUsage] = []

    def open(self, spec: ModelSpec, estimate_prompt_tokens: Callable[[], int]) -> AttemptUsage:
        """Start accounting a new attempt."""
        attempt = AttemptUsage(spec, estimate_prompt_tokens)
        self.attempts.append(attempt)
        return attempt

    def usage(self) -> Usage:
        """Tokens summed over the attempts that produced output."""
        used = [a for a in self.attempts if a.pieces or a.reported]
        cached = [a.cached_tokens for a in used if a.cached_tokens is not None]
        return Usage(
            prompt_tokens=sum(a.prompt_tokens for a in used),
            completion_tokens=sum(a.completion_tokens for a in used),
            cached_tokens=sum(cached) if cached else None,
        )

    def cost_micros(self) -> int:
        """The cost at catalog prices, rounded half up to whole micros once, at the end."""
        numerator = sum(
            a.spec.cost_micros_numerator(a.prompt_tokens, a.completion_tokens, a.cached_tokens or 0)
            for a in self.attempts
            if a.pieces or a.reported
        )
        return (numerator + 500_000) // 1_000_000
