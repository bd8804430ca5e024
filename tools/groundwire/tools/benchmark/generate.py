"""The Generate scenario: our server's streams beside the direct stream to the same scripted
upstream, at each concurrency level, interleaved.

Processes: the scripted upstream (Go by default), one ``groundwire serve`` per server variant
and worker count (``ours``: coalescing deltas, the default; ``relay``:
``GROUNDWIRE_COALESCE_DELTAS=false``, one frame per upstream chunk; each with
``GROUNDWIRE_WORKERS=N``), each separate, so the CPU probe can tell whose time is whose (a
server's whole process tree: its workers count), and the load generator. With ``--loadgen go``
(the default) that is ``loadgen drive``: ``ours`` through the Go SDK over up to 64 gRPC
connections per server, ``direct`` a plain Go SSE client with a connection per stream; the
Python ``AsyncOpenAI`` baseline can run beside it as ``direct-python``. With ``--loadgen
python`` it is this process: one event loop, one gRPC channel per server and one
``AsyncOpenAI`` client (``max_retries=0``) with a connection per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from groundwire.testing.redis_process import free_port
from groundwire.tools.benchmark.load import CpuSample, Measured, Slice, Tick, run_slice
from groundwire.tools.benchmark.plan import Plan, rotation
from groundwire.tools.benchmark.processes import (
    CpuProbe,
    child_env,
    child_process,
    serve_argv,
    wait_until_serving,
)
from groundwire.tools.benchmark.streams import (
    CALL_TIMEOUT_S,
    StreamCall,
    StreamTiming,
    direct_call,
    generate_call,
    generate_request,
    standard_model,
    upstream_request,
)
from groundwire.tools.benchmark.summaries import (
    saturation,
    stream_comparison,
    stream_summary,
)
from groundwire.tools.benchmark.upstream import ScriptedUpstream, UpstreamScript, scripted_upstream
from groundwire.tools.measure.stats import percentile
from groundwire.tools.measure.target import open_channel
from groundwire.v1 import generation_pb2_grpc

SERVER_VARIANTS = {"ours": "true", "relay": "false"}  # GROUNDWIRE_COALESCE_DELTAS
PYTHON_DIRECT = "direct-python"
LABELS = {PYTHON_DIRECT: "direct (python AsyncOpenAI)"}  # how the report names a row

if TYPE_CHECKING:
    from groundwire.tools.benchmark.go_loadgen import GoDriver


@dataclass(frozen=True)
class GenerateOptions:
    """What the Generate scenario runs besides the plan."""

    variants: tuple[str, ...]  # of SERVER_VARIANTS and PYTHON_DIRECT; direct always runs
    script: UpstreamScript
    stagger: bool
    cancel_repeats: int
    server_env: Mapping[str, str]
    loadgen: str = "python"  # who calls: go (bench/loadgen) or python (this process)
    upstream: str = "python"  # the scripted upstream: go or python
    workers: tuple[int, ...] = (1,)  # GROUNDWIRE_WORKERS, one server per value


@dataclass(frozen=True)
class Server:
    """One server variant at one worker count: its row's name, ``ours w2`` when several worker
    counts run, else just the variant."""

    name: str
    variant: str  # of SERVER_VARIANTS
    workers: int


def servers(options: GenerateOptions) -> list[Server]:
    """The servers to start, in the order their rows appear."""
    several = len(options.workers) > 1
    return [
        Server(f"{variant} w{workers}" if several else variant, variant, workers)
        for variant in options.variants
        if variant in SERVER_VARIANTS
        for workers in options.workers
    ]


class Runner(Protocol):
    """Runs one slice of one variant's calls (the Python ``run_slice`` or the Go driver)."""

    def __call__(
        self,
        count: int,
        concurrency: int,
        *,
        deadline_s: float,
        stagger_s: float = 0.0,
        cpu: CpuSample | None = None,
        on_done: Callable[[], None] | None = None,
        warmup: bool = False,
    ) -> Awaitable[Slice[StreamTiming]]: ...


def _python_runner(call: StreamCall) -> Runner:
    async def run(
        count: int,
        concurrency: int,
        *,
        deadline_s: float,
        stagger_s: float = 0.0,
        cpu: CpuSample | None = None,
        on_done: Callable[[], None] | None = None,
        warmup: bool = False,
    ) -> Slice[StreamTiming]:
        return await run_slice(
            call,
            count,
            concurrency,
            deadline_s=deadline_s,
            stagger_s=stagger_s,
            cpu=cpu,
            on_done=on_done,
        )

    return run


def _go_runner(driver: GoDriver, variant: str, address: str, tokens: int) -> Runner:
    async def run(
        count: int,
        concurrency: int,
        *,
        deadline_s: float,
        stagger_s: float = 0.0,
        cpu: CpuSample | None = None,
        on_done: Callable[[], None] | None = None,
        warmup: bool = False,
    ) -> Slice[StreamTiming]:
        return await driver.slice(
            variant,
            address,
            count,
            concurrency,
            deadline_s=deadline_s,
            expect_tokens=tokens,
            stagger_s=stagger_s,
            cpu=cpu,
            on_done=on_done,
            quiet=warmup,
        )

    return run


def _server_env(
    options: GenerateOptions, server: Server, port: int, upstream: str, data_dir: Path, pool: int
) -> dict[str, str]:
    return child_env(
        {
            "GROUNDWIRE_LISTEN": f"127.0.0.1:{port}",
            "GROUNDWIRE_LLM_BASE_URL": upstream,
            "GROUNDWIRE_EMBEDDER": "none",
            "GROUNDWIRE_DATA_DIR": str(data_dir),
            "GROUNDWIRE_METRICS_PORT": "0",
            "GROUNDWIRE_LOG_LEVEL": "WARNING",
            "GROUNDWIRE_GRACE_PERIOD_S": "0",
            "GROUNDWIRE_LLM_MAX_CONNECTIONS": str(pool),
            "GROUNDWIRE_COALESCE_DELTAS": SERVER_VARIANTS[server.variant],
            **options.server_env,
            # Always said, so that a server whose default is one worker per core runs the
            # count asked for (a server without workers ignores it).
            "GROUNDWIRE_WORKERS": str(server.workers),
        }
    )


async def run_generate(
    plan: Plan, options: GenerateOptions, work: Path, tick: Tick
) -> dict[str, Any]:
    """Start the processes, measure every level, time cancels; the scenario's results."""
    from groundwire.tools.benchmark.go_loadgen import go_driver

    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(scripted_upstream(work, options.upstream))
        addresses: dict[str, str] = {}
        pids = {"upstream": upstream.child.pid}
        children = []
        pool = max(256, max(plan.levels) + 16)
        for server in servers(options):
            port = free_port()
            data_dir = work / f"generate-{server.name.replace(' ', '-')}"
            data_dir.mkdir()
            env = _server_env(options, server, port, upstream.base_url, data_dir, pool)
            log_name = f"server-{server.name.replace(' ', '-')}"
            child = stack.enter_context(child_process(log_name, serve_argv(), env, work))
            children.append((child, server.name))
            addresses[server.name] = f"127.0.0.1:{port}"
            pids[server.name] = child.pid
        await asyncio.gather(*(wait_until_serving(c, addresses[name]) for c, name in children))
        if not addresses:
            raise RuntimeError("generate: the direct baseline learns its model from a server")
        body = upstream_request(await standard_model(next(iter(addresses.values()))))
        async with contextlib.AsyncExitStack() as async_stack:
            driver = None
            if options.loadgen == "go":
                driver = await async_stack.enter_async_context(go_driver(work, body))
                pids["loadgen"] = driver.pid
            return await _measure(
                plan, options, upstream, addresses, CpuProbe(pids), driver, body, tick
            )
    raise AssertionError("unreachable")  # pragma: no cover


async def _measure(
    plan: Plan,
    options: GenerateOptions,
    upstream: ScriptedUpstream,
    addresses: Mapping[str, str],
    probe: CpuProbe,
    driver: GoDriver | None,
    body: Mapping[str, Any],
    tick: Tick,
) -> dict[str, Any]:
    import httpx2  # openai's own httpx: its client takes these types
    import openai

    pool = max(plan.levels) + 8
    client = openai.AsyncOpenAI(
        base_url=upstream.base_url,
        api_key="benchmark",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=pool, max_keepalive_connections=pool),
            timeout=httpx2.Timeout(CALL_TIMEOUT_S, connect=5.0),
        ),
    )
    channels = {name: open_channel(address) for name, address in addresses.items()}
    tokens = options.script.tokens
    runners: dict[str, Runner] = {}
    callers: dict[str, str] = {}  # the process making each variant's calls, for its CPU
    if driver is not None:
        runners["direct"] = _go_runner(driver, "direct", upstream.base_url, tokens)
        runners.update(
            {name: _go_runner(driver, "ours", a, tokens) for name, a in addresses.items()}
        )
        callers = dict.fromkeys(runners, "loadgen")
        if PYTHON_DIRECT in options.variants:
            runners[PYTHON_DIRECT] = _python_runner(direct_call(client, tokens, body))
            callers[PYTHON_DIRECT] = "bench"
    else:
        runners["direct"] = _python_runner(direct_call(client, tokens, body))
        runners.update(
            {name: _python_runner(generate_call(ch, tokens)) for name, ch in channels.items()}
        )
        callers = dict.fromkeys(runners, "bench")
    levels = []
    try:
        for concurrency in plan.levels:
            levels.append(
                await _level(plan, options, upstream, runners, callers, probe, concurrency, tick)
            )
        cancel = None
        if options.cancel_repeats > 0 and channels:
            first = next(iter(channels))
            cancel = await measure_cancel(
                channels[first], upstream, options.cancel_repeats, options.script.itl_s, tick
            )
            cancel["variant"] = first
    finally:
        for channel in channels.values():
            await channel.close(None)
        await client.close()
    return {
        "upstream": {
            "kind": options.upstream,
            "tokens": tokens,
            "ttft_ms": options.script.ttft_s * 1000,
            "itl_ms": options.script.itl_s * 1000,
            "fail_every": options.script.fail_every,
            "fail_status": options.script.fail_status,
            "model": body["model"],
        },
        "loadgen": options.loadgen,
        "workers": list(options.workers),
        "servers": {s.name: {"variant": s.variant, "workers": s.workers} for s in servers(options)},
        "variants": list(runners),
        "labels": {v: LABELS.get(v, v) for v in runners},
        "stagger": options.stagger,
        "levels": levels,
        "saturation": saturation(levels, {s.name: s.workers for s in servers(options)}),
        "cancel": cancel,
    }


async def _level(
    plan: Plan,
    options: GenerateOptions,
    upstream: ScriptedUpstream,
    runners: Mapping[str, Runner],
    callers: Mapping[str, str],
    probe: CpuProbe,
    concurrency: int,
    tick: Tick,
) -> dict[str, Any]:
    """Every variant at one level: an untimed warm-up (connections, lazy set-up), then the
    rounds, the variants' order rotating each round."""
    order = list(runners)
    per_slice = plan.calls_per_slice(concurrency)
    # Workers started together stay in lockstep when the upstream sets the pace: every stream
    # would get its first token, and each next one, at the same instant. Spread their starts
    # over one answer's scripted duration instead, like independent callers.
    stagger_s = options.script.answer_s if options.stagger and concurrency > 1 else 0.0
    for variant in order:
        await asyncio.to_thread(upstream.prepare, options.script)
        await runners[variant](concurrency, concurrency, deadline_s=plan.slice_seconds, warmup=True)
    measured: dict[str, Measured[StreamTiming]] = {v: Measured() for v in order}
    upstream_requests = dict.fromkeys(order, 0)
    for round_number in range(plan.rounds):
        for variant in rotation(order, round_number):
            label = f"generate c={concurrency} {variant}"
            await asyncio.to_thread(upstream.prepare, options.script, per_slice)
            measured[variant].slices.append(
                await runners[variant](
                    per_slice,
                    concurrency,
                    deadline_s=plan.slice_seconds,
                    stagger_s=stagger_s,
                    cpu=probe,
                    on_done=functools.partial(tick, label),
                )
            )
            upstream_requests[variant] += len(await asyncio.to_thread(upstream.requests))
    planned = per_slice * plan.rounds
    rows = {
        v: stream_summary(
            measured[v],
            planned=planned,
            worker=v if v in probe.pids else None,
            answer_s=options.script.answer_s,
            caller=callers[v],
        )
        for v in order
    }
    for v, row in rows.items():
        row["upstream_requests"] = upstream_requests[v]
    return {
        "concurrency": concurrency,
        "variants": rows,
        "versus_direct": {
            v: stream_comparison(measured[v], measured["direct"], rows[v], rows["direct"])
            for v in order
            if v != "direct"
        },
    }


async def measure_cancel(
    channel: grpc.aio.Channel, upstream: ScriptedUpstream, repeats: int, itl_s: float, tick: Tick
) -> dict[str, Any]:
    """Cancel ``repeats`` streams after their third delta; the time from the caller's cancel
    to the upstream seeing its connection closed (both on the system's monotonic clock, so
    they compare across processes). An upper bound on the server's own reaction: it includes
    the cancel's trip from this caller to the server."""
    await asyncio.to_thread(upstream.stream_forever, max(itl_s, 0.005))
    stub: Any = generation_pb2_grpc.GenerationServiceStub(channel)
    delays: list[float] = []
    unseen = 0
    for index in range(repeats):
        call = stub.Generate(generate_request(), timeout=CALL_TIMEOUT_S)
        deltas = 0
        async for frame in call:
            deltas += frame.HasField("delta")
            if deltas == 3:
                break
        cancelled_at = time.monotonic()
        call.cancel()
        for _ in range(500):
            records = await asyncio.to_thread(upstream.requests)
            record = next((r for r in records if r["index"] == index), None)
            if record is not None and record.get("disconnected_at") is not None:
                delays.append(record["disconnected_at"] - cancelled_at)
                break
            await asyncio.sleep(0.01)
        else:
            unseen += 1  # not within 5 s: reported, not fatal
        tick("generate cancel")
    ms = [d * 1000.0 for d in delays]
    return {
        "repeats": repeats,
        "disconnect_unseen": unseen,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
    }
