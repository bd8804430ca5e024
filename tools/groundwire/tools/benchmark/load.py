"""The load generator: ``concurrency`` workers pulling numbered calls from one queue, failures
counted by kind rather than fatal, and the processes' CPU time read around each slice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

import grpc

T = TypeVar("T")

# One call, given its position in the slice; returns what it measured (its own timings).
Call = Callable[[int], Awaitable[T]]
CpuSample = Callable[[], Mapping[str, float]]
Tick = Callable[[str], None]  # one step of the plan done, in the named phase (a progress bar)

ERROR_SAMPLES = 5


class CallFailed(Exception):
    """A call that completed, but not as a correct answer; the message is its error kind."""


# The ErrorInfo reason of a server refusing a call because it is full (RESOURCE_EXHAUSTED):
# a refusal, counted apart from errors. Matched by name: a server without it never refuses.
OVERLOADED_REASON = "ERROR_REASON_OVERLOADED"
REFUSED = "refused "  # the kinds of refusals start with this


def _error_reason(exc: grpc.aio.AioRpcError) -> str | None:
    """The ErrorInfo reason of a gRPC failure, if it carries one."""
    from google.rpc import error_details_pb2, status_pb2

    metadata = cast(Sequence[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    for key, value in metadata:
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return str(info.reason)
    return None


def error_kind(exc: BaseException) -> str:
    """A short, countable name for a failure: ``gRPC UNAVAILABLE``, ``HTTP 500``, a
    :class:`CallFailed` message, or the exception's type; a refusal (RESOURCE_EXHAUSTED with
    reason ``OVERLOADED_REASON``) is ``refused ERROR_REASON_OVERLOADED``."""
    if isinstance(exc, CallFailed):
        return str(exc)
    if isinstance(exc, grpc.aio.AioRpcError):
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            reason = _error_reason(exc)
            if reason == OVERLOADED_REASON:
                return REFUSED + reason
        return f"gRPC {exc.code().name}"
    status = getattr(exc, "status_code", None)  # openai.APIStatusError and friends
    if isinstance(status, int):
        return f"HTTP {status}"
    return type(exc).__name__


@dataclass
class Slice(Generic[T]):
    """One variant's calls in one round."""

    # By position: what call i measured, None when it failed or never started.
    results: list[T | None]
    started: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    # CPU seconds each probed process used during the slice.
    cpu_s: dict[str, float] = field(default_factory=dict)
    # Seconds from issuing each refused call to its refusal.
    refusal_s: list[float] = field(default_factory=list)

    @property
    def succeeded(self) -> list[T]:
        """The results of the calls that succeeded, in position order."""
        return [r for r in self.results if r is not None]


@dataclass
class Measured(Generic[T]):
    """One variant at one level, over all its rounds."""

    slices: list[Slice[T]] = field(default_factory=list)

    @property
    def results(self) -> list[T]:
        """Every successful call's result."""
        return [r for s in self.slices for r in s.succeeded]

    @property
    def started(self) -> int:
        """Calls started (successful or not)."""
        return sum(s.started for s in self.slices)

    @property
    def errors(self) -> Counter[str]:
        """Failed calls by kind."""
        total: Counter[str] = Counter()
        for s in self.slices:
            total.update(s.errors)
        return total

    @property
    def error_samples(self) -> list[str]:
        """The first few failures' full messages."""
        return [m for s in self.slices for m in s.error_samples][:ERROR_SAMPLES]

    @property
    def refusal_s(self) -> list[float]:
        """Every refused call's time to its refusal."""
        return [t for s in self.slices for t in s.refusal_s]

    @property
    def wall_s(self) -> float:
        """Summed wall time of the slices."""
        return sum(s.wall_s for s in self.slices)

    @property
    def cpu_s(self) -> dict[str, float]:
        """CPU seconds per probed process, summed over the slices."""
        total: dict[str, float] = {}
        for s in self.slices:
            for name, seconds in s.cpu_s.items():
                total[name] = total.get(name, 0.0) + seconds
        return total


def paired(a: Measured[T], b: Measured[T]) -> Iterator[tuple[T, T]]:
    """Call i of round r of ``a`` beside call i of round r of ``b``, where both succeeded."""
    for one, other in zip(a.slices, b.slices, strict=False):
        for x, y in zip(one.results, other.results, strict=False):
            if x is not None and y is not None:
                yield x, y


async def run_slice(
    call: Call[T],
    count: int,
    concurrency: int,
    *,
    deadline_s: float,
    stagger_s: float = 0.0,
    cpu: CpuSample | None = None,
    on_done: Callable[[], None] | None = None,
) -> Slice[T]:
    """Run calls 0..``count``-1 on ``concurrency`` workers pulling from one queue. Worker j
    starts ``j / concurrency * stagger_s`` late; no call starts after ``deadline_s``. A
    failure is counted by :func:`error_kind`, never raised. ``on_done`` runs after each call
    (a progress bar); ``cpu`` is sampled before and after."""
    out: Slice[T] = Slice(results=[None] * count)
    pending = iter(range(count))
    stop_at = 0.0  # set when the slice starts

    async def worker(delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        for index in pending:
            if time.perf_counter() > stop_at:
                return
            out.started += 1
            issued = time.perf_counter()
            try:
                out.results[index] = await call(index)
            except Exception as exc:  # a benchmark counts failures; it does not stop on one
                kind = error_kind(exc)
                if kind.startswith(REFUSED):
                    out.refusal_s.append(time.perf_counter() - issued)
                out.errors[kind] += 1
                if len(out.error_samples) < ERROR_SAMPLES:
                    out.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
            if on_done is not None:
                on_done()

    before = dict(cpu()) if cpu is not None else {}
    started_at = time.perf_counter()
    stop_at = started_at + deadline_s
    workers = min(concurrency, count)
    await asyncio.gather(*(worker(j / concurrency * stagger_s) for j in range(workers)))
    out.wall_s = time.perf_counter() - started_at
    if cpu is not None:
        after = cpu()
        out.cpu_s = {name: after[name] - value for name, value in before.items()}
    return out
