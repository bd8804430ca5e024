"""Percentiles and ratios for measurements."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100), interpolated linearly between the closest ranks
    (numpy's default); NaN when there are no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * p / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean; NaN when there are no values."""
    return sum(values) / len(values) if values else math.nan


def latency_summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max of latencies given in seconds, in milliseconds, and their count."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": mean(ms),
        "max_ms": max(ms) if ms else math.nan,
        "n": len(ms),
    }


def ratio(ours: float, baseline: float) -> float:
    """``ours / baseline``; NaN when either is missing or the baseline is zero."""
    if math.isnan(ours) or math.isnan(baseline) or baseline == 0:
        return math.nan
    return ours / baseline
