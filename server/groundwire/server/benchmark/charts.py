"""The benchmark's PNG plots: each figure against concurrency, one colour per variant (the
direct baseline always the first, blue), one line style per statistic (p50 solid, p99
dotted)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from groundwire.server.measure.plots import line_plot

Pick = Callable[[dict[str, Any]], float]


def _series(
    levels: Sequence[dict[str, Any]], variants: Sequence[str], picks: dict[str, Pick]
) -> dict[str, list[float]]:
    """One line per (variant, statistic): ``"<variant> <label>"``."""
    out: dict[str, list[float]] = {}
    for variant in variants:
        for label, pick in picks.items():
            name = f"{variant} {label}".strip()
            out[name] = [float(pick(level["variants"][variant])) for level in levels]
    return out


def _plot(
    out_dir: Path,
    name: str,
    title: str,
    levels: Sequence[dict[str, Any]],
    picks: dict[str, Pick],
    ylabel: str,
    *,
    log_y: bool = False,
) -> str:
    variants = list(levels[0]["variants"])
    series = _series(levels, variants, picks)
    line_styles = ("-", ":", "--", "-.")
    colors, styles = {}, {}
    for v, variant in enumerate(variants):
        for p, label in enumerate(picks):
            line = f"{variant} {label}".strip()
            colors[line] = f"C{v}"
            styles[line] = line_styles[p % len(line_styles)]
    line_plot(
        out_dir / name,
        title=title,
        x=[float(level["concurrency"]) for level in levels],
        series=series,
        xlabel="concurrent calls",
        ylabel=ylabel,
        log_y=log_y,
        colors=colors,
        styles=styles,
    )
    return name


def _percentiles(metric: str) -> dict[str, Pick]:
    """p50 and p99 of a latency summary in the row."""

    def at(p: str) -> Pick:
        return lambda row: float(row[metric][f"{p}_ms"])

    return {p: at(p) for p in ("p50", "p99")}


def generate_plots(result: dict[str, Any], out_dir: Path) -> list[str]:
    """TTFT, time between tokens and total time percentiles, and tokens/s, per stream and
    all streams together; the file names written."""
    levels = result["levels"]
    plots = [
        ("generate_ttft.png", "time to first token", _percentiles("ttft"), "ms", True),
        ("generate_itl.png", "time between tokens", _percentiles("itl"), "ms", True),
        ("generate_total.png", "time to the end of the stream", _percentiles("total"), "ms", True),
        (
            "generate_stream_tokens_per_s.png",
            "tokens/s per stream",
            {"p50": lambda row: float(row["stream_tokens_per_s"]["p50"])},
            "tokens/s",
            False,
        ),
        (
            "generate_aggregate_tokens_per_s.png",
            "tokens/s, all streams together",
            {"": lambda row: float(row["aggregate_tokens_per_s"])},
            "tokens/s",
            True,
        ),
    ]
    return [
        _plot(out_dir, name, f"Generate: {title}", levels, picks, ylabel, log_y=log_y)
        for name, title, picks, ylabel, log_y in plots
    ]


def retrieve_plots(result: dict[str, Any], out_dir: Path) -> list[str]:
    """Latency percentiles and QPS per mode; the file names written."""
    names: list[str] = []
    for mode in dict.fromkeys(level["mode"] for level in result["levels"]):
        levels = [level for level in result["levels"] if level["mode"] == mode]
        names.append(
            _plot(
                out_dir,
                f"retrieve_latency_{mode}.png",
                f"Retrieve ({mode}): latency",
                levels,
                _percentiles("latency"),
                "ms",
                log_y=True,
            )
        )
        names.append(
            _plot(
                out_dir,
                f"retrieve_qps_{mode}.png",
                f"Retrieve ({mode}): calls per second",
                levels,
                {"": lambda row: float(row["qps"])},
                "calls/s",
                log_y=True,
            )
        )
    return names
