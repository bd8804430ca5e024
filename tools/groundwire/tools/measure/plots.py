"""PNG plots for the eval and bench reports (matplotlib, headless).

matplotlib comes with the ``tools`` extra and is imported on first use, so the server itself
never loads it. Each function draws one figure into one file and closes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_DPI = 110
_SIZE = (7.5, 4.5)


class PlotsUnavailableError(RuntimeError):
    """matplotlib is not installed (``pip install 'groundwire[tools]'``)."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise PlotsUnavailableError(
            "plots need matplotlib: install groundwire with the `tools` extra"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    _pyplot().close(fig)
    return path


def bar_chart(
    path: Path,
    *,
    title: str,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Grouped bars: one group per category, one bar per series, values printed on top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=_SIZE)
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
        heights = [0.0 if math.isnan(v) else v for v in values]
        bars = ax.bar(xs, heights, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(categories)), categories)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def cdf_plot(
    path: Path,
    *,
    title: str,
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    log_x: bool = False,
) -> Path:
    """Empirical distribution functions, one line per series, with p50 and p99 marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=_SIZE)
    for name, values in series.items():
        ordered = sorted(values)
        if not ordered:
            continue
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.step(ordered, fractions, where="post", label=f"{name} (n={len(ordered)})")
    for level in (0.5, 0.99):
        ax.axhline(level, color="grey", linewidth=0.6, linestyle=":")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of calls at or below")
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def line_plot(
    path: Path,
    *,
    title: str,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    log_x: bool = True,
    log_y: bool = False,
    colors: Mapping[str, str] | None = None,
    styles: Mapping[str, str] | None = None,
) -> Path:
    """Lines against ``x`` (concurrency, typically), one per series; NaN points are gaps.
    ``colors`` and ``styles`` (matplotlib line styles) by series name let related series
    share a colour (a variant) or a style (a statistic); others get the defaults."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=_SIZE)
    for name, values in series.items():
        ax.plot(
            x,
            values,
            (styles or {}).get(name, "-"),
            color=(colors or {}).get(name),
            marker="o",
            markersize=4,
            label=name,
        )
    if log_x:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [f"{v:g}" for v in x])
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
