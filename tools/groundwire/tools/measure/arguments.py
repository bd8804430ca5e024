"""Value types for the measuring commands' arguments (argparse ``type=`` callables and the
lists parsed after it). Light on purpose: the CLI imports it to build its parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TypeVar

N = TypeVar("N", int, float)


def _number(kind: type[N], check: Callable[[N], bool], rule: str) -> Callable[[str], N]:
    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


def positive(kind: type[N]) -> Callable[[str], N]:
    """An argparse type: a number of ``kind`` above 0."""
    return _number(kind, lambda value: value > 0, "above 0")


def non_negative(kind: type[N]) -> Callable[[str], N]:
    """An argparse type: a number of ``kind``, 0 or more."""
    return _number(kind, lambda value: value >= 0, "0 or more")


def parse_levels(text: str) -> list[int]:
    """``"1,32,256"`` → ``[1, 32, 256]``; each a positive integer."""
    levels: list[int] = []
    for part in text.split(","):
        value = int(part.strip())
        if value < 1:
            raise argparse.ArgumentTypeError(f"concurrency must be at least 1, got {value}")
        levels.append(value)
    return levels


def split_names(text: str, allowed: Sequence[str]) -> list[str]:
    """``"dense,hybrid"`` → ``["dense", "hybrid"]``, each one of ``allowed``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(allowed)}; got {text!r}"
        )
    return names


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    main: Callable[[argparse.Namespace], int],
) -> None:
    """Add a tool's subcommand to the ``groundwire`` command (what a ``groundwire.commands``
    entry point does): its parser, its arguments, and ``main`` as ``run_command``."""
    parser = commands.add_parser(
        name,
        help=summary,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(run_command=main)
