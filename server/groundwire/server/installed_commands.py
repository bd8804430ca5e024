"""Subcommands that other installed distributions add to ours, through entry points.

``groundwire`` takes its ``eval`` and ``bench`` from the ``groundwire.commands`` group and
``groundwire reindex`` its ``compare`` step from ``groundwire.reindex_steps`` (both in the
tools' distribution). Standard library only: the command's parser, which loads this for
every command (``serve`` included), must not load anything heavier before the worker
supervisor has set up.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points


def add_installed(
    choices: argparse._SubParsersAction[argparse.ArgumentParser], group: str, prog: str
) -> None:
    """Let each entry of the entry-point ``group`` add its parser to ``choices`` (each is a
    callable taking ``choices`` that also sets the function to run as a parser default).
    Without the distribution there is no entry, so no such subcommand; an entry that fails to
    load is left out with a warning on stderr that names it after ``prog``."""
    for entry in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            entry.load()(choices)
        except Exception as exc:  # another distribution's fault must not break our command
            print(f"{prog}: warning: {entry.name!r} ({group}) left out: {exc}", file=sys.stderr)
