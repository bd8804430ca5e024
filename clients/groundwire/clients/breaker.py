"""A circuit breaker: stop calling a dependency that keeps failing (an LLM model, Redis).

A pure state machine over an injected clock. It does no I/O and never sleeps, so asyncio code
can consult it inline and tests can drive time by hand.

CLOSED lets every call through and counts consecutive failures; at the threshold it turns
OPEN and refuses calls for ``reset_timeout_s``. After that it is HALF_OPEN: one probe call is
let through; its success closes the breaker, its failure opens it for another full period.
An upstream's ``Retry-After`` opens it at once for as long as the upstream asked.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.Enum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a single half-open probe.

    Every ``try_acquire`` that returns True must be followed by exactly one of
    ``record_success``, ``record_failure`` or ``release`` (use ``try``/``finally``): the
    probe slot is only freed by them, so a probe that never reports keeps the breaker
    half-open and refusing.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Raise ValueError unless ``failure_threshold >= 1`` and ``reset_timeout_s >= 0``."""
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if not reset_timeout_s >= 0:  # also rejects NaN
            raise ValueError(f"reset_timeout_s must be >= 0, got {reset_timeout_s}")
        self.name = name
        self._threshold = failure_threshold
        self._reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._failures = 0
        # Set while OPEN or HALF_OPEN; which of the two is decided against the clock on read.
        self._open_until: float | None = None
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker reads HALF_OPEN once its open period has passed."""
        return self._state_at(self._clock())

    @property
    def open_until(self) -> float | None:
        """The clock time the open period ends, while OPEN; None otherwise."""
        if self._state_at(self._clock()) is BreakerState.OPEN:
            return self._open_until
        return None

    @property
    def consecutive_failures(self) -> int:
        """Failures recorded since the last success."""
        return self._failures

    def try_acquire(self) -> bool:
        """Whether a call may go ahead now (when HALF_OPEN, only the one probe may)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        """A call succeeded: close the breaker and forget past failures."""
        self._failures = 0
        self._open_until = None
        self._probe_in_flight = False

    def record_failure(self, *, retry_after_s: float | None = None) -> None:
        """A call failed. With ``retry_after_s`` (an HTTP 429's Retry-After) the breaker opens
        at once until ``now + max(retry_after_s, 0)`` (NaN counts as 0), or stays open longer
        if it already was, whatever the failure count."""
        now = self._clock()
        state = self._state_at(now)
        self._failures += 1
        self._probe_in_flight = False
        if retry_after_s is not None:
            wait = retry_after_s if retry_after_s > 0 else 0.0  # NaN fails the test: 0
            until = now + wait
            if state is BreakerState.OPEN and self._open_until is not None:
                until = max(until, self._open_until)
            self._open_until = until
        elif state is BreakerState.HALF_OPEN or (
            state is BreakerState.CLOSED and self._failures >= self._threshold
        ):
            self._open_until = now + self._reset_timeout_s
        # A failure while OPEN is a call that started before the breaker opened: it tells us
        # nothing new, so it does not extend the open period.

    def release(self) -> None:
        """The acquired call ended with neither success nor failure (its caller cancelled):
        free the probe slot, change nothing else."""
        self._probe_in_flight = False

    def _state_at(self, now: float) -> BreakerState:
        if self._open_until is None:
            return BreakerState.CLOSED
        if now >= self._open_until:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.name!r}, state={self.state.value}, "
            f"consecutive_failures={self._failures})"
        )
