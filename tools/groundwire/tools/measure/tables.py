"""Tables for the terminal and for Markdown reports, from the same rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Row = Sequence[Any]


def cell(value: Any) -> str:
    """A value as table text: floats to 4 decimals below 1 (scores), 2 below 10, 1 above
    (milliseconds, rates); NaN as '-'."""
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) < 1:
            return f"{value:.4f}"
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_table(headers: Sequence[str], rows: Sequence[Row]) -> str:
    """A plain-text table: numbers right-aligned, text left-aligned."""
    body = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))

    def line(values: Sequence[str], numeric: Sequence[bool]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    plain = [False] * len(headers)
    out = [line(headers, plain), line(["-" * w for w in widths], plain)]
    for row, original in zip(body, rows, strict=True):
        out.append(line(row, [_numeric(v) for v in original]))
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Row]) -> str:
    """A GitHub-flavoured Markdown table; numeric columns are right-aligned."""
    numeric = [bool(rows) and all(_numeric(row[i]) for row in rows) for i in range(len(headers))]
    out = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    out += ["| " + " | ".join(cell(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(out)
