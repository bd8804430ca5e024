"""Server CPU per Generate stream, for several server builds side by side in one run.

``groundwire bench`` compares our server with the direct call; this compares *servers*: the
same scripted upstream, the same load generator, and one ``groundwire serve`` process per
variant, all started at once and measured in turns (the order rotating each round), so that
drift in a busy machine's load falls on every variant alike. A variant is a name plus
settings for its process::

    base:tree=/tmp/gw-base            # another source tree (git archive of an older commit)
    base-uvloop:tree=/tmp/gw-base,install_uvloop=1
    new-asyncio:GROUNDWIRE_EVENT_LOOP=asyncio
    new-uvloop:GROUNDWIRE_EVENT_LOOP=uvloop
    prof:GROUNDWIRE_EVENT_LOOP=asyncio,profile=/tmp/serve.prof   # cProfile of the server

``tree`` puts that tree's ``server``, ``sdks/python``, ``tools`` and ``testing`` first on
PYTHONPATH (a tree from before the four distributions keeps the client layer in ``clients``:
copy its ``groundwire/clients`` into ``server/groundwire`` first);
``install_uvloop`` runs the server under ``uvloop.install()`` (for trees that have no
setting for it); ``profile`` writes a cProfile of the serving process at its exit. Every
other ``KEY=VALUE`` is an environment variable of the server.

Per level and variant: calls ok and failed, the server's CPU per stream (user + system from
``/proc``, over the measured slices), TTFT p50/p99 from the caller's side, and TTFT overhead
(p50 and p99 against the ``direct`` row: the same request straight to the same upstream
through our aiohttp SSE reader, measured in the same rounds). Printed, and written as JSON
with ``--output``. Timings are never asserted.

    python -m groundwire.tools.measure.stream_cpu --levels 32,256 \\
        --variant base:tree=/tmp/gw-base --variant new:GROUNDWIRE_EVENT_LOOP=uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from groundwire.clients.chat import ChatMessage, ChatRequest
from groundwire.clients.llm import OpenAIChatClient
from groundwire.testing.redis_process import free_port
from groundwire.tools.benchmark.load import CallFailed, Slice, run_slice
from groundwire.tools.benchmark.processes import (
    CpuProbe,
    child_env,
    child_process,
    wait_until_serving,
)
from groundwire.tools.benchmark.streams import (
    CALL_TIMEOUT_S,
    StreamCall,
    StreamTiming,
    generate_call,
    standard_model,
    upstream_request,
)
from groundwire.tools.benchmark.upstream import UpstreamScript, scripted_upstream
from groundwire.tools.measure.stats import percentile
from groundwire.v1 import capabilities_pb2

_SERVE = "from groundwire.server.cli import main; raise SystemExit(main(['serve']))"
_SERVE_UVLOOP = "import uvloop; uvloop.install(); " + _SERVE
_OPTIONS = ("tree", "install_uvloop", "profile")


@dataclass(frozen=True)
class Variant:
    """One server process of the comparison."""

    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    tree: str | None = None
    install_uvloop: bool = False
    profile: str | None = None

    def argv(self) -> list[str]:
        """The command that starts this variant's server."""
        if self.profile:  # cProfile runs modules, not -c code (and then without uvloop)
            serve = ["-m", "groundwire.server.cli", "serve"]
            return [sys.executable, "-m", "cProfile", "-o", self.profile, *serve]
        return [sys.executable, "-c", _SERVE_UVLOOP if self.install_uvloop else _SERVE]

    def pythonpath(self) -> dict[str, str]:
        """PYTHONPATH for a variant on another source tree (empty: this one)."""
        if self.tree is None:
            return {}
        root = Path(self.tree)
        return {
            "PYTHONPATH": ":".join(
                str(root / p) for p in ("server", "sdks/python", "tools", "testing")
            )
        }


def parse_variant(text: str) -> Variant:
    """``NAME[:KEY=VALUE,...]`` (see the module docstring)."""
    name, _, rest = text.partition(":")
    if not name or name == "direct":
        raise argparse.ArgumentTypeError(f"a variant needs a name other than direct: {text!r}")
    env: dict[str, str] = {}
    options: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        (options if key in _OPTIONS else env)[key] = value
    return Variant(
        name,
        env,
        tree=options.get("tree"),
        install_uvloop=options.get("install_uvloop", "0") not in ("", "0", "false"),
        profile=options.get("profile"),
    )


def _rotation(order: Sequence[str], round_number: int) -> list[str]:
    shift = round_number % len(order)
    return [*order[shift:], *order[:shift]]


def _summary(
    slices: Sequence[Slice[StreamTiming]], worker: str | None, direct: Mapping[str, float] | None
) -> dict[str, Any]:
    results = [r for s in slices for r in s.succeeded]
    errors: dict[str, int] = {}
    for s in slices:
        for kind, count in s.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    ttft = [r.ttft_s * 1000 for r in results]
    row: dict[str, Any] = {
        "ok": len(results),
        "errors": errors,
        "ttft_p50_ms": percentile(ttft, 50),
        "ttft_p99_ms": percentile(ttft, 99),
        "frames_per_stream": (
            sum(r.frames for r in results) / len(results) if results else math.nan
        ),
        "loadgen_cpu_ms_per_stream": _cpu_ms(slices, "bench", len(results)),
        "upstream_cpu_ms_per_stream": _cpu_ms(slices, "upstream", len(results)),
    }
    if worker is not None:
        row["server_cpu_ms_per_stream"] = _cpu_ms(slices, worker, len(results))
    if direct is not None:
        row["ttft_overhead_p50_ms"] = row["ttft_p50_ms"] - direct["ttft_p50_ms"]
        row["ttft_overhead_p99_ms"] = row["ttft_p99_ms"] - direct["ttft_p99_ms"]
    return row


def _cpu_ms(slices: Sequence[Slice[StreamTiming]], name: str, calls: int) -> float:
    seconds = sum(s.cpu_s.get(name, math.nan) for s in slices)
    return seconds * 1000 / calls if calls else math.nan


async def _measure(
    variants: Sequence[Variant],
    addresses: Mapping[str, str],
    base_url: str,
    probe: CpuProbe,
    args: argparse.Namespace,
    script: UpstreamScript,
    prepare: Any,
) -> list[dict[str, Any]]:
    pool = max(args.levels) + 8
    client = OpenAIChatClient(base_url, max_connections=pool, idle_timeout_s=CALL_TIMEOUT_S)
    channels = {v.name: grpc.aio.insecure_channel(addresses[v.name]) for v in variants}
    model = await standard_model(addresses[variants[0].name])
    calls: dict[str, StreamCall] = {"direct": _direct_call(client, script.tokens, model)}
    calls.update({name: generate_call(ch, script.tokens) for name, ch in channels.items()})
    order = ["direct", *(v.name for v in variants)]
    levels = []
    try:
        for level in args.levels:
            per_slice = max(args.streams_per_worker * level, args.min_streams)
            for name in order:  # warm-up: connections, lazy imports
                await asyncio.to_thread(prepare)
                await run_slice(calls[name], level, level, deadline_s=60.0)
            measured: dict[str, list[Slice[StreamTiming]]] = {n: [] for n in order}
            for round_number in range(args.rounds):
                for name in _rotation(order, round_number):
                    await asyncio.to_thread(prepare)
                    measured[name].append(
                        await run_slice(
                            calls[name],
                            per_slice,
                            level,
                            deadline_s=120.0,
                            stagger_s=script.answer_s,
                            cpu=probe,
                        )
                    )
                    print(f"  c={level} round {round_number + 1} {name} done", file=sys.stderr)
            direct = _summary(measured["direct"], None, None)
            rows = {"direct": direct}
            rows.update({v.name: _summary(measured[v.name], v.name, direct) for v in variants})
            levels.append({"concurrency": level, "streams_per_slice": per_slice, "rows": rows})
            _print_level(levels[-1])
    finally:
        for channel in channels.values():
            await channel.close(None)
        await client.close()
    return levels


def _direct_call(
    client: OpenAIChatClient, expected_tokens: int, model: capabilities_pb2.ModelInfo
) -> StreamCall:
    """The baseline: the same request straight to the upstream through our own SSE reader
    (aiohttp; far lighter on the load generator than ``AsyncOpenAI``, which at 256 streams
    saturates this process and so measures itself)."""
    body = upstream_request(model)
    request = ChatRequest(
        model=body["model"],
        messages=tuple(ChatMessage(m["role"], m["content"]) for m in body["messages"]),
        temperature=body["temperature"],
        max_tokens=body["max_tokens"],
    )

    async def call(_: int) -> StreamTiming:
        started = time.perf_counter()
        first: float | None = None
        last = 0.0
        frames = pieces = 0
        usage_tokens: int | None = None
        async for chunk in client.stream(request):
            frames += 1
            if chunk.text:
                last = time.perf_counter() - started
                first = last if first is None else first
            pieces += chunk.pieces
            if chunk.usage is not None:
                usage_tokens = chunk.usage.completion_tokens
        total = time.perf_counter() - started
        tokens = usage_tokens if usage_tokens is not None else pieces
        if first is None or tokens != expected_tokens:
            raise CallFailed(f"{tokens} tokens, not {expected_tokens}")
        return StreamTiming(first, last, total, tokens, frames, frames, (), "direct")

    return call


def _print_level(level: Mapping[str, Any]) -> None:
    print(f"\nconcurrency {level['concurrency']} ({level['streams_per_slice']} streams a slice)")
    header = (
        f"{'variant':<16}{'ok':>6}{'err':>5}{'srv CPU ms/stream':>19}{'TTFT p50':>10}"
        f"{'p99':>9}{'ovh p50':>9}{'ovh p99':>9}{'frames':>8}{'loadgen ms':>12}{'upstream ms':>13}"
    )
    print(header)
    for name, row in level["rows"].items():
        print(
            f"{name:<16}{row['ok']:>6}{sum(row['errors'].values()):>5}"
            f"{row.get('server_cpu_ms_per_stream', math.nan):>19.2f}"
            f"{row['ttft_p50_ms']:>10.1f}{row['ttft_p99_ms']:>9.1f}"
            f"{row.get('ttft_overhead_p50_ms', math.nan):>9.1f}"
            f"{row.get('ttft_overhead_p99_ms', math.nan):>9.1f}"
            f"{row['frames_per_stream']:>8.1f}{row['loadgen_cpu_ms_per_stream']:>12.2f}"
            f"{row['upstream_cpu_ms_per_stream']:>13.2f}"
        )
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the upstream and every variant's server; measure each level."""
    script = UpstreamScript(
        tokens=args.tokens, ttft_s=args.ttft_ms / 1000, itl_s=args.itl_ms / 1000
    )
    work = Path(args.work or tempfile.mkdtemp(prefix="gw-stream-cpu-"))
    variants: list[Variant] = args.variant
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(scripted_upstream(work))
        addresses: dict[str, str] = {}
        pids = {"upstream": upstream.child.pid}
        children = []
        for variant in variants:
            port = free_port()
            data_dir = work / f"data-{variant.name}"
            data_dir.mkdir(exist_ok=True)
            env = child_env(
                {
                    "GROUNDWIRE_LISTEN": f"127.0.0.1:{port}",
                    "GROUNDWIRE_LLM_BASE_URL": upstream.base_url,
                    "GROUNDWIRE_EMBEDDER": "none",
                    "GROUNDWIRE_DATA_DIR": str(data_dir),
                    "GROUNDWIRE_METRICS_PORT": "0",
                    "GROUNDWIRE_LOG_LEVEL": "WARNING",
                    "GROUNDWIRE_GRACE_PERIOD_S": "0",
                    "GROUNDWIRE_LLM_MAX_CONNECTIONS": str(max(256, max(args.levels) + 16)),
                    **variant.pythonpath(),
                    **variant.env,
                }
            )
            child = stack.enter_context(
                child_process(f"server-{variant.name}", variant.argv(), env, work)
            )
            children.append(child)
            addresses[variant.name] = f"127.0.0.1:{port}"
            pids[variant.name] = child.pid
        await asyncio.gather(
            *(
                wait_until_serving(c, addresses[v.name])
                for c, v in zip(children, variants, strict=True)
            )
        )
        started = time.time()
        levels = await _measure(
            variants,
            addresses,
            upstream.base_url,
            CpuProbe(pids),
            args,
            script,
            lambda: upstream.prepare(script),
        )
    return {
        "started": started,
        "upstream": {"tokens": args.tokens, "ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms},
        "variants": [
            {"name": v.name, "env": dict(v.env), "tree": v.tree, "install_uvloop": v.install_uvloop}
            for v in variants
        ],
        "rounds": args.rounds,
        "levels": levels,
        "logs": str(work),
    }


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 32,256, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("levels must be positive")
    return levels


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run, print the tables (and write JSON with ``--output``)."""
    parser = argparse.ArgumentParser(
        prog="python -m groundwire.tools.measure.stream_cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variant", type=parse_variant, action="append", required=True)
    parser.add_argument("--levels", type=_levels, default=[32, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams-per-worker", type=int, default=2)
    parser.add_argument("--min-streams", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--ttft-ms", type=float, default=300.0)
    parser.add_argument("--itl-ms", type=float, default=5.0)
    parser.add_argument("--work", help="where logs (and data dirs) go; default: a temp dir")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)
    names = [v.name for v in args.variant]
    if len(set(names)) != len(names):
        parser.error("variant names must differ")
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
