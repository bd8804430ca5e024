"""How much a benchmark run measures: levels, calls per level, rounds and their order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# At high concurrency a level needs several calls per worker, or its slices are all ramp-up
# and drain and no steady state.
CALLS_PER_WORKER = 4


@dataclass(frozen=True)
class Plan:
    """The shape of every scenario's measurement, the same for Retrieve and Generate."""

    levels: tuple[int, ...]
    requests: int  # calls per variant per level, at least
    rounds: int
    max_seconds: float  # per variant per level, spread over the rounds

    def calls_per_level(self, concurrency: int) -> int:
        """Calls per variant at one level: ``requests``, and at least ``CALLS_PER_WORKER`` per
        worker."""
        return max(self.requests, CALLS_PER_WORKER * concurrency)

    def calls_per_slice(self, concurrency: int) -> int:
        """Calls per variant per round (the level's calls spread over the rounds)."""
        return max(1, math.ceil(self.calls_per_level(concurrency) / self.rounds))

    @property
    def slice_seconds(self) -> float:
        """How long one slice may keep starting calls."""
        return self.max_seconds / self.rounds

    def calls_per_variant(self) -> int:
        """Planned calls per variant over all levels (for the progress bar)."""
        return sum(self.calls_per_slice(c) * self.rounds for c in self.levels)


def rotation(variants: Sequence[T], round_number: int) -> list[T]:
    """The order of the variants in one round: shifted by one each round, so drift in the
    machine's load falls on every variant alike (round 0 keeps the given order)."""
    if not variants:
        return []
    shift = round_number % len(variants)
    return [*variants[shift:], *variants[:shift]]
