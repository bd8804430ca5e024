"""Overload: a bound on the calls one process handles at once, and the lag of its event loop.

One server process is one event loop on one core. Past some number of concurrent streams every
extra stream slows all the others (each loop turn serves them all), and a call the loop has
not reached yet waits where nothing measures it: callers saw 8-12 s to their first token while
the server's own timings said 0.5-1.5 s. So a process refuses what it cannot serve well, at
once, with RESOURCE_EXHAUSTED, ``ErrorInfo`` reason ``ERROR_REASON_OVERLOADED`` and a
``RetryInfo``: the mesh retries another replica instead of the caller queueing unseen here.

- :class:`InflightBound` counts the calls a process has admitted, Generate streams and other
  calls apart (a stream lives for seconds, a Retrieve for milliseconds: one number cannot bound
  both), and answers "may this one come in?" with two integer comparisons. The interceptor asks
  before it authenticates or decodes anything, so a refusal costs microseconds.
- :class:`LoopLagMonitor` is a task that sleeps a short interval and records how late it wakes:
  how long the loop was busy elsewhere. It exports the recent worst lateness as a gauge (with
  the in-flight gauge, the autoscaling signal) and answers "how much did the loop lag since t".
- :class:`LagJudge` uses that answer when an upstream call times out: a timeout that fired while
  this process lagged past a share of the timeout's budget is not the model's failure (a healthy
  upstream's bytes sat unread in our socket), so it neither counts against the model's breaker
  nor sends the answer down a fallback route; the call ends as overload instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable

import grpc

from groundwire.clients.errors import GroundwireError, LLMCallError
from groundwire.server import metrics

# The trailer gRPC's own retry support (gRFC A6) reads as the server's pushback: a client whose
# retry policy lists RESOURCE_EXHAUSTED waits this many milliseconds, then retries through its
# load balancer (another replica, with round_robin). RetryInfo says the same to everyone else.
RETRY_PUSHBACK_HEADER = "grpc-retry-pushback-ms"


class OverloadedError(GroundwireError):
    """This process cannot take the call now (too many in flight, or it fell behind); the
    caller should retry on another replica after ``retry_after_s``."""

    reason = "ERROR_REASON_OVERLOADED"
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class InflightBound:
    """How many calls this process has admitted, streams and unary calls apart, and whether
    one more may come in. ``None`` for a bound means unbounded.

    Not thread-safe and needs no lock: it is used from the event loop's thread only.
    """

    def __init__(
        self,
        *,
        max_streams: int | None,
        max_unary: int | None,
        retry_after_s: float,
        shed_lag_s: float | None = None,
        lag: Callable[[], float] | None = None,
    ) -> None:
        """``retry_after_s`` is the delay a refusal suggests (RetryInfo and gRPC pushback).
        With ``shed_lag_s`` and ``lag`` (the loop's lag right now, in seconds), a call is also
        refused while the loop lags more than ``shed_lag_s``, under any count."""
        for name, bound in (("max_streams", max_streams), ("max_unary", max_unary)):
            if bound is not None and bound < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {bound}")
        if not (math.isfinite(retry_after_s) and retry_after_s >= 0):
            raise ValueError(f"retry_after_s must be finite and >= 0, got {retry_after_s}")
        if shed_lag_s is not None and not (math.isfinite(shed_lag_s) and shed_lag_s > 0):
            raise ValueError(f"shed_lag_s must be finite and > 0 or None, got {shed_lag_s}")
        self.max_streams = max_streams
        self.max_unary = max_unary
        self.retry_after_s = retry_after_s
        self.shed_lag_s = shed_lag_s if lag is not None else None
        self._lag = lag
        self.streams = 0
        self.unary = 0

    def _at_bound(self, stream: bool) -> bool:
        """Whether calls of this kind are at their bound."""
        if stream:
            return self.max_streams is not None and self.streams >= self.max_streams
        return self.max_unary is not None and self.unary >= self.max_unary

    def _behind(self) -> bool:
        """Whether the loop lags past ``shed_lag_s`` (never without shedding)."""
        return (
            self.shed_lag_s is not None and self._lag is not None and self._lag() > self.shed_lag_s
        )

    def try_enter(self, stream: bool) -> bool:
        """Count one more call of its kind and return True, or return False (nothing counted)
        when its kind is at its bound or the loop lags past ``shed_lag_s``. Every True must be
        followed by one :meth:`leave`."""
        if self._at_bound(stream):
            return False
        if self._behind():
            # The count is not the whole story: a machine whose cores other processes share
            # (or a burst of costly calls) falls behind below it, and every call the loop has
            # not reached yet waits unseen, refusals included. Refusing while behind lets the
            # loop catch up, so that the next caller hears at once.
            return False
        if stream:
            self.streams += 1
        else:
            self.unary += 1
        return True

    def leave(self, stream: bool) -> None:
        """A call admitted by :meth:`try_enter` ended."""
        if stream:
            self.streams -= 1
        else:
            self.unary -= 1

    def refusal(self, stream: bool) -> OverloadedError:
        """The error a refused call gets (just after :meth:`try_enter` refused it): our words,
        the bound it hit or the lag, when to retry."""
        if not self._at_bound(stream) and self._behind():
            return OverloadedError(
                "this server is behind on the calls it has; retry on another replica",
                retry_after_s=self.retry_after_s,
            )
        kind, bound = ("streams", self.max_streams) if stream else ("calls", self.max_unary)
        return OverloadedError(
            f"this server is at its limit of {bound} {kind} in flight; retry on another replica",
            retry_after_s=self.retry_after_s,
        )


class LoopLagMonitor:
    """Measures how late the event loop runs a timer: a task sleeps ``interval_s``, again and
    again, and records each wake's lateness (how long the loop was busy with other work).

    Two views of the record. The gauge ``groundwire_event_loop_lag_seconds`` is the worst
    lateness of the last ``gauge_window_s`` (a maximum, not an average: a scrape every 15 s
    must not miss a one-second stall between two quiet samples). :meth:`lag_since` is the
    total lateness since a time: how much of that span the loop spent behind, the figure a
    timeout's budget is compared with.

    Times are ``time.perf_counter()`` seconds (the clock the pipeline's timings use). The
    record keeps ``history_s`` of samples; a sample is kept in a deque and a running
    maximum, so a wake costs well under a microsecond of bookkeeping and a gauge set.
    """

    def __init__(
        self,
        *,
        interval_s: float = 0.05,
        gauge_window_s: float = 10.0,
        history_s: float = 120.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be finite and > 0, got {interval_s}")
        self.interval_s = interval_s
        self._gauge_window_s = gauge_window_s
        self.clock = clock
        # (woke at, lateness), oldest first: the record lag_since reads.
        self._samples: deque[tuple[float, float]] = deque(
            maxlen=max(1, math.ceil(history_s / interval_s))
        )
        # The candidates for the window's maximum: lateness strictly decreasing left to right.
        self._peaks: deque[tuple[float, float]] = deque()
        # When the sleep in progress should end; None while the monitor is not running.
        self._due: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start measuring on the running loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="groundwire-loop-lag"
            )

    async def stop(self) -> None:
        """Stop measuring."""
        task, self._task = self._task, None
        self._due = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        interval = self.interval_s
        while True:
            slept_from = self.clock()
            self._due = slept_from + interval
            await asyncio.sleep(interval)
            woke = self.clock()
            self.record(woke, max(0.0, woke - slept_from - interval))

    def record(self, woke_at: float, lateness: float) -> None:
        """Add one wake (the monitor's own; public so the arithmetic can be tested alone)."""
        self._samples.append((woke_at, lateness))
        peaks = self._peaks
        while peaks and peaks[-1][1] <= lateness:
            peaks.pop()
        peaks.append((woke_at, lateness))
        horizon = woke_at - self._gauge_window_s
        while peaks[0][0] < horizon:
            peaks.popleft()
        metrics.EVENT_LOOP_LAG.set(peaks[0][1])

    def lag_now(self) -> float:
        """How late the loop runs now, in seconds: the lateness of the monitor's last wake, or
        more while its next wake is overdue (a stall in progress)."""
        due = self._due
        overdue = self.clock() - due if due is not None else 0.0
        last = self._samples[-1][1] if self._samples else 0.0
        return max(last, overdue)

    @property
    def recent_max(self) -> float:
        """The gauge's value: the worst lateness of the last ``gauge_window_s``, in seconds."""
        return self._peaks[0][1] if self._peaks else 0.0

    def lag_since(self, since: float) -> float:
        """How many seconds the loop spent behind since ``since`` (a ``perf_counter`` time):
        the lateness of the wakes since then (a wake's lateness counts only for the part that
        falls after ``since``), plus the lateness of a wake overdue right now. The last part
        matters when a timeout and the monitor become due in the same stall: the timeout's
        handler may run before the monitor's wake is recorded."""
        now = self.clock()
        total = 0.0
        if self._due is not None and now > self._due:
            total += now - max(self._due, since)
        for woke_at, lateness in reversed(self._samples):
            if woke_at <= since:
                break
            total += min(lateness, woke_at - since)
        return total


class LagJudge:
    """Decides whether an upstream timeout was this process's fault rather than the model's.

    Each kind of timeout has a budget: the connect timeout before the model's first bytes
    (before them the first-token timeout, 10 s by default, always fires before the 30 s idle
    timeout could), the idle timeout after them, the caller's first-token timeout for that
    one. When the loop spent at least ``share`` of the budget behind while the timer ran (from
    the call's start before the first bytes, the budget's span back from now after them), the
    timeout is ours: with ``share`` 0.5 and a 2 s connect timeout, a second of our
    own lag is enough. A model that really is down while we lag is then not marked down here,
    but the call ends as OVERLOADED and is retried on a replica that is not behind, which sees
    the failure for what it is. Other failures (HTTP statuses, resets, cut streams) are never
    excused: lag does not produce them.
    """

    def __init__(
        self,
        monitor: LoopLagMonitor,
        *,
        share: float,
        connect_timeout_s: float,
        idle_timeout_s: float,
        retry_after_s: float,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.monitor = monitor
        self.share = share
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.retry_after_s = retry_after_s

    def budget_s(self, error: LLMCallError, *, streaming: bool, first_token_s: float) -> float:
        """The timeout budget ``error`` spent; 0 when it is no timeout of ours to judge (an
        HTTP 408 is the upstream's own verdict)."""
        if error.kind == "first_token_timeout":
            return first_token_s
        if error.kind == "timeout" and error.status is None:
            return self.idle_timeout_s if streaming else self.connect_timeout_s
        return 0.0

    def excuses(
        self, error: LLMCallError, *, started: float, streaming: bool, first_token_s: float
    ) -> bool:
        """Whether ``error`` (from a call started at ``started``, ``perf_counter`` time) fired
        while this process lagged past its share of the timeout's budget. ``streaming``: the
        model's first bytes had arrived."""
        budget = self.budget_s(error, streaming=streaming, first_token_s=first_token_s)
        if budget <= 0:
            return False
        # Before the first bytes the timer ran from the call's start. Mid-stream it ran from
        # the last read, which we do not know: the budget's span back from now stands in for
        # it (short by the lag itself, so a stall is, if anything, under-counted).
        since = started if not streaming else max(started, self.monitor.clock() - budget)
        return self.monitor.lag_since(since) >= self.share * budget

    def error(self) -> OverloadedError:
        """The error the call ends with when a timeout was ours."""
        return OverloadedError(
            "this server fell behind while waiting for the model; retry on another replica",
            retry_after_s=self.retry_after_s,
        )
