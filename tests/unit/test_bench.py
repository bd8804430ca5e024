"""The benchmark's own logic: plans and rotation, the load runner, the stream figures and the
summaries, on calls and numbers made up here (no timing is asserted)."""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest

from groundwire.tools.benchmark.load import CallFailed, Measured, Slice, error_kind, run_slice
from groundwire.tools.benchmark.plan import Plan, rotation
from groundwire.tools.benchmark.retrieve_calls import RetrieveTiming, cycled
from groundwire.tools.benchmark.streams import StreamTiming
from groundwire.tools.benchmark.summaries import (
    retrieve_comparison,
    retrieve_summary,
    stream_comparison,
    stream_summary,
)
from groundwire.tools.benchmark.upstream import UpstreamScript


def test_calls_per_level_grow_with_concurrency_and_spread_over_rounds() -> None:
    plan = Plan(levels=(1, 32, 256), requests=100, rounds=3, max_seconds=60)
    assert plan.calls_per_level(1) == 100
    assert plan.calls_per_level(256) == 1024  # four per worker
    assert plan.calls_per_slice(1) == 34  # rounded up
    assert plan.calls_per_slice(256) == 342
    assert plan.calls_per_variant() == 3 * (34 + 43 + 342)
    assert plan.slice_seconds == 20


def test_rotation_gives_each_variant_each_position() -> None:
    variants = ["direct", "miss", "hit"]
    orders = [rotation(variants, r) for r in range(3)]
    assert orders[0] == variants
    assert orders[1] == ["miss", "hit", "direct"]
    for position in range(3):
        assert {order[position] for order in orders} == set(variants)
    assert rotation(variants, 3) == variants
    assert rotation([], 5) == []


def _stream(ttft: float, last: float, total: float, tokens: int = 5) -> StreamTiming:
    return StreamTiming(
        ttft_s=ttft,
        last_text_s=last,
        total_s=total,
        tokens=tokens,
        frames=tokens + 2,
        text_frames=2,
        gaps_s=(last - ttft,),
        route="primary",
    )


def test_time_between_tokens_is_the_streams_mean_pace_whatever_the_frames() -> None:
    # Five tokens in two frames (merged) or five: the pace is what the caller sees overall.
    timing = _stream(ttft=0.3, last=0.34, total=0.35)
    assert timing.itl_s == pytest.approx(0.01)
    assert timing.tokens_per_s == pytest.approx(5 / 0.05)
    assert math.isnan(_stream(0.3, 0.3, 0.31, tokens=1).itl_s)
    assert math.isnan(_stream(0.3, 0.3, 0.3).tokens_per_s)


async def test_run_slice_counts_failures_by_kind_and_keeps_positions() -> None:
    async def call(index: int) -> int:
        await asyncio.sleep(0)
        if index % 3 == 1:
            raise CallFailed("finish length")
        if index % 3 == 2:
            raise ValueError("bad")
        return index * 10

    done: list[int] = []
    result = await run_slice(
        call, 7, 3, deadline_s=60, on_done=lambda: done.append(1), cpu=lambda: {"bench": 1.0}
    )
    assert result.results == [0, None, None, 30, None, None, 60]
    assert result.started == 7 and len(done) == 7
    assert result.errors == {"finish length": 2, "ValueError": 2}
    assert result.error_samples[0].startswith("CallFailed: finish length")
    assert result.cpu_s == {"bench": 0.0}


async def test_run_slice_starts_no_call_after_its_deadline() -> None:
    async def call(index: int) -> int:
        await asyncio.sleep(0.02)
        return index

    result = await run_slice(call, 1000, 2, deadline_s=0.05)
    assert 0 < result.started < 1000
    assert sum(r is not None for r in result.results) == result.started


def test_error_kinds_name_the_status() -> None:
    rpc = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down", None
    )
    assert error_kind(rpc) == "gRPC UNAVAILABLE"
    assert error_kind(CallFailed("route degraded")) == "route degraded"

    class StatusError(Exception):
        status_code = 429

    assert error_kind(StatusError()) == "HTTP 429"
    assert error_kind(TimeoutError()) == "TimeoutError"


def test_failures_are_queued_every_nth_request() -> None:
    script = UpstreamScript(tokens=3, ttft_s=0.1, itl_s=0.01, fail_every=3, fail_status=503)
    queued = script.queue(7)
    assert [q.get("status", 200) for q in queued] == [200, 200, 503, 200, 200, 503, 200]
    assert queued[0]["tokens"] == [" w0", " w1", " w2"]
    assert UpstreamScript(tokens=3, ttft_s=0, itl_s=0).queue(7) == []
    assert script.answer_s == pytest.approx(0.12)


def _measured(*rounds: list[StreamTiming | None], cpu: float = 0.0) -> Measured[StreamTiming]:
    return Measured(
        [Slice(results=list(r), started=len(r), wall_s=1.0, cpu_s={"ours": cpu}) for r in rounds]
    )


def test_stream_figures_pair_calls_and_divide_by_direct() -> None:
    direct = _measured([_stream(0.300, 0.340, 0.350), _stream(0.310, 0.350, 0.360)])
    ours = _measured([_stream(0.302, 0.342, 0.352), None], cpu=0.01)
    ours.slices[0].errors["gRPC UNAVAILABLE"] += 1
    direct_row = stream_summary(direct, planned=2, worker=None, answer_s=0.35)
    ours_row = stream_summary(ours, planned=2, worker="ours", answer_s=0.35)
    assert ours_row["ok"] == 1 and ours_row["errors"] == 1 and ours_row["started"] == 2
    assert ours_row["error_kinds"] == {"gRPC UNAVAILABLE": 1}
    assert ours_row["routes"] == {"primary": 1}
    assert ours_row["worker_cpu_ms_per_call"] == pytest.approx(10.0)
    assert ours_row["streams_per_core"] == pytest.approx(0.35 / 0.01)
    assert ours_row["streams_per_s_per_core"] == pytest.approx(100.0)
    assert ours_row["aggregate_tokens_per_s"] == pytest.approx(5.0)
    assert math.isnan(direct_row["streams_per_core"])

    compared = stream_comparison(ours, direct, ours_row, direct_row)
    # Only call 0 succeeded on both sides: one pair, 2 ms apart.
    assert compared["paired_n"] == 1
    assert compared["ttft_overhead_paired_p50_ms"] == pytest.approx(2.0)
    assert compared["ttft_overhead_p50_ms"] == pytest.approx(302.0 - 305.0)
    assert compared["aggregate_tokens_per_s_ratio"] == pytest.approx(0.5)
    assert compared["itl_ratio_p50"] == pytest.approx(1.0)


def test_retrieve_figures_count_unexpected_cache_outcomes() -> None:
    def measured(*hits: bool | None) -> Measured[RetrieveTiming]:
        results: list[RetrieveTiming | None] = [RetrieveTiming(0.01, h) for h in hits]
        return Measured([Slice(results=results, started=len(results), wall_s=0.1, cpu_s={})])

    hit_row = retrieve_summary(
        measured(True, True, False), planned=3, worker="server", expect_hit=True
    )
    assert hit_row["cache_hits"] == 2 and hit_row["cache_misses"] == 1
    assert hit_row["unexpected_cache_outcomes"] == 1
    assert hit_row["qps"] == pytest.approx(30.0)
    direct_row = retrieve_summary(measured(None, None), planned=2, worker="bench", expect_hit=None)
    assert direct_row["unexpected_cache_outcomes"] == 0
    compared = retrieve_comparison(hit_row, direct_row)
    assert compared["p50_ratio"] == pytest.approx(1.0)
    assert compared["qps_ratio"] == pytest.approx(1.5)
    assert math.isnan(compared["cpu_per_call_ratio"])  # no CPU was probed


def test_cycled_wraps_around_the_pool() -> None:
    assert cycled(["a", "b", "c"], 2, 4) == ["c", "a", "b", "c"]
    assert cycled([], 0, 3) == []


def test_progress_without_a_terminal_is_a_plain_line_every_few_seconds() -> None:
    import io

    from groundwire.tools.measure.progress import LineProgress

    now = [100.0]
    out = io.StringIO()
    with LineProgress(5183, "ingest", "docs", stream=out, clock=lambda: now[0]) as bar:
        bar.update(100)
        assert out.getvalue() == ""  # nothing before the interval
        now[0] += 5.5
        bar.update(1100)
        now[0] += 1.0
        bar.update(10)  # within the interval: no line
        now[0] += 33.0
        bar.set_description_str("retrieve")
        bar.update(3973)
    assert out.getvalue().splitlines() == [
        "ingest: 1,200/5,183 docs, 6 s",
        "retrieve: 5,183/5,183 docs, 40 s",
        "retrieve: 5,183/5,183 docs, 40 s (done)",
    ]
    quiet = io.StringIO()
    with LineProgress(3, "short", "q", stream=quiet, clock=lambda: 0.0) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""  # a phase shorter than the interval stays silent
