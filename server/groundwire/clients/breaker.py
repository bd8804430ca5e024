"""A circuit breaker: stop calling a dependency that keeps failing (an LLM model, Redis).

A pure state machine over an injected clock. It does no I/O and never sleeps, so asyncio code
can consult it inline and tests can drive time by hand.

CLOSED lets every call through and counts consecutive failures; at the threshold it turns
OPEN and refuses calls for ``reset_timeout_s``. After that it is HALF_OPEN: one probe call is
let through; its success closes the breaker, its failure opens it for another full period.
An upstream's ``Retry-After`` opens it at once for as long as the upstream asked, but never
longer than ``max_open_s``: a hint of ``inf`` (or a year) must not park a dependency forever,
whatever the client that read it did. The breaker remembers whether a rate limit opened it,
so a router can send the traffic a rate-limited model would have taken where a direct 429
would (the economy model), rather than treating it like a model that is down.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable

# The longest a Retry-After may hold a breaker open; the app passes its configured cap.
DEFAULT_MAX_OPEN_S = 300.0


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
        max_open_s: float = DEFAULT_MAX_OPEN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Raise ValueError unless ``failure_threshold >= 1`` and ``reset_timeout_s`` and
        ``max_open_s`` (the cap on a Retry-After's open period) are finite and ``>= 0``."""
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if not (math.isfinite(reset_timeout_s) and reset_timeout_s >= 0):
            raise ValueError(f"reset_timeout_s must be finite and >= 0, got {reset_timeout_s}")
        if not (math.isfinite(max_open_s) and max_open_s >= 0):
            raise ValueError(f"max_open_s must be finite and >= 0, got {max_open_s}")
        self.name = name
        self._threshold = failure_threshold
        self._reset_timeout_s = reset_timeout_s
        self._max_open_s = max_open_s
        self._clock = clock
        self._failures = 0
        # Set while OPEN or HALF_OPEN; which of the two is decided against the clock on read.
        self._open_until: float | None = None
        self._probe_in_flight = False
        # Whether the current open period was set by a rate limit (HTTP 429).
        self._rate_limited = False

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
    def rate_limited(self) -> bool:
        """True while the breaker refuses calls because a rate limit opened it (OPEN, or
        HALF_OPEN with its probe out), False when it is closed or was opened by failures."""
        state = self.state
        refusing = state is BreakerState.OPEN or (
            state is BreakerState.HALF_OPEN and self._probe_in_flight
        )
        return refusing and self._rate_limited

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
        self._rate_limited = False

    def record_failure(
        self, *, retry_after_s: float | None = None, rate_limited: bool = False
    ) -> None:
        """A call failed; ``rate_limited`` says it was an HTTP 429. With ``retry_after_s``
        (the upstream's Retry-After) the breaker opens at once until
        ``now + min(max(retry_after_s, 0), max_open_s)`` (NaN counts as 0, ``inf`` as the
        cap), or stays open longer if it already was, whatever the failure count."""
        now = self._clock()
        state = self._state_at(now)
        self._failures += 1
        self._probe_in_flight = False
        if retry_after_s is not None:
            wait = retry_after_s if retry_after_s > 0 else 0.0  # NaN fails the test: 0
            until = now + min(wait, self._max_open_s)
            if state is BreakerState.OPEN and self._open_until is not None:
                until = max(until, self._open_until)
            self._open_until = until
            self._rate_limited = rate_limited or (state is BreakerState.OPEN and self._rate_limited)
        elif state is BreakerState.HALF_OPEN or (
            state is BreakerState.CLOSED and self._failures >= self._threshold
        ):
            self._open_until = now + self._reset_timeout_s
            self._rate_limited = rate_limited
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
