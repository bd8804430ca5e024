"""The overload parts on their own: the in-flight bound's counting, the lag monitor's record
(by hand and on a real loop that the test blocks on purpose) and which timeouts the lag judge
may excuse."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from prometheus_client import REGISTRY

from groundwire.clients.errors import LLMCallError
from groundwire.server.overload import InflightBound, LagJudge, LoopLagMonitor, OverloadedError


class Clock:
    """perf_counter time, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_streams_and_unary_calls_are_bounded_apart() -> None:
    bound = InflightBound(max_streams=2, max_unary=1, retry_after_s=0.2)
    assert bound.try_enter(True) and bound.try_enter(True)
    assert not bound.try_enter(True)  # the third stream
    assert bound.try_enter(False)  # a unary call still comes in
    assert not bound.try_enter(False)
    assert (bound.streams, bound.unary) == (2, 1)  # refusals counted nothing
    bound.leave(True)
    assert bound.try_enter(True)
    for stream in (True, True, False):
        bound.leave(stream)
    assert (bound.streams, bound.unary) == (0, 0)


def test_no_bound_admits_everything() -> None:
    bound = InflightBound(max_streams=None, max_unary=None, retry_after_s=0.2)
    assert all(bound.try_enter(i % 2 == 0) for i in range(10_000))


def test_a_refusal_is_resource_exhausted_overloaded_with_a_retry_delay() -> None:
    refusal = InflightBound(max_streams=3, max_unary=9, retry_after_s=0.25).refusal(True)
    assert isinstance(refusal, OverloadedError)
    assert refusal.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal.reason == "ERROR_REASON_OVERLOADED"
    assert refusal.retry_after_s == 0.25
    assert "3 streams" in refusal.message


@pytest.mark.parametrize("bad", [0, -1])
def test_a_bound_below_one_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="max_streams"):
        InflightBound(max_streams=bad, max_unary=None, retry_after_s=0.2)


def test_lag_since_sums_the_lateness_after_the_given_time() -> None:
    clock = Clock()
    monitor = LoopLagMonitor(interval_s=0.05, clock=clock)
    monitor.record(100.0, 0.001)
    monitor.record(101.0, 0.5)  # behind from 100.5 to 101.0
    monitor.record(102.0, 0.002)
    clock.now = 102.01
    assert monitor.lag_since(99.0) == pytest.approx(0.503)
    # Only the part of a stall after `since` counts.
    assert monitor.lag_since(100.8) == pytest.approx(0.2 + 0.002)
    assert monitor.lag_since(101.5) == pytest.approx(0.002)
    assert monitor.lag_since(102.0) == 0.0


def test_the_gauge_is_the_worst_lateness_of_its_window() -> None:
    monitor = LoopLagMonitor(interval_s=0.05, gauge_window_s=10.0, clock=Clock())
    monitor.record(100.0, 0.3)
    monitor.record(101.0, 0.01)
    assert monitor.recent_max == 0.3
    assert REGISTRY.get_sample_value("groundwire_event_loop_lag_seconds") == 0.3
    monitor.record(109.0, 0.02)
    assert monitor.recent_max == 0.3  # the stall is still inside the window
    monitor.record(111.0, 0.02)
    assert monitor.recent_max == 0.02  # it left the window; the worst since is 0.02
    assert REGISTRY.get_sample_value("groundwire_event_loop_lag_seconds") == 0.02


async def test_a_blocked_loop_is_measured() -> None:
    monitor = LoopLagMonitor(interval_s=0.02)
    monitor.start()
    try:
        await asyncio.sleep(0.05)  # the monitor is asleep, due shortly
        before = time.perf_counter()
        time.sleep(0.3)  # noqa: ASYNC251 - the loop is blocked: the monitor cannot wake
        # Asked before the monitor could wake: the overdue part is already counted.
        assert monitor.lag_since(before) >= 0.3 - 0.02
        await asyncio.sleep(0.05)  # now it woke and recorded the stall
        assert monitor.lag_since(before) >= 0.3 - 0.02
        assert monitor.recent_max >= 0.3 - 0.02
    finally:
        await monitor.stop()


def judge(monitor: LoopLagMonitor) -> LagJudge:
    return LagJudge(
        monitor, share=0.25, connect_timeout_s=2.0, idle_timeout_s=30.0, retry_after_s=0.2
    )


def test_each_timeout_is_judged_against_its_own_budget() -> None:
    lag = judge(LoopLagMonitor(clock=Clock()))

    def budget(kind: str, streaming: bool = False, status: int | None = None) -> float:
        error = LLMCallError("x", kind=kind, status=status)
        return lag.budget_s(error, streaming=streaming, first_token_s=10.0)

    assert budget("timeout") == 2.0  # before the first bytes: the connect timeout
    assert budget("timeout", streaming=True) == 30.0  # mid-stream: the idle timeout
    assert budget("first_token_timeout") == 10.0
    # The upstream's own verdicts are never ours to excuse.
    for kind in ("server_error", "rate_limited", "connection", "stream_cut", "upstream_error"):
        assert budget(kind) == 0.0
    assert budget("timeout", status=408) == 0.0


def test_a_timeout_is_excused_only_past_its_share_of_lag() -> None:
    clock = Clock()
    monitor = LoopLagMonitor(interval_s=0.05, clock=clock)
    lag = judge(monitor)
    connect = LLMCallError("x", kind="timeout")
    started = 100.0
    monitor.record(101.0, 0.4)  # 0.4 s behind: under a quarter of the 2 s connect budget
    clock.now = 102.0
    assert not lag.excuses(connect, started=started, streaming=False, first_token_s=10.0)
    monitor.record(101.9, 0.2)  # 0.6 s in all
    assert lag.excuses(connect, started=started, streaming=False, first_token_s=10.0)
    # A 500 in the same stall is still the model's.
    failed = LLMCallError("x", kind="server_error", status=500)
    assert not lag.excuses(failed, started=started, streaming=False, first_token_s=10.0)
    # Lag before the call started is not the call's.
    assert not lag.excuses(connect, started=101.95, streaming=False, first_token_s=10.0)


def test_a_lagging_loop_refuses_under_any_count_and_says_why() -> None:
    lag = [0.0]
    bound = InflightBound(
        max_streams=10, max_unary=10, retry_after_s=0.2, shed_lag_s=0.1, lag=lambda: lag[0]
    )
    assert bound.try_enter(True) and bound.try_enter(False)
    lag[0] = 0.15  # behind: nothing more comes in, whatever the counts
    assert not bound.try_enter(True) and not bound.try_enter(False)
    assert "behind" in bound.refusal(True).message
    assert (bound.streams, bound.unary) == (1, 1)
    lag[0] = 0.05  # caught up
    assert bound.try_enter(True)
    assert (bound.streams, bound.unary) == (2, 1)
    for _ in range(8):
        bound.try_enter(True)
    assert not bound.try_enter(True)  # a refusal for the count names the count again
    assert "10 streams" in bound.refusal(True).message


def test_the_lag_now_is_the_last_wake_or_a_stall_in_progress() -> None:
    clock = Clock()
    monitor = LoopLagMonitor(interval_s=0.05, clock=clock)
    assert monitor.lag_now() == 0.0
    monitor.record(clock.now, 0.03)
    assert monitor.lag_now() == pytest.approx(0.03)
    monitor._due = clock.now + 0.05  # asleep, due in 50 ms (what _run sets)
    clock.now += 0.5  # ...and the loop has not woken it for 450 ms past that
    assert monitor.lag_now() == pytest.approx(0.45)
