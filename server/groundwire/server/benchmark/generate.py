"""The Generate scenario: our server's streams beside the direct ``AsyncOpenAI`` stream to the
same scripted upstream, at each concurrency level, interleaved.

Processes: the scripted upstream and one ``groundwire serve`` per server variant (``ours``:
coalescing deltas, the default; ``relay``: ``GROUNDWIRE_COALESCE_DELTAS=false``, one frame per
upstream chunk), each separate, so the CPU probe can tell whose time is whose. This process is
the load generator: one event loop, one gRPC channel per server and one ``AsyncOpenAI`` client
(``max_retries=0``) with a connection per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from groundwire.server.benchmark.load import Measured, Tick, run_slice
from groundwire.server.benchmark.plan import Plan, rotation
from groundwire.server.benchmark.processes import (
    CpuProbe,
    child_env,
    child_process,
    serve_argv,
    wait_until_serving,
)
from groundwire.server.benchmark.streams import (
    CALL_TIMEOUT_S,
    StreamCall,
    StreamTiming,
    direct_call,
    generate_call,
    generate_request,
    upstream_request,
)
from groundwire.server.benchmark.summaries import stream_comparison, stream_summary
from groundwire.server.benchmark.upstream import ScriptedUpstream, UpstreamScript, scripted_upstream
from groundwire.server.cli import CHANNEL_OPTIONS
from groundwire.server.measure.redis_process import free_port
from groundwire.server.measure.stats import percentile
from groundwire.v1 import generation_pb2_grpc

SERVER_VARIANTS = {"ours": "true", "relay": "false"}  # GROUNDWIRE_COALESCE_DELTAS


@dataclass(frozen=True)
class GenerateOptions:
    """What the Generate scenario runs besides the plan."""

    variants: tuple[str, ...]  # of SERVER_VARIANTS; direct always runs
    script: UpstreamScript
    stagger: bool
    cancel_repeats: int
    server_env: Mapping[str, str]


async def run_generate(
    plan: Plan, options: GenerateOptions, work: Path, tick: Tick
) -> dict[str, Any]:
    """Start the processes, measure every level, time cancels; the scenario's results."""
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(scripted_upstream(work))
        addresses: dict[str, str] = {}
        pids = {"upstream": upstream.child.pid}
        children = []
        for variant in options.variants:
            port = free_port()
            data_dir = work / f"generate-{variant}"
            data_dir.mkdir()
            env = child_env(
                {
                    "GROUNDWIRE_LISTEN": f"127.0.0.1:{port}",
                    "GROUNDWIRE_LLM_BASE_URL": upstream.base_url,
                    "GROUNDWIRE_EMBEDDER": "none",
                    "GROUNDWIRE_DATA_DIR": str(data_dir),
                    "GROUNDWIRE_METRICS_PORT": "0",
                    "GROUNDWIRE_LOG_LEVEL": "WARNING",
                    "GROUNDWIRE_GRACE_PERIOD_S": "0",
                    "GROUNDWIRE_LLM_MAX_CONNECTIONS": str(max(256, max(plan.levels) + 16)),
                    "GROUNDWIRE_COALESCE_DELTAS": SERVER_VARIANTS[variant],
                    **options.server_env,
                }
            )
            child = stack.enter_context(child_process(f"server-{variant}", serve_argv(), env, work))
            children.append(child)
            addresses[variant] = f"127.0.0.1:{port}"
            pids[variant] = child.pid
        await asyncio.gather(
            *(
                wait_until_serving(c, addresses[v])
                for c, v in zip(children, options.variants, strict=True)
            )
        )
        return await _measure(plan, options, upstream, addresses, CpuProbe(pids), tick)


async def _measure(
    plan: Plan,
    options: GenerateOptions,
    upstream: ScriptedUpstream,
    addresses: Mapping[str, str],
    probe: CpuProbe,
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
    channels = {
        v: grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        for v, address in addresses.items()
    }
    tokens = options.script.tokens
    calls: dict[str, StreamCall] = {"direct": direct_call(client, tokens)}
    calls.update({v: generate_call(channel, tokens) for v, channel in channels.items()})
    levels = []
    try:
        for concurrency in plan.levels:
            levels.append(await _level(plan, options, upstream, calls, probe, concurrency, tick))
        cancel = None
        if options.cancel_repeats > 0:
            first = options.variants[0]
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
            "tokens": tokens,
            "ttft_ms": options.script.ttft_s * 1000,
            "itl_ms": options.script.itl_s * 1000,
            "fail_every": options.script.fail_every,
            "fail_status": options.script.fail_status,
            "model": upstream_request()["model"],
        },
        "variants": ["direct", *options.variants],
        "stagger": options.stagger,
        "levels": levels,
        "cancel": cancel,
    }


async def _level(
    plan: Plan,
    options: GenerateOptions,
    upstream: ScriptedUpstream,
    calls: Mapping[str, StreamCall],
    probe: CpuProbe,
    concurrency: int,
    tick: Tick,
) -> dict[str, Any]:
    """Every variant at one level: an untimed warm-up (connections, lazy set-up), then the
    rounds, the variants' order rotating each round."""
    order = ["direct", *options.variants]
    per_slice = plan.calls_per_slice(concurrency)
    # Workers started together stay in lockstep when the upstream sets the pace: every stream
    # would get its first token, and each next one, at the same instant. Spread their starts
    # over one answer's scripted duration instead, like independent callers.
    stagger_s = options.script.answer_s if options.stagger and concurrency > 1 else 0.0
    for variant in order:
        await asyncio.to_thread(upstream.prepare, options.script)
        await run_slice(calls[variant], concurrency, concurrency, deadline_s=plan.slice_seconds)
    measured: dict[str, Measured[StreamTiming]] = {v: Measured() for v in order}
    upstream_requests = dict.fromkeys(order, 0)
    for round_number in range(plan.rounds):
        for variant in rotation(order, round_number):
            label = f"generate c={concurrency} {variant}"
            await asyncio.to_thread(upstream.prepare, options.script, per_slice)
            measured[variant].slices.append(
                await run_slice(
                    calls[variant],
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
            worker=None if v == "direct" else v,
            answer_s=options.script.answer_s,
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
            for v in options.variants
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
