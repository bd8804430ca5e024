"""Load-test Retrieve and Generate over gRPC, side by side with the direct calls they wrap.

Generate: the scripted OpenAI-compatible upstream (--upstream go, the default, or python) and
`groundwire serve` run as separate processes, one server per variant and --workers value
(GROUNDWIRE_WORKERS; rows `ours w1`, `ours w2` when there are several). The load generator is
the Go program bench/loadgen (--loadgen go, the default; built into .tools/bin on first use:
`ours` through the Go SDK, `direct` a plain Go SSE client) or this process (--loadgen python:
grpc.aio and AsyncOpenAI). At each concurrency level (default with Go: 1, 32, 256, 1000), C
workers pull calls from one queue; per variant and level there is an untimed warm-up, then
--rounds rounds in which the variants take turns, their order rotating each round (drift in
the machine's load falls on all alike). Variants: `ours` (Generate through the server),
optionally `relay` (a server with GROUNDWIRE_COALESCE_DELTAS=false: one frame per upstream
chunk) and `direct-python` (the AsyncOpenAI baseline beside the Go one), and always `direct`
(the same request straight to the same upstream). Worker starts are spread over one answer's
duration (--no-stagger: together).
  TTFT       issuing the call -> first text (our first delta; the first chunk with content);
             time queued anywhere counts
  refused    RESOURCE_EXHAUSTED with reason ERROR_REASON_OVERLOADED: counted apart from
             errors, with the time to the refusal
  fallback   answers on the fallback route (from a healthy upstream there should be none)
  ITL        per stream, (last text - first text) / (tokens - 1): comparable on both sides
             although our server merges tokens that arrive together into one frame
  tok/s      per stream tokens / (total - TTFT); aggregate: all tokens / wall time
  errors     counted by kind: a raised call, no end frame, a degraded route (not the LLM's
             answer), a finish other than STOP, or not --tokens tokens
  overhead   ours - direct (ms), from each side's p50/p99 and from paired calls (call i of
             round r of each); ratios are ours / direct
  CPU        the server's CPU per stream (/proc, its whole process tree: every worker), and
             streams one core sustains at this pace (stream duration / CPU per stream); the
             load generator's and the upstream's CPU per stream beside it
  saturation per server, the most streams per second at any level, and the ratio of more
             workers to fewer
After the levels, --cancel-repeats streams are cancelled midway, timing how long the
upstream takes to see its connection closed.

Retrieve (needs --dataset, a BEIR directory: corpus.jsonl, queries.jsonl): the first --docs
documents are ingested once; the server is a separate `groundwire serve` process (Qdrant
Edge, MiniLM, a private redis-server) and the direct baseline calls the same embedder, BM25
encoder and store in this process (built from groundwire.clients as --server-env names
them), on a copy of the same index. Variants: `direct`, `miss`
(cache on, Redis emptied, distinct queries), `hit` (the --hit-queries queries, warmed),
optionally `bypass` (bypass_cache). Direct, bypass and miss ask the same queries each round.
Figures: latency p50/p95/p99, QPS, the server's CPU per call and QPS per core, ratios.

Requests per variant per level: at least --requests and 4 per worker, spread over the
rounds; a level's variant stops starting calls after --max-seconds. Results go to --output:
bench.json, report.md, PNG plots (latency percentiles and tokens/s against concurrency,
one colour per variant) and the child processes' logs. Timings are printed, never asserted.

The servers started here read no GROUNDWIRE_* variable of this environment (runs compare);
--server-env NAME=VALUE sets one for them. Compare rows within one run: every process of
the run shares this machine's cores, and direct pays for no server process.

  groundwire bench --dataset ../shared/datasets/scifact
  groundwire bench --scenarios generate --concurrency 1,32 --ttft-ms 0 --itl-ms 0
  groundwire bench --scenarios generate --workers 1,2     # levels 1, 32, 256, 1000
  groundwire bench --scenarios generate --generate-variants ours,relay --fail-every 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from groundwire.tools.benchmark.arguments import (
    SCENARIOS,
    Config,
    UsageError,
    config_from,
)
from groundwire.tools.benchmark.arguments import add_arguments as add_arguments
from groundwire.tools.measure.arguments import add_command


def _planned_steps(config: Config) -> int:
    per_variant = config.plan.calls_per_variant()
    steps = 0
    if config.retrieve is not None:
        steps += config.retrieve.docs  # ingest (fewer when the corpus is shorter)
        steps += per_variant * (1 + len(config.retrieve.variants)) * len(config.retrieve.modes)
    if config.generate is not None:
        from groundwire.tools.benchmark.generate import servers

        rows = 1 + len(servers(config.generate)) + ("direct-python" in config.generate.variants)
        steps += config.generate_plan.calls_per_variant() * rows + config.generate.cancel_repeats
    return steps


def caveat(config: Config) -> str:
    """The note printed and stored with the figures."""
    processes = ["the load generator (which also runs the direct baselines)", "our server(s)"]
    if config.generate:
        processes.append(f"the scripted upstream ({config.generate.upstream})")
    if config.retrieve:
        processes.append("redis-server")
    parts = [
        f"{os.cpu_count()} CPU cores shared by every process of this run: "
        f"{', '.join(processes[:-1])} and {processes[-1]}. Direct pays for no server process "
        "and no gRPC hop; on a saturated machine our server competes with the load generator "
        "for CPU, and the load generator itself can be the bottleneck (see the caller's CPU "
        "per call)."
    ]
    if config.retrieve:
        parts.append(
            "The Retrieve server is a separate process; its direct baseline runs in the load "
            "generator on a copy of the same index."
        )
    parts.append(
        "Compare rows within one run (overheads, ratios), not absolute times across runs or "
        "machines."
    )
    return " ".join(parts)


async def _run(config: Config, work: Path) -> dict[str, Any]:
    from groundwire.tools.benchmark.generate import run_generate
    from groundwire.tools.benchmark.retrieve import run_retrieve
    from groundwire.tools.measure.progress import progress_bar

    bar = progress_bar(_planned_steps(config), "bench", "call", enabled=config.progress)

    shown = [""]

    def tick(label: str) -> None:
        if shown[0] != label:
            shown[0] = label
            bar.set_description_str(label, refresh=False)
        bar.update(1)

    results: dict[str, Any] = {"retrieve": None, "generate": None}
    try:
        if config.retrieve is not None:
            results["retrieve"] = await run_retrieve(config.plan, config.retrieve, work, tick)
        if config.generate is not None:
            results["generate"] = await run_generate(
                config.generate_plan, config.generate, work, tick
            )
    finally:
        bar.close()
    return results


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """A SIGTERM unwinds like Ctrl-C, so the child processes are stopped on the way out
    (only the main thread may set handlers; elsewhere, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to the ``groundwire`` command (the ``groundwire.commands`` entry point)."""
    summary = "load-test Retrieve and Generate over gRPC beside the direct calls"
    add_command(commands, "bench", summary, __doc__, add_arguments, main)


def main(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 when it ran (whatever it measured), 2 on bad arguments, 1 when a
    process it needs failed, 130 when interrupted."""
    try:
        config = config_from(args)
    except (UsageError, argparse.ArgumentTypeError) as exc:
        print(f"groundwire bench: {exc}", file=sys.stderr)
        return 2

    from groundwire.clients.errors import GroundwireError
    from groundwire.tools.measure.results import environment, write_json
    from groundwire.tools.measure.target import quiet_server_logs

    quiet_server_logs()
    began = time.perf_counter()
    with _sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        work = Path(tmp)
        try:
            results = asyncio.run(_run(config, work))
        except KeyboardInterrupt:
            print("groundwire bench: interrupted; child processes stopped", file=sys.stderr)
            return 130
        except (RuntimeError, GroundwireError) as exc:
            # A process that would not start or a part that would not open: say which, and
            # keep the logs.
            print(f"groundwire bench: {exc}", file=sys.stderr)
            return 1
        finally:
            _keep_logs(work, config.output / "logs")
    document: dict[str, Any] = {
        "settings": _settings(args, config),
        "note": caveat(config),
        "environment": environment(),
        "elapsed_s": time.perf_counter() - began,
        **results,
    }
    write_json(config.output / "bench.json", document)
    _write(document, config.output)
    print(f"wrote {config.output} in {document['elapsed_s']:.0f} s")
    return 0


def _keep_logs(work: Path, logs: Path) -> None:
    found = sorted(work.glob("*.log"))
    if found:
        logs.mkdir(parents=True, exist_ok=True)
        for path in found:
            shutil.copy(path, logs / path.name)


def _settings(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    plan = config.plan if config.retrieve is not None else config.generate_plan
    generate = config.generate
    return {
        "scenarios": [s for s in SCENARIOS if getattr(config, s) is not None],
        "concurrency": list(plan.levels),
        "generate_concurrency": list(config.generate_plan.levels) if generate else [],
        "calls_per_variant_per_level": {
            str(c): plan.calls_per_slice(c) * plan.rounds
            for c in dict.fromkeys(plan.levels + config.generate_plan.levels)
        },
        "loadgen": generate.loadgen if generate else None,
        "upstream": generate.upstream if generate else None,
        "workers": list(generate.workers) if generate else [],
        "rounds": plan.rounds,
        "max_seconds": plan.max_seconds,
        "generate_variants": list(config.generate.variants) if config.generate else [],
        "retrieve_variants": list(config.retrieve.variants) if config.retrieve else [],
        "modes": list(config.retrieve.modes) if config.retrieve else [],
        "docs": args.docs,
        "top_k": args.top_k,
        "hit_queries": args.hit_queries,
        "dataset": str(args.dataset) if args.dataset else None,
        "server_env": args.server_env,
    }


def _write(document: dict[str, Any], output: Path) -> None:
    """Print the tables; write the plots and report.md."""
    from groundwire.tools.benchmark.charts import generate_plots, retrieve_plots
    from groundwire.tools.benchmark.report import markdown_report, terminal_report
    from groundwire.tools.measure.plots import PlotsUnavailableError

    print(terminal_report(document))
    output.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    try:
        if document["retrieve"]:
            plots += retrieve_plots(document["retrieve"], output)
        if document["generate"]:
            plots += generate_plots(document["generate"], output)
    except PlotsUnavailableError as exc:
        print(f"groundwire bench: no plots: {exc}", file=sys.stderr)
    (output / "report.md").write_text(markdown_report(document, plots), encoding="utf-8")
