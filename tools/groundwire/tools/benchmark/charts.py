"""The benchmark's PNG plots: each figure against concurrency, one colour per variant (the
direct baseline always the first, blue), one line style per statistic (p50 solid, p99
dotted)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundwire.tools.measure.plots import line_plot

Pick = Callable[[dict[str, Any]], float]


_LINE_STYLES = ("-", ":", "--", "-.")


@dataclass
class _Lines:
    """The lines of one figure, by name, with each one's colour and style."""

    values: dict[str, list[float]] = field(default_factory=dict)
    colors: dict[str, str] = field(default_factory=dict)
    styles: dict[str, str] = field(default_factory=dict)


def _lines(levels: Sequence[dict[str, Any]], picks: dict[str, Pick]) -> _Lines:
    """One line per (variant, statistic), ``"<variant> <label>"``: the colour says the
    variant, the style the statistic."""
    lines = _Lines()
    for v, variant in enumerate(levels[0]["variants"]):
        for p, (label, pick) in enumerate(picks.items()):
            name = f"{variant} {label}".strip()
            lines.values[name] = [float(pick(level["variants"][variant])) for level in levels]
            lines.colors[name] = f"C{v}"
            lines.styles[name] = _LINE_STYLES[p % len(_LINE_STYLES)]
    return lines


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
    lines = _lines(levels, picks)
    line_plot(
        out_dir / name,
        title=title,
        x=[float(level["concurrency"]) for level in levels],
        series=lines.values,
        xlabel="concurrent calls",
        ylabel=ylabel,
        log_y=log_y,
        colors=lines.colors,
        styles=lines.styles,
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
