"""Progress on stderr: a redrawn bar on a terminal, a plain line every few seconds in a log.

A CI job's log is not a terminal: a bar there is either silent (tqdm disabled) for the whole
of a long ingest or a wall of carriage returns. So without ``--progress``/``--no-progress``
a terminal gets the bar and anything else gets lines like ``ingest: 1,200/5,183 doc, 38 s``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from tqdm import tqdm

#: ``True``: a bar; ``None``: plain lines (stderr is not a terminal); ``False``: nothing.
Progress = bool | None
#: Seconds between two plain lines of one phase.
LINE_INTERVAL_S = 5.0


def progress_enabled(flag: bool | None) -> Progress:
    """``--progress`` (a bar) or ``--no-progress`` (nothing) when given; else a bar when
    stderr is a terminal and plain lines when it is not."""
    if flag is not None:
        return flag
    return True if sys.stderr.isatty() else None


class LineProgress(contextlib.AbstractContextManager["LineProgress"]):
    """Progress as a plain line at most every ``interval_s`` seconds, and a last line at
    the end of a phase that printed any (a short phase stays silent)."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        *,
        interval_s: float = LINE_INTERVAL_S,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0.0
        self._interval_s = interval_s
        self._stream = stream
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        self._printed = False

    def line(self) -> str:
        """``desc: done/total unit, elapsed s``."""
        done = f"{self.n:,.0f}" + (f"/{self.total:,}" if self.total is not None else "")
        return f"{self.desc}: {done} {self.unit}, {self._clock() - self._started:.0f} s"

    def _print(self, text: str) -> None:
        print(text, file=self._stream or sys.stderr, flush=True)
        self._printed = True

    def update(self, n: float | None = 1) -> bool | None:
        """Count ``n`` steps; print a line when ``interval_s`` passed since the last one."""
        self.n += n or 0
        now = self._clock()
        if now - self._last_line >= self._interval_s:
            self._last_line = now
            self._print(self.line())
        return None

    def set_description_str(self, desc: str | None = None, refresh: bool | None = True) -> None:
        """Name the phase now under way (the next line says it)."""
        self.desc = desc or ""

    def close(self) -> None:
        """The last line, when the phase printed any."""
        if self._printed:
            self._print(self.line() + " (done)")
            self._printed = False

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def progress_bar(
    total: int | None, desc: str, unit: str, *, enabled: Progress
) -> tqdm[Any] | LineProgress:
    """A bar for ``total`` steps of ``unit``, described as ``desc`` (``enabled`` True), plain
    lines (None) or nothing (False)."""
    if enabled is None:
        return LineProgress(total, desc, unit)
    return tqdm(
        total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, leave=False
    )


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--progress``/``--no-progress`` (default: a bar on a terminal, else a line every few
    seconds)."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar, or nothing (default: a bar when stderr is a terminal, else "
        f"a plain line every {LINE_INTERVAL_S:g} s)",
    )
