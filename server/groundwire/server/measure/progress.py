"""Progress bars on stderr, on by default when stderr is a terminal."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm


def progress_enabled(flag: bool | None) -> bool:
    """``--progress``/``--no-progress`` when given, else whether stderr is a terminal (a CI
    log gets the summary lines, not a redrawn bar)."""
    return sys.stderr.isatty() if flag is None else flag


def progress_bar(total: int | None, desc: str, unit: str, *, enabled: bool) -> tqdm[Any]:
    """A bar for ``total`` steps of ``unit``, described as ``desc``."""
    return tqdm(
        total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, leave=False
    )


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--progress``/``--no-progress`` (default: a bar when stderr is a terminal)."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
