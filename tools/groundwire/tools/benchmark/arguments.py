"""The arguments of ``groundwire bench``, and the validated configuration they make."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from groundwire.tools.measure.arguments import non_negative, parse_levels, positive, split_names

if TYPE_CHECKING:
    from groundwire.tools.benchmark.generate import GenerateOptions
    from groundwire.tools.benchmark.plan import Plan
    from groundwire.tools.benchmark.retrieve import RetrieveOptions
    from groundwire.tools.measure.progress import Progress

SCENARIOS = ("retrieve", "generate")
# Besides direct: our server (ours, relay) or the Python AsyncOpenAI baseline beside the Go one.
GENERATE_VARIANTS = ("ours", "relay", "direct-python")
LOADGENS = ("go", "python")
DEFAULT_LEVELS = (1, 32, 256)
# The Go load generator keeps pace with a thousand streams; the Python one does not.
GO_GENERATE_LEVELS = (1, 32, 256, 1000)
RETRIEVE_VARIANTS = ("bypass", "miss", "hit")
MODES = ("dense", "sparse", "hybrid")


class UsageError(ValueError):
    """Arguments that do not make a runnable benchmark."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    from groundwire.tools.measure.progress import add_progress_argument

    parser.add_argument(
        "--scenarios",
        metavar="LIST",
        help="comma-separated: retrieve, generate (default: both; generate only without --dataset)",
    )
    parser.add_argument(
        "--concurrency",
        metavar="LEVELS",
        help="comma-separated levels (default: 1,32,256; Generate with the Go load generator "
        "alone: 1,32,256,1000)",
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
        help="besides direct: ours (coalescing deltas), relay (one frame per upstream chunk), "
        "direct-python (the Python AsyncOpenAI baseline, with --loadgen go)",
    )
    generate.add_argument(
        "--loadgen",
        choices=LOADGENS,
        default="go",
        help="who makes the calls: go (bench/loadgen: the Go SDK, a Go SSE client for direct; "
        "built into .tools/bin) or python (grpc.aio and AsyncOpenAI in this process)",
    )
    generate.add_argument(
        "--upstream",
        choices=("go", "python"),
        default="go",
        help="the scripted upstream: go (loadgen upstream) or python (scripted_llm)",
    )
    generate.add_argument(
        "--workers",
        metavar="LIST",
        default="1",
        help="comma-separated GROUNDWIRE_WORKERS values: one server per value, all measured "
        "side by side",
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
    """The validated arguments. ``plan`` is Retrieve's, ``generate_plan`` Generate's: the same
    but for their default levels."""

    plan: Plan
    generate_plan: Plan
    retrieve: RetrieveOptions | None
    generate: GenerateOptions | None
    output: Path
    progress: Progress


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


@functools.cache
def worker_support() -> bool:
    """Whether the installed server runs worker processes: ``groundwire serve --help``
    offers ``--workers`` (``GROUNDWIRE_WORKERS``)."""
    from groundwire.tools.benchmark.processes import serve_argv

    shown = subprocess.run(
        [*serve_argv(), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    return "--workers" in shown.stdout


def _workers(text: str) -> tuple[int, ...]:
    try:
        values = tuple(dict.fromkeys(parse_levels(text)))
    except (ValueError, argparse.ArgumentTypeError):
        raise UsageError(
            f"--workers expects comma-separated counts of 1 or more, got {text!r}"
        ) from None
    if values != (1,) and not worker_support():
        raise UsageError(
            f"--workers {text}: this server has no worker processes (no GROUNDWIRE_WORKERS "
            "setting); use --workers 1"
        )
    return values


def _levels(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if text is None:
        return default
    try:
        return tuple(parse_levels(text))
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise UsageError(f"--concurrency: {exc}") from None


def _generate_options(args: argparse.Namespace, server_env: dict[str, str]) -> GenerateOptions:
    from groundwire.tools.benchmark.generate import GenerateOptions
    from groundwire.tools.benchmark.go_loadgen import unavailable_reason
    from groundwire.tools.benchmark.upstream import UpstreamScript

    variants = _names("--generate-variants", args.generate_variants, GENERATE_VARIANTS)
    needs_openai = args.loadgen == "python" or "direct-python" in variants
    if needs_openai and importlib.util.find_spec("openai") is None:
        raise UsageError(
            "the Python direct baseline needs the openai package: install groundwire with the "
            "tools extra"
        )
    if "go" in (args.loadgen, args.upstream):
        reason = unavailable_reason()
        if reason is not None:
            raise UsageError(
                f"the Go load generator and upstream: {reason}; use --loadgen "
                "python --upstream python"
            )
    if not {"ours", "relay"} & set(variants):
        raise UsageError(
            "--generate-variants needs ours or relay (the direct baseline asks a server which "
            "model it calls)"
        )
    if args.loadgen == "python" and "direct-python" in variants:
        raise UsageError("direct-python is the direct row itself with --loadgen python")
    if not 400 <= args.fail_status <= 599:
        raise UsageError("--fail-status must be an HTTP error status (400-599)")
    if "GROUNDWIRE_WORKERS" in server_env:
        raise UsageError("generate: give the worker counts with --workers, not --server-env")
    return GenerateOptions(
        variants=variants,
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
        loadgen=args.loadgen,
        upstream=args.upstream,
        workers=_workers(args.workers),
    )


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
    from groundwire.tools.benchmark.plan import Plan
    from groundwire.tools.benchmark.retrieve import RetrieveOptions, check_direct_env
    from groundwire.tools.benchmark.retrieve_calls import read_queries
    from groundwire.tools.evaluation.beir import DatasetError
    from groundwire.tools.measure.progress import progress_enabled

    scenarios = _scenarios(args)
    plan = Plan(
        _levels(args.concurrency, DEFAULT_LEVELS), args.requests, args.rounds, args.max_seconds
    )
    go_alone = args.loadgen == "go" and "retrieve" not in scenarios
    generate_plan = Plan(
        _levels(args.concurrency, GO_GENERATE_LEVELS if go_alone else DEFAULT_LEVELS),
        args.requests,
        args.rounds,
        args.max_seconds,
    )
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
        problem = check_direct_env(server_env)
        if problem:
            raise UsageError(f"retrieve: {problem}")
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
        generate = _generate_options(args, server_env)
    return Config(
        plan, generate_plan, retrieve, generate, args.output, progress_enabled(args.progress)
    )
