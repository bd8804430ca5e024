"""From measured calls to the figures a report shows: one summary per (level, variant), and
the side-by-side figures of a variant against the direct baseline (overheads, ratios)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, TypeVar

from groundwire.tools.benchmark.load import REFUSED, Measured, paired
from groundwire.tools.benchmark.retrieve_calls import SERVER_TIMINGS as RETRIEVE_TIMINGS
from groundwire.tools.benchmark.retrieve_calls import RetrieveTiming
from groundwire.tools.benchmark.streams import SERVER_TIMINGS as STREAM_TIMINGS
from groundwire.tools.benchmark.streams import StreamTiming
from groundwire.tools.measure.stats import latency_summary_ms, percentile, ratio

T = TypeVar("T")


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def _per_call_ms(seconds: float, calls: int) -> float:
    return seconds * 1000.0 / calls if calls else math.nan


def _counts(m: Measured[T], planned: int) -> dict[str, Any]:
    """How many calls were planned, started, succeeded, were refused (the server full: by
    reason, and how fast) and failed (by kind), and the slices' summed wall time."""
    errors = {k: n for k, n in m.errors.items() if not k.startswith(REFUSED)}
    refusals = {k.removeprefix(REFUSED): n for k, n in m.errors.items() if k.startswith(REFUSED)}
    return {
        "planned": planned,
        "started": m.started,
        "ok": len(m.results),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "error_samples": m.error_samples,
        "refusals": sum(refusals.values()),
        "refusal_reasons": refusals,
        "refusal_latency": latency_summary_ms(m.refusal_s),
        "wall_s": m.wall_s,
    }


def _cpu(m: Measured[T], worker: str | None, caller: str = "bench") -> dict[str, Any]:
    """CPU per successful call of each probed process (a server: its whole process tree),
    all of them together over wall time (cores kept busy: the machine's core count means
    saturated), the per-call CPU of ``worker``, the process doing the variant's work, and of
    ``caller``, the load generator that made the calls."""
    calls = len(m.results)
    cpu = m.cpu_s
    wall = m.wall_s
    per_call = {name: _per_call_ms(seconds, calls) for name, seconds in cpu.items()}
    # The Python process idles while the Go one calls: counting both would count it twice.
    together = [v for name, v in cpu.items() if not (caller == "loadgen" and name == "bench")]
    return {
        "cpu_ms_per_call": per_call,
        "cores_busy": sum(_finite(together)) / wall if wall > 0 else math.nan,
        "worker": worker,
        "worker_cpu_ms_per_call": per_call.get(worker, math.nan) if worker else math.nan,
        "caller": caller,
        "caller_cpu_ms_per_call": per_call.get(caller, math.nan),
    }


def stream_summary(
    m: Measured[StreamTiming],
    *,
    planned: int,
    worker: str | None,
    answer_s: float,
    caller: str = "bench",
) -> dict[str, Any]:
    """One Generate variant at one level. ``worker`` names our server's process, None for
    direct; its CPU per stream, against ``answer_s`` (how long the upstream takes to stream
    one answer when nothing is loaded), gives the concurrent streams of that pace one core
    sustains. ``caller`` names the load generator's process (``bench``: this one; ``loadgen``:
    the Go one). Fallbacks are answers on the fallback route (from a healthy upstream, none
    should be)."""
    results = m.results
    wall = m.wall_s
    tokens = sum(r.tokens for r in results)
    routes = Counter(r.route for r in results)
    row: dict[str, Any] = _counts(m, planned)
    row.update(
        {
            "routes": dict(routes),
            "fallbacks": routes.get("fallback", 0),
            "ttft": latency_summary_ms([r.ttft_s for r in results]),
            "itl": latency_summary_ms(_finite([r.itl_s for r in results])),
            "frame_gap": latency_summary_ms([g for r in results for g in r.gaps_s]),
            "total": latency_summary_ms([r.total_s for r in results]),
            "stream_tokens_per_s": {
                "p50": percentile(_finite([r.tokens_per_s for r in results]), 50),
                "p5": percentile(_finite([r.tokens_per_s for r in results]), 5),
            },
            "aggregate_tokens_per_s": tokens / wall if wall > 0 else math.nan,
            "streams_per_s": len(results) / wall if wall > 0 else math.nan,
            "frames_p50": percentile([float(r.frames) for r in results], 50),
            "text_frames_p50": percentile([float(r.text_frames) for r in results], 50),
            "server_timings_p50_ms": {
                name: percentile([r.server[name] * 1000 for r in results if r.server], 50)
                for name in STREAM_TIMINGS
            },
        }
    )
    row.update(_cpu(m, worker, caller))
    # A stream occupies its server for the upstream's whole answer but needs CPU only now and
    # then: answer duration / CPU per stream is how many such streams one core keeps going.
    # (Not the measured duration: on a saturated machine that stretches with the load.)
    cpu_s = row["worker_cpu_ms_per_call"] / 1000.0
    row["streams_per_s_per_core"] = 1.0 / cpu_s if cpu_s > 0 else math.nan
    row["streams_per_core"] = answer_s / cpu_s if cpu_s > 0 and answer_s > 0 else math.nan
    return row


def stream_comparison(
    ours: Measured[StreamTiming],
    direct: Measured[StreamTiming],
    ours_row: dict[str, Any],
    direct_row: dict[str, Any],
) -> dict[str, Any]:
    """A Generate variant beside direct at one level: overheads (ours - direct, ms) and
    ratios (ours / direct). The paired TTFT overhead takes call i of round r of each."""
    diffs = [(x.ttft_s - y.ttft_s) * 1000.0 for x, y in paired(ours, direct)]

    def delta(metric: str, stat: str) -> float:
        return float(ours_row[metric][stat] - direct_row[metric][stat])

    return {
        "ttft_overhead_p50_ms": delta("ttft", "p50_ms"),
        "ttft_overhead_p99_ms": delta("ttft", "p99_ms"),
        "ttft_overhead_paired_p50_ms": percentile(diffs, 50),
        "ttft_overhead_paired_p95_ms": percentile(diffs, 95),
        "paired_n": len(diffs),
        "itl_overhead_p50_ms": delta("itl", "p50_ms"),
        "itl_ratio_p50": ratio(ours_row["itl"]["p50_ms"], direct_row["itl"]["p50_ms"]),
        "total_overhead_p50_ms": delta("total", "p50_ms"),
        "total_ratio_p50": ratio(ours_row["total"]["p50_ms"], direct_row["total"]["p50_ms"]),
        "stream_tokens_per_s_ratio": ratio(
            ours_row["stream_tokens_per_s"]["p50"], direct_row["stream_tokens_per_s"]["p50"]
        ),
        "aggregate_tokens_per_s_ratio": ratio(
            ours_row["aggregate_tokens_per_s"], direct_row["aggregate_tokens_per_s"]
        ),
    }


def saturation(levels: Sequence[dict[str, Any]], workers: dict[str, int]) -> dict[str, Any]:
    """Per server (by row name, with its worker count): the most streams per second it served
    at any level (at saturation, where more concurrency adds none), the level, and the ratio
    to the server of the same variant with the fewest workers."""
    out: dict[str, Any] = {}
    for name, count in workers.items():
        best, at = math.nan, None
        for level in levels:
            rate = level["variants"][name]["streams_per_s"]
            if not math.isnan(rate) and (at is None or rate > best):
                best, at = rate, level["concurrency"]
        out[name] = {"workers": count, "streams_per_s": best, "at_concurrency": at}
    for name, row in out.items():
        variant = name.split(" ")[0]
        peers = [n for n in out if n.split(" ")[0] == variant]
        fewest = min(peers, key=lambda n: out[n]["workers"])
        row["baseline"] = fewest
        row["ratio_to_baseline"] = ratio(row["streams_per_s"], out[fewest]["streams_per_s"])
    return out


def retrieve_summary(
    m: Measured[RetrieveTiming], *, planned: int, worker: str, expect_hit: bool | None
) -> dict[str, Any]:
    """One Retrieve variant at one level. ``worker`` names the process that does the work
    (our server, or this one for direct): its CPU per call gives the QPS one core sustains.
    Calls whose cache outcome is not ``expect_hit`` are counted (a hit row must hit)."""
    results = m.results
    wall = m.wall_s
    outcomes = [r.cache_hit for r in results if r.cache_hit is not None]
    row: dict[str, Any] = _counts(m, planned)
    row.update(
        {
            "latency": latency_summary_ms([r.latency_s for r in results]),
            "qps": len(results) / wall if wall > 0 else math.nan,
            "cache_hits": sum(outcomes),
            "cache_misses": len(outcomes) - sum(outcomes),
            "unexpected_cache_outcomes": (
                0 if expect_hit is None else sum(hit != expect_hit for hit in outcomes)
            ),
            "server_timings_p50_ms": {
                name: percentile([r.server[name] * 1000 for r in results if r.server], 50)
                for name in RETRIEVE_TIMINGS
            },
        }
    )
    row.update(_cpu(m, worker))
    cpu_ms = row["worker_cpu_ms_per_call"]
    row["qps_per_core"] = 1000.0 / cpu_ms if cpu_ms > 0 else math.nan
    return row


def retrieve_comparison(row: dict[str, Any], direct_row: dict[str, Any]) -> dict[str, Any]:
    """A Retrieve variant beside direct at one level: overhead (ms) and ratios."""
    ours, base = row["latency"], direct_row["latency"]
    return {
        "p50_overhead_ms": ours["p50_ms"] - base["p50_ms"],
        "p50_ratio": ratio(ours["p50_ms"], base["p50_ms"]),
        "p99_ratio": ratio(ours["p99_ms"], base["p99_ms"]),
        "qps_ratio": ratio(row["qps"], direct_row["qps"]),
        "cpu_per_call_ratio": ratio(
            row["worker_cpu_ms_per_call"], direct_row["worker_cpu_ms_per_call"]
        ),
    }
