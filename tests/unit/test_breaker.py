"""CircuitBreaker driven by a fake clock."""

from __future__ import annotations

import math

import pytest

from groundwire.clients.breaker import BreakerState, CircuitBreaker


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, threshold: int = 3, timeout: float = 10.0) -> CircuitBreaker:
    return CircuitBreaker(
        "model-a", failure_threshold=threshold, reset_timeout_s=timeout, clock=clock
    )


def state(breaker: CircuitBreaker) -> BreakerState:
    # Through a call, so mypy does not narrow the property across clock changes.
    return breaker.state


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure()


def test_starts_closed_and_lets_everything_through(clock: FakeClock) -> None:
    breaker = make(clock)

    assert breaker.name == "model-a"
    assert state(breaker) is BreakerState.CLOSED
    assert all(breaker.try_acquire() for _ in range(10))
    assert breaker.open_until is None
    assert breaker.consecutive_failures == 0


def test_opens_after_exactly_threshold_consecutive_failures(clock: FakeClock) -> None:
    breaker = make(clock, threshold=3)

    fail(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2
    assert breaker.try_acquire()

    fail(breaker, 1)
    assert state(breaker) is BreakerState.OPEN
    assert breaker.open_until == clock.now + 10.0
    assert breaker.consecutive_failures == 3


def test_a_success_in_between_resets_the_count(clock: FakeClock) -> None:
    breaker = make(clock, threshold=3)

    fail(breaker, 2)
    breaker.record_success()
    assert breaker.consecutive_failures == 0
    fail(breaker, 2)

    assert state(breaker) is BreakerState.CLOSED
    fail(breaker, 1)
    assert state(breaker) is BreakerState.OPEN


def test_refuses_while_open(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 3)

    clock.advance(9.999)
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.try_acquire()
    assert not breaker.try_acquire()


def test_half_opens_once_the_timeout_has_passed(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 3)

    clock.advance(10.0)

    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.open_until is None


def test_exactly_one_probe_while_half_open(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(10.0)

    assert breaker.try_acquire()
    assert not breaker.try_acquire()
    assert not breaker.try_acquire()
    clock.advance(1000.0)  # time alone does not free the probe slot
    assert not breaker.try_acquire()
    assert state(breaker) is BreakerState.HALF_OPEN


def test_probe_success_closes(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(10.0)
    assert breaker.try_acquire()

    breaker.record_success()

    assert state(breaker) is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.try_acquire()
    assert breaker.try_acquire()
    fail(breaker, 2)  # a fresh count: not open again until the threshold
    assert state(breaker) is BreakerState.CLOSED


def test_probe_failure_reopens_for_a_full_period(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(25.0)  # well past the first period
    assert breaker.try_acquire()

    breaker.record_failure()

    assert state(breaker) is BreakerState.OPEN
    assert breaker.open_until == clock.now + 10.0
    assert not breaker.try_acquire()
    clock.advance(9.5)
    assert state(breaker) is BreakerState.OPEN
    clock.advance(0.5)
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.try_acquire()  # the slot of the failed probe is free again


def test_release_frees_the_probe_without_changing_state(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(10.0)
    assert breaker.try_acquire()
    assert not breaker.try_acquire()

    breaker.release()

    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.consecutive_failures == 3
    assert breaker.try_acquire()
    assert not breaker.try_acquire()


def test_release_while_closed_changes_nothing(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.try_acquire()

    breaker.release()

    assert state(breaker) is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2


def test_retry_after_opens_at_once_for_that_long(clock: FakeClock) -> None:
    breaker = make(clock, threshold=5, timeout=10.0)

    breaker.record_failure(retry_after_s=42.0)

    assert state(breaker) is BreakerState.OPEN
    assert breaker.open_until == clock.now + 42.0
    assert breaker.consecutive_failures == 1
    assert not breaker.try_acquire()
    clock.advance(41.9)
    assert state(breaker) is BreakerState.OPEN
    clock.advance(0.1)
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.try_acquire()


def test_retry_after_shorter_than_the_reset_timeout_is_honoured(clock: FakeClock) -> None:
    breaker = make(clock, timeout=30.0)

    breaker.record_failure(retry_after_s=2.0)
    clock.advance(2.0)

    assert state(breaker) is BreakerState.HALF_OPEN


def test_retry_after_does_not_shorten_a_longer_open_period(clock: FakeClock) -> None:
    breaker = make(clock, timeout=10.0)
    fail(breaker, 3)
    until = breaker.open_until

    clock.advance(1.0)
    breaker.record_failure(retry_after_s=2.0)

    assert breaker.open_until == until
    clock.advance(8.9)
    assert state(breaker) is BreakerState.OPEN


def test_retry_after_lengthens_a_shorter_open_period(clock: FakeClock) -> None:
    breaker = make(clock, timeout=10.0)
    fail(breaker, 3)

    clock.advance(1.0)
    breaker.record_failure(retry_after_s=60.0)

    assert breaker.open_until == clock.now + 60.0


def test_retry_after_on_a_failed_probe_opens_for_that_long(clock: FakeClock) -> None:
    breaker = make(clock, timeout=10.0)
    fail(breaker, 3)
    clock.advance(10.0)
    assert breaker.try_acquire()

    breaker.record_failure(retry_after_s=3.0)

    assert breaker.open_until == clock.now + 3.0
    clock.advance(3.0)
    assert breaker.try_acquire()


@pytest.mark.parametrize("retry_after", [0.0, -5.0, math.nan])
def test_retry_after_zero_negative_or_nan_means_now(clock: FakeClock, retry_after: float) -> None:
    breaker = make(clock)

    breaker.record_failure(retry_after_s=retry_after)

    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.try_acquire()
    assert not breaker.try_acquire()


def test_a_straggler_failure_while_open_does_not_extend_the_period(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    until = breaker.open_until

    clock.advance(5.0)
    breaker.record_failure()

    assert breaker.open_until == until
    assert breaker.consecutive_failures == 4


def test_threshold_one_opens_on_the_first_failure(clock: FakeClock) -> None:
    breaker = make(clock, threshold=1, timeout=5.0)

    breaker.record_failure()

    assert state(breaker) is BreakerState.OPEN
    clock.advance(5.0)
    assert breaker.try_acquire()
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN


def test_zero_timeout_half_opens_immediately(clock: FakeClock) -> None:
    breaker = make(clock, threshold=1, timeout=0.0)

    breaker.record_failure()

    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.try_acquire()
    assert not breaker.try_acquire()


def test_uses_the_monotonic_clock_by_default() -> None:
    breaker = CircuitBreaker("model-b")

    assert state(breaker) is BreakerState.CLOSED
    assert "model-b" in repr(breaker)


@pytest.mark.parametrize(
    ("threshold", "timeout"), [(0, 1.0), (-1, 1.0), (1, -0.1), (1, math.nan), (1, math.inf)]
)
def test_rejects_invalid_arguments(threshold: int, timeout: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("m", failure_threshold=threshold, reset_timeout_s=timeout)


@pytest.mark.parametrize("max_open", [-1.0, math.nan, math.inf])
def test_rejects_an_unbounded_or_negative_max_open_period(max_open: float) -> None:
    with pytest.raises(ValueError, match="max_open_s"):
        CircuitBreaker("m", max_open_s=max_open)


@pytest.mark.parametrize("retry_after", [math.inf, 1e12, 301.0])
def test_a_retry_after_past_the_cap_opens_for_the_cap_only(
    clock: FakeClock, retry_after: float
) -> None:
    breaker = CircuitBreaker("m", max_open_s=300.0, clock=clock)

    breaker.record_failure(retry_after_s=retry_after, rate_limited=True)

    assert breaker.open_until == clock.now + 300.0
    clock.advance(300.0)
    assert breaker.try_acquire()  # the probe: the model is not parked forever


def test_remembers_whether_a_rate_limit_opened_it(clock: FakeClock) -> None:
    breaker = make(clock, threshold=2, timeout=10.0)
    assert not breaker.rate_limited

    breaker.record_failure(retry_after_s=5.0, rate_limited=True)
    assert breaker.rate_limited
    clock.advance(5.0)  # half-open: no longer refusing everything
    assert not breaker.rate_limited
    assert breaker.try_acquire()
    assert breaker.rate_limited  # the probe is out; the others are still held back
    breaker.record_success()
    assert not breaker.rate_limited

    fail(breaker, 2)  # opened by failures, not a rate limit
    assert state(breaker) is BreakerState.OPEN and not breaker.rate_limited
    breaker.record_failure(retry_after_s=60.0, rate_limited=True)  # a 429 lengthens it
    assert breaker.rate_limited


def test_a_429_without_retry_after_that_reaches_the_threshold_is_a_rate_limit(
    clock: FakeClock,
) -> None:
    breaker = make(clock, threshold=2)

    breaker.record_failure(rate_limited=True)
    breaker.record_failure(rate_limited=True)

    assert state(breaker) is BreakerState.OPEN and breaker.rate_limited
