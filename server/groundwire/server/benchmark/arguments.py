"""The arguments of ``groundwire bench``, and the validated configuration they make."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from groundwire.server.measure.arguments import non_negative, parse_levels, positive, split_names

if TYPE_CHECKING:
    from groundwire.server.benchmark.generate import GenerateOptions
    from groundwire.server.benchmark.plan import Plan
    from groundwire.server.benchmark.retrieve import RetrieveOptions

SCENARIOS = ("retrieve", "generate")
GENERATE_VARIANTS = ("ours", "relay")
RETRIEVE_VARIANTS = ("bypass", "miss", "hit")
MODES = ("dense", "sparse", "hybrid")


class UsageError(ValueError):
    """Arguments that do not make a runnable benchmark."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    from groundwire.server.measure.progress import add_progress_argument

    parser.add_argument(
        "--scenarios",
        metavar="LIST",
        help="comma-separated: retrieve, generate (default: both; generate only without --dataset)",
    )
    parser.add_argument(
        "--concurrency", metavar="LEVELS", default="1,32,256", help="comma-separated levels"
    )
    parser.add_argument(
        "--requests",
        metavar="N",
        type=positive(int),
        default=200,
        help="calls per variant per level, at least (and at least 4 per worker)",
    )
    parser.add_argument(
        "--rounds", metavar="N", type=positive(int), default=3, help="interleaving rounds"
    )
    parser.add_argument(
        "--max-seconds",
        metavar="S",
        type=positive(float),
        default=300.0,
        help="no more calls start after this long per variant per level",
    )
    generate = parser.add_argument_group("generate")
    generate.add_argument(
        "--tokens", metavar="N", type=positive(int), default=64, help="tokens per answer"
    )
    generate.add_argument(
        "--ttft-ms",
        metavar="MS",
        type=non_negative(float),
        default=300.0,
        help="upstream time to first token",
    )
    generate.add_argument(
        "--itl-ms",
        metavar="MS",
        type=non_negative(float),
        default=5.0,
        help="upstream time between tokens",
    )
    generate.add_argument(
        "--generate-variants",
        metavar="LIST",
        default="ours",
        help="besides direct: ours (coalescing deltas), relay (one frame per upstream chunk)",
    )
    generate.add_argument(
        "--fail-every",
        metavar="N",
        type=non_negative(int),
        default=0,
        help="every Nth upstream request answers --fail-status instead (0: none)",
    )
    generate.add_argument(
        "--fail-status", metavar="CODE", type=int, default=500, help="HTTP status of failures"
    )
    generate.add_argument(
        "--stagger",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="spread worker starts over one answer's duration",
    )
    generate.add_argument(
        "--cancel-repeats",
        metavar="N",
        type=non_negative(int),
        default=20,
        help="streams cancelled midway to time the upstream close (0: skip)",
    )
    retrieve = parser.add_argument_group("retrieve")
    retrieve.add_argument(
        "--dataset", metavar="DIR", type=Path, help="BEIR directory (corpus.jsonl, queries.jsonl)"
    )
    retrieve.add_argument(
        "--docs", metavar="N", type=positive(int), default=1000, help="first N documents"
    )
    retrieve.add_argument(
        "--modes", metavar="LIST", default="hybrid", help="comma-separated: dense, sparse, hybrid"
    )
    retrieve.add_argument(
        "--retrieve-variants",
        metavar="LIST",
        default="miss,hit",
        help="besides direct: bypass, miss, hit",
    )
    retrieve.add_argument(
        "--top-k", metavar="K", type=positive(int), default=10, help="chunks per Retrieve"
    )
    retrieve.add_argument(
        "--hit-queries",
        metavar="N",
        type=positive(int),
        default=64,
        help="warmed queries the hits ask",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a GROUNDWIRE_* setting for the servers started here (repeatable)",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        default=Path("results/bench"),
        help="directory for the results",
    )
    add_progress_argument(parser)


@dataclass(frozen=True)
class Config:
    """The validated arguments."""

    plan: Plan
    retrieve: RetrieveOptions | None
    generate: GenerateOptions | None
    output: Path
    progress: bool


def _server_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("GROUNDWIRE_"):
            raise UsageError(f"--server-env expects GROUNDWIRE_NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


def _names(flag: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(split_names(text, allowed))
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _scenarios(args: argparse.Namespace) -> tuple[str, ...]:
    if args.scenarios is not None:
        chosen = _names("--scenarios", args.scenarios, SCENARIOS)
        if "retrieve" in chosen and args.dataset is None:
            raise UsageError("retrieve needs --dataset (a BEIR directory)")
        return chosen
    if args.dataset is None:
        print(
            "groundwire bench: retrieve needs --dataset (a BEIR directory: corpus.jsonl, "
            "queries.jsonl); running generate only",
            file=sys.stderr,
        )
        return ("generate",)
    return SCENARIOS


def config_from(args: argparse.Namespace) -> Config:
    """Check the arguments together; UsageError or ArgumentTypeError says what is wrong."""
    from groundwire.server.benchmark.generate import GenerateOptions
    from groundwire.server.benchmark.plan import Plan
    from groundwire.server.benchmark.retrieve import RetrieveOptions
    from groundwire.server.benchmark.retrieve_calls import read_queries
    from groundwire.server.benchmark.upstream import UpstreamScript
    from groundwire.server.evaluation.beir import DatasetError
    from groundwire.server.measure.progress import progress_enabled

    try:
        levels = parse_levels(args.concurrency)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise UsageError(f"--concurrency: {exc}") from None
    plan = Plan(tuple(levels), args.requests, args.rounds, args.max_seconds)
    scenarios = _scenarios(args)
    server_env = _server_env(args.server_env)
    retrieve = generate = None
    if "retrieve" in scenarios:
        dataset: Path = args.dataset
        for name in ("corpus.jsonl", "queries.jsonl"):
            if not (dataset / name).is_file():
                raise UsageError(f"--dataset {dataset}: no {name}")
        try:
            queries = len(read_queries(dataset))
        except DatasetError as exc:
            raise UsageError(f"--dataset: {exc}") from None
        if queries <= args.hit_queries:
            raise UsageError(
                f"--dataset has {queries} distinct queries: more than --hit-queries "
                f"({args.hit_queries}) are needed"
            )
        retrieve = RetrieveOptions(
            dataset=dataset,
            docs=args.docs,
            modes=_names("--modes", args.modes, MODES),
            variants=_names("--retrieve-variants", args.retrieve_variants, RETRIEVE_VARIANTS),
            top_k=args.top_k,
            hit_queries=args.hit_queries,
            server_env=server_env,
        )
    if "generate" in scenarios:
        if importlib.util.find_spec("openai") is None:
            raise UsageError(
                "generate needs the openai package (its direct baseline): install groundwire "
                "with the tools extra"
            )
        if not 400 <= args.fail_status <= 599:
            raise UsageError("--fail-status must be an HTTP error status (400-599)")
        generate = GenerateOptions(
            variants=_names("--generate-variants", args.generate_variants, GENERATE_VARIANTS),
            script=UpstreamScript(
                tokens=args.tokens,
                ttft_s=args.ttft_ms / 1000,
                itl_s=args.itl_ms / 1000,
                fail_every=args.fail_every,
                fail_status=args.fail_status,
            ),
            stagger=args.stagger,
            cancel_repeats=args.cancel_repeats,
            server_env=server_env,
        )
    return Config(plan, retrieve, generate, args.output, progress_enabled(args.progress))
