"""Generate streaming overhead and throughput through gRPC, side by side with calling the same
upstream directly with the OpenAI SDK.

Setup: three separate processes besides this one, all on loopback ports picked at start:

- the scripted upstream (``python -m groundwire.server.scripted_llm``), an OpenAI-compatible
  HTTP/SSE server that answers every chat completion with ``--tokens`` (64) content chunks
  ``" w0" " w1" ...``, re-scripted over HTTP (``/_scripted/script``) for each setting;
- ``groundwire serve`` with ``GROUNDWIRE_COALESCE_DELTAS=true`` (the current server: upstream
  chunks that pile up while a frame is being sent leave together in the next frame);
- ``groundwire serve`` with ``GROUNDWIRE_COALESCE_DELTAS=false`` (a plain relay, one gRPC frame
  per upstream chunk: the previous behaviour, for comparison).

Both servers point ``GROUNDWIRE_LLM_BASE_URL`` at the upstream, run without an embedder
(``GROUNDWIRE_EMBEDDER=none``), Redis, metrics or auth, each with its own temporary data
directory. This process is the load generator: one asyncio loop, one ``grpc.aio`` channel per
server shared by all workers, and one ``openai.AsyncOpenAI`` client (``max_retries=0``) whose
httpx pool holds a connection per worker.

Each call asks the same question over the same 4 short caller-supplied passages
(``context``, ``bypass_cache=True``, default tier: ``deepseek-v4-flash``). Variants:

- ``direct``: ``AsyncOpenAI.chat.completions.create(stream=True,
  stream_options={"include_usage": True})`` to the upstream, with the very messages, model,
  temperature and ``max_tokens`` the server sends (the baseline: no groundwire at all);
- ``ours``: ``Generate`` against the coalescing server;
- ``relay``: ``Generate`` against the relay server.

Settings (``--settings``): ``a`` no upstream delays (the upstream streams as fast as the CPU
allows: measures CPU cost per token), ``b`` 300 ms to the first token and 5 ms between tokens
(a realistic model: measures added latency and whether we keep pace). Each setting runs at
each concurrency level (``--concurrency``, default 1 and 32: C workers pulling calls from one
queue). Per (setting, level) there is an untimed warm-up of C calls per variant (connections,
lazy initialisation), then ``--rounds`` rounds; each round runs ``--calls`` calls per variant
(default max(20, 3 x C)), one variant after the other, the order rotating each round so drift
in machine load falls on all variants alike. Within a slice the C workers start spread over one
scripted answer duration (``--stagger``, on by default; zero in setting a): started together,
they would stay in lockstep in setting b, every stream receiving its first token, and each
next one, at the same instant, and TTFT at C=32 would measure how 32 simultaneous events
queue rather than the cost of one call under steady load (``--no-stagger`` shows that).

Per call, measured here (client side): TTFT from issuing the call to the first non-empty text
(the first ``delta`` frame; the first chunk with content), total time to the end of the
stream, tokens (``end.usage.completion_tokens``; the usage chunk), per-stream tokens/s =
tokens / (total - TTFT), frames (every gRPC message or SSE chunk) and text frames (``delta``
frames; chunks with content); for ``ours`` and ``relay`` also the server's own
``end.timings`` (overhead, first_token, upstream_first_token). A call is an error when it
raises, has no ``end`` frame, does not finish with STOP on the primary route, or does not
carry exactly ``--tokens`` tokens. Aggregate tokens/s = all tokens of a slice / its wall time.
Per slice, the CPU time of each process (this one, the upstream, both servers; from
``/proc/<pid>/stat``) is read before and after, giving CPU ms per answer for the load
generator, the variant's own server and the upstream, and the cores kept busy: in setting a
the CPU, not the upstream, sets the pace, so this is where the time goes.

The side-by-side figures: TTFT overhead (ours - direct) from each variant's p50 and p99, and
the p50 of paired differences (call i of round r of ``ours`` minus call i of round r of
``direct``); the ratios ours/direct and relay/direct of per-stream tokens/s (p50) and of
aggregate tokens/s. Goals are printed next to them, never asserted: TTFT overhead p50 at most
2 ms at C=1 and 5 ms at C=32 in setting b; tokens/s at least 0.9 x direct.

Caveat printed with the results: the machine has few cores (2 here), shared by the upstream,
the server(s) and the load generator; ``direct`` does not pay for a server process at all.
Compare rows with each other within one run, not with other machines.

Rerun (from the repository root)::

    .venv/bin/python bench/generate_bench.py
    .venv/bin/python bench/generate_bench.py --settings b --concurrency 1,8,32 --rounds 5
    .venv/bin/python bench/generate_bench.py --settings a --concurrency 32 --calls 128 \\
        --keep-going --output /tmp/generate.json

Writes ``bench/results/generate.json`` (``--output``). Without ``--keep-going`` the first
failed call stops the run (after cleaning up the processes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import httpx2  # openai's own fork of httpx: its client takes these types
import openai
from common import RESULTS_DIR, environment, percentile, print_table, quiet_logs, write_json
from grpc_health.v1 import health_pb2, health_pb2_grpc
from openai.types.chat import ChatCompletionMessageParam

from groundwire.server.cli import CHANNEL_OPTIONS
from groundwire.server.pipeline.generation.events import SourceInfo
from groundwire.server.pipeline.generation.prompt import SYSTEM_PROMPT, render_user
from groundwire.v1 import generation_pb2, generation_pb2_grpc

VARIANTS = ("direct", "ours", "relay")
# The standard tier's first model, as the catalog names it upstream.
UPSTREAM_MODEL = "deepseek-ai/DeepSeek-V4-Flash"
# What the server sends when the request leaves them unset (generation_convert.py).
TEMPERATURE = 0.1
MAX_TOKENS = 1024
CALL_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0

QUESTION = "What do the sources say about how the bridge was built and maintained?"
PASSAGES: tuple[tuple[str, str, str], ...] = (
    (
        "p1",
        "Construction",
        "The bridge was built between 1883 and 1889 from wrought iron, using a cantilever "
        "design that let the spans grow outward from the piers without falsework.",
    ),
    (
        "p2",
        "Materials",
        "About 54,000 tonnes of steel and 6.5 million rivets went into the structure; the "
        "piers stand on granite foundations sunk into the estuary bed.",
    ),
    (
        "p3",
        "Maintenance",
        "Painting the bridge was long said to be an endless task; a glass-flake epoxy coating "
        "applied from 2002 to 2011 is expected to last at least 25 years.",
    ),
    (
        "p4",
        "Traffic",
        "Around 200 trains cross the bridge each day, and it carries both passenger and "
        "freight services on a double track.",
    ),
)


@dataclass(frozen=True)
class Setting:
    """How the upstream streams an answer."""

    name: str
    label: str
    ttft_s: float
    inter_token_s: float


SETTINGS = {
    "a": Setting("a", "no upstream delays", 0.0, 0.0),
    "b": Setting("b", "300 ms to first token, 5 ms between tokens", 0.3, 0.005),
}
# TTFT overhead goals (ms) in setting b: 2 ms at concurrency 1, 5 ms above.
OVERHEAD_GOAL_SETTING = "b"
TOKENS_RATIO_GOAL = 0.9


def overhead_goal_ms(concurrency: int) -> float:
    """The TTFT overhead goal at one concurrency level (setting b)."""
    return 2.0 if concurrency <= 1 else 5.0


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Child:
    """A subprocess of the benchmark and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 20) -> str:
        """The last lines of its output."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise when the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with status {code}:\n{self.tail()}")


@contextlib.contextmanager
def child_process(
    name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path
) -> Iterator[Child]:
    """Run ``argv`` for the block; SIGTERM (then SIGKILL) on the way out, whatever happens.

    The child gets its own session so that a Ctrl-C in the terminal reaches only this
    process, which then stops the children in order."""
    log_path = log_dir / f"{name}.log"
    log_file: IO[bytes] = log_path.open("wb")
    process = subprocess.Popen(
        list(argv),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        yield Child(name, process, log_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log_file.close()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any ``GROUNDWIRE_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUNDWIRE_")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def upstream_control(base_url: str, path: str, payload: dict[str, Any]) -> None:
    """POST a control request to the scripted upstream."""
    root = base_url.removesuffix("/v1")
    request = urllib.request.Request(
        f"{root}/_scripted/{path}",
        data=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"scripted upstream {path}: HTTP {response.status}")


def script_upstream(base_url: str, setting: Setting, tokens: int) -> None:
    """Make every following completion stream ``tokens`` pieces on ``setting``'s schedule."""
    upstream_control(base_url, "reset", {})
    script = {
        "tokens": [f" w{i}" for i in range(tokens)],
        "ttft_s": setting.ttft_s,
        "inter_token_s": setting.inter_token_s,
    }
    upstream_control(base_url, "script", {"model": None, "scripts": [script], "default": True})


def upstream_requests(base_url: str) -> list[dict[str, Any]]:
    """What the scripted upstream recorded (``GET /_scripted/requests``)."""
    root = base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_scripted/requests", timeout=10) as response:
        records: list[dict[str, Any]] = json.loads(response.read())
        return records


async def measure_cancel(channel: grpc.aio.Channel, base_url: str, repeats: int) -> dict[str, Any]:
    """Cancel ``repeats`` streams after their third delta; the time from the client's cancel
    to the upstream seeing its connection closed (both clocks are the system's monotonic
    clock, so they compare across processes). An upper bound on the server's own reaction:
    it includes the cancel's trip from this client to the server."""
    await asyncio.to_thread(upstream_control, base_url, "reset", {})
    script = {"tokens": [f" w{i}" for i in range(2000)], "inter_token_s": 0.005}
    await asyncio.to_thread(
        upstream_control, base_url, "script", {"model": None, "scripts": [script], "default": True}
    )
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    delays: list[float] = []
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
            records = await asyncio.to_thread(upstream_requests, base_url)
            record = next((r for r in records if r["index"] == index), None)
            if record is not None and record.get("disconnected_at") is not None:
                delays.append(record["disconnected_at"] - cancelled_at)
                break
            await asyncio.sleep(0.01)
        else:
            raise CallFailed(f"the upstream never saw cancelled stream {index} disconnect")
    return {
        "repeats": repeats,
        "p50_ms": ms(delays, 50),
        "p99_ms": ms(delays, 99),
        "max_ms": max(delays) * 1000,
        "goal_ms": 5.0,
    }


def wait_for_upstream(child: Child, base_url: str) -> None:
    """Poll the control endpoint until the upstream answers."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        child.check_alive()
        try:
            upstream_control(base_url, "reset", {})
            return
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"upstream did not start:\n{child.tail()}") from None
            time.sleep(0.1)


def wait_for_server(child: Child, address: str) -> None:
    """Poll the gRPC health check until the server is SERVING."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            child.check_alive()
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not become SERVING:\n{child.tail()}")
            time.sleep(0.2)


# --------------------------------------------------------------------------- calls


@dataclass
class CallResult:
    """One completed call, times in seconds."""

    ttft: float
    total: float
    tokens: int
    frames: int
    text_frames: int
    server: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        """Per-stream rate after the first token."""
        streaming = self.total - self.ttft
        return self.tokens / streaming if streaming > 0 else math.nan


class CallFailed(Exception):
    """A call that completed but not as expected."""


class Aborted(Exception):
    """A call failed and ``--keep-going`` was not given."""


Call = Callable[[], Awaitable[CallResult]]
SERVER_TIMINGS = ("overhead", "first_token", "upstream_first_token", "total")


def direct_messages() -> list[ChatCompletionMessageParam]:
    """The messages the server sends upstream for ``QUESTION`` over ``PASSAGES``."""
    sources = [
        SourceInfo(
            number=i + 1,
            chunk_id=pid,
            doc_id="",
            title=title,
            source_uri="",
            score=0.0,
            text=text,
        )
        for i, (pid, title, text) in enumerate(PASSAGES)
    ]
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": render_user(QUESTION, sources)},
    ]


def generate_request() -> generation_pb2.GenerateRequest:
    """The Generate request for ``QUESTION`` over ``PASSAGES``."""
    return generation_pb2.GenerateRequest(
        query=QUESTION,
        context=generation_pb2.ContextPassages(
            passages=[
                generation_pb2.ContextPassage(id=pid, title=title, text=text)
                for pid, title, text in PASSAGES
            ]
        ),
        tier=generation_pb2.TIER_STANDARD,
        bypass_cache=True,
    )


def make_direct_call(client: openai.AsyncOpenAI, expected_tokens: int) -> Call:
    """The baseline: one streamed chat completion straight to the upstream."""
    messages = direct_messages()

    async def call() -> CallResult:
        started = time.perf_counter()
        ttft: float | None = None
        frames = text_frames = counted = 0
        usage_tokens: int | None = None
        stream = await client.chat.completions.create(
            model=UPSTREAM_MODEL,
            messages=messages,
            temperature=TEMPERATURE,
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            frames += 1
            if chunk.choices and chunk.choices[0].delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - started
                text_frames += 1
                counted += 1
            if chunk.usage is not None:
                usage_tokens = chunk.usage.completion_tokens
        total = time.perf_counter() - started
        tokens = usage_tokens if usage_tokens is not None else counted
        if ttft is None:
            raise CallFailed("no content")
        if tokens != expected_tokens:
            raise CallFailed(f"{tokens} tokens, expected {expected_tokens}")
        return CallResult(ttft, total, tokens, frames, text_frames)

    return call


def make_generate_call(channel: grpc.aio.Channel, expected_tokens: int) -> Call:
    """One Generate call through a server."""
    stub: Any = generation_pb2_grpc.GenerationServiceStub(channel)  # typed for the sync API
    request = generate_request()

    async def call() -> CallResult:
        started = time.perf_counter()
        ttft: float | None = None
        frames = text_frames = 0
        end: generation_pb2.EndFrame | None = None
        start: generation_pb2.StartFrame | None = None
        async for frame in stub.Generate(request, timeout=CALL_TIMEOUT_S):
            frames += 1
            kind = frame.WhichOneof("frame")
            if kind == "delta":
                if frame.delta.text:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    text_frames += 1
            elif kind == "end":
                end = frame.end
            elif kind == "start":
                start = frame.start
        total = time.perf_counter() - started
        if end is None:
            raise CallFailed("no end frame")
        if start is None or start.route != generation_pb2.ROUTE_PRIMARY:
            route = generation_pb2.Route.Name(start.route) if start is not None else "no start"
            raise CallFailed(f"route {route}: {end.detail}")
        if end.finish_reason != generation_pb2.FINISH_REASON_STOP:
            reason = generation_pb2.FinishReason.Name(end.finish_reason)
            raise CallFailed(f"finish {reason}: {end.detail}")
        tokens = end.usage.completion_tokens
        if ttft is None:
            raise CallFailed("no delta")
        if tokens != expected_tokens:
            raise CallFailed(f"{tokens} tokens, expected {expected_tokens}")
        server = {
            name: getattr(end.timings, name).ToTimedelta().total_seconds()
            for name in SERVER_TIMINGS
        }
        return CallResult(ttft, total, tokens, frames, text_frames, server)

    return call


# --------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    """Accumulated over the rounds of one (setting, concurrency, variant)."""

    rounds: list[list[CallResult | None]] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # CPU seconds each process used during this variant's slices (see CpuProbe).
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def results(self) -> list[CallResult]:
        return [r for one in self.rounds for r in one if r is not None]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def round_rates(self) -> list[float]:
        """Aggregate tokens/s of each round."""
        return [
            sum(r.tokens for r in one if r is not None) / wall if wall > 0 else math.nan
            for one, wall in zip(self.rounds, self.walls, strict=True)
        ]

    @property
    def aggregate_rate(self) -> float:
        """All tokens of all rounds / their summed wall time."""
        wall = sum(self.walls)
        return sum(r.tokens for r in self.results) / wall if wall > 0 else math.nan


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and all its threads (Linux ``/proc``;
    NaN elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return math.nan
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass(frozen=True)
class CpuProbe:
    """Reads the CPU time used so far by the load generator and each child process."""

    pids: dict[str, int]

    def __call__(self) -> dict[str, float]:
        sample = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        sample["generator"] = time.process_time()
        return sample


async def run_slice(
    call: Call,
    calls: int,
    concurrency: int,
    keep_going: bool,
    into: Measured | None,
    probe: CpuProbe | None = None,
    stagger_s: float = 0.0,
) -> None:
    """``calls`` calls with ``concurrency`` workers pulling from one queue; recorded into
    ``into`` (a warm-up when None). Worker j starts ``j / concurrency x stagger_s`` late. A
    failure raises unless ``keep_going``."""
    results: list[CallResult | None] = [None] * calls
    pending = iter(range(calls))
    errors: Counter[str] = Counter()

    async def worker(delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        for index in pending:
            try:
                results[index] = await call()
            except Exception as exc:  # counted, and fatal unless --keep-going
                reason = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, grpc.aio.AioRpcError):
                    reason = f"gRPC {exc.code().name}: {exc.details()}"
                errors[reason[:160]] += 1
                if sum(errors.values()) <= 3:
                    print(f"call failed: {reason}", file=sys.stderr)
                if not keep_going:
                    raise Aborted(reason) from exc

    cpu_before = probe() if probe is not None else {}
    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for j in range(min(concurrency, calls)):
                group.create_task(worker(j / concurrency * stagger_s))
    except* Aborted as group_error:
        raise group_error.exceptions[0] from None
    wall = time.perf_counter() - started
    cpu_after = probe() if probe is not None else {}
    if into is not None:
        into.rounds.append(results)
        into.walls.append(wall)
        into.errors.update(errors)
        for name, before in cpu_before.items():
            into.cpu[name] = into.cpu.get(name, 0.0) + cpu_after[name] - before


async def bench_level(
    calls: dict[str, Call],
    setting: Setting,
    concurrency: int,
    args: argparse.Namespace,
    probe: CpuProbe,
) -> dict[str, Measured]:
    """All variants at one (setting, concurrency), interleaved over ``args.rounds`` rounds."""
    per_slice = args.calls if args.calls is not None else max(20, 3 * concurrency)
    # Workers started together stay in lockstep when the upstream sets the pace (setting b):
    # every stream would get its first token, and each next one, at the same instant. Spread
    # their starts over one answer's scripted duration instead (like independent callers).
    stagger_s = 0.0
    if args.stagger and concurrency > 1:
        stagger_s = setting.ttft_s + setting.inter_token_s * max(args.tokens - 1, 0)
    measured = {v: Measured() for v in VARIANTS}
    for variant in VARIANTS:  # untimed: connections and lazy initialisation
        await run_slice(calls[variant], concurrency, concurrency, args.keep_going, None)
    for round_number in range(args.rounds):
        shift = round_number % len(VARIANTS)
        order = VARIANTS[shift:] + VARIANTS[:shift]
        for variant in order:
            await run_slice(
                calls[variant],
                per_slice,
                concurrency,
                args.keep_going,
                measured[variant],
                probe,
                stagger_s,
            )
        done = {v: len(measured[v].results) for v in VARIANTS}
        print(
            f"  setting {setting.name} c={concurrency} round {round_number + 1}/{args.rounds} "
            f"({', '.join(order)}): {done}",
            flush=True,
        )
    return measured


# --------------------------------------------------------------------------- reporting


def ms(values: Sequence[float], p: float) -> float:
    return percentile([v * 1000.0 for v in values], p)


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) else math.nan


def summarise_variant(
    setting: Setting, concurrency: int, variant: str, m: Measured
) -> dict[str, Any]:
    results = m.results
    row: dict[str, Any] = {
        "setting": setting.name,
        "concurrency": concurrency,
        "variant": variant,
        "calls": len(results),
        "errors": m.error_count,
        "error_reasons": dict(m.errors),
        "ttft_p50_ms": ms([r.ttft for r in results], 50),
        "ttft_p99_ms": ms([r.ttft for r in results], 99),
        "total_p50_ms": ms([r.total for r in results], 50),
        "total_p99_ms": ms([r.total for r in results], 99),
        "tokens_p50": percentile([float(r.tokens) for r in results], 50),
        "tokens_min": min((r.tokens for r in results), default=0),
        "tokens_max": max((r.tokens for r in results), default=0),
        "stream_tokens_per_s_p50": percentile(
            [t for r in results if not math.isnan(t := r.tokens_per_s)], 50
        ),
        "aggregate_tokens_per_s": m.aggregate_rate,
        "aggregate_tokens_per_s_by_round": m.round_rates(),
        "wall_s_by_round": m.walls,
        "frames_p50": percentile([float(r.frames) for r in results], 50),
        "text_frames_p50": percentile([float(r.text_frames) for r in results], 50),
    }
    for name in SERVER_TIMINGS:
        row[f"server_{name}_p50_ms"] = ms([r.server[name] for r in results if r.server], 50)
    # CPU per answer: the load generator, the upstream and this variant's server (direct: none).
    answers = len(results)
    wall = sum(m.walls)
    row["cpu_ms_per_answer"] = {
        name: seconds * 1000.0 / answers if answers else math.nan for name, seconds in m.cpu.items()
    }
    row["cpu_ms_per_answer_generator"] = row["cpu_ms_per_answer"].get("generator", math.nan)
    row["cpu_ms_per_answer_upstream"] = row["cpu_ms_per_answer"].get("upstream", math.nan)
    row["cpu_ms_per_answer_server"] = row["cpu_ms_per_answer"].get(variant, math.nan)
    # Cores busy on average during the slices, all four processes together (2 = saturated).
    row["cores_busy"] = sum(m.cpu.values()) / wall if wall > 0 else math.nan
    return row


def paired_ttft_diffs_ms(a: Measured, b: Measured) -> list[float]:
    """TTFT of call i of round r of ``a`` minus that of ``b`` (both successful), in ms."""
    diffs = []
    for one, other in zip(a.rounds, b.rounds, strict=True):
        for x, y in zip(one, other, strict=False):
            if x is not None and y is not None:
                diffs.append((x.ttft - y.ttft) * 1000.0)
    return diffs


def compare(
    setting: Setting, concurrency: int, measured: dict[str, Measured], rows: dict[str, Any]
) -> dict[str, Any]:
    """The side-by-side figures of one (setting, concurrency)."""
    base = rows["direct"]
    out: dict[str, Any] = {"setting": setting.name, "concurrency": concurrency}
    for variant in ("ours", "relay"):
        row = rows[variant]
        diffs = paired_ttft_diffs_ms(measured[variant], measured["direct"])
        out[f"{variant}_ttft_overhead_p50_ms"] = row["ttft_p50_ms"] - base["ttft_p50_ms"]
        out[f"{variant}_ttft_overhead_p99_ms"] = row["ttft_p99_ms"] - base["ttft_p99_ms"]
        out[f"{variant}_ttft_overhead_paired_p50_ms"] = percentile(diffs, 50)
        out[f"{variant}_ttft_overhead_paired_n"] = len(diffs)
        out[f"{variant}_stream_tokens_per_s_ratio"] = ratio(
            row["stream_tokens_per_s_p50"], base["stream_tokens_per_s_p50"]
        )
        out[f"{variant}_aggregate_tokens_per_s_ratio"] = ratio(
            row["aggregate_tokens_per_s"], base["aggregate_tokens_per_s"]
        )
    goal = overhead_goal_ms(concurrency) if setting.name == OVERHEAD_GOAL_SETTING else None
    out["ttft_overhead_goal_ms"] = goal
    out["ttft_overhead_goal_met"] = (
        None if goal is None else bool(out["ours_ttft_overhead_p50_ms"] <= goal)
    )
    out["tokens_ratio_goal"] = TOKENS_RATIO_GOAL
    out["stream_tokens_goal_met"] = bool(out["ours_stream_tokens_per_s_ratio"] >= TOKENS_RATIO_GOAL)
    out["aggregate_tokens_goal_met"] = bool(
        out["ours_aggregate_tokens_per_s_ratio"] >= TOKENS_RATIO_GOAL
    )
    return out


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "MISSED")


def print_report(
    rows: list[dict[str, Any]], comparisons: list[dict[str, Any]], note: str, tokens: int
) -> None:
    print()
    for setting in dict.fromkeys(r["setting"] for r in rows):
        print(f"setting {setting}: {SETTINGS[setting].label}")
    print(
        f"Generate vs direct AsyncOpenAI, {tokens}-token answers; times client-side, ms; "
        "CPU/ans = CPU ms per answer of the load generator, the variant's server and the "
        "upstream; cores busy = all processes' CPU / wall (2 = saturated)"
    )
    print_table(
        [
            "set",
            "conc",
            "variant",
            "n",
            "err",
            "TTFT p50",
            "TTFT p99",
            "total p50",
            "tok/ans",
            "tok/s/stream p50",
            "agg tok/s",
            "frames p50",
            "text frames p50",
            "srv overhead p50",
            "CPU/ans gen",
            "CPU/ans srv",
            "CPU/ans up",
            "cores busy",
        ],
        [
            [
                r["setting"],
                r["concurrency"],
                r["variant"],
                r["calls"],
                r["errors"],
                r["ttft_p50_ms"],
                r["ttft_p99_ms"],
                r["total_p50_ms"],
                f"{r['tokens_min']}-{r['tokens_max']}"
                if r["tokens_min"] != r["tokens_max"]
                else str(r["tokens_min"]),
                r["stream_tokens_per_s_p50"],
                r["aggregate_tokens_per_s"],
                r["frames_p50"],
                r["text_frames_p50"],
                r["server_overhead_p50_ms"],
                r["cpu_ms_per_answer_generator"],
                r["cpu_ms_per_answer_server"],
                r["cpu_ms_per_answer_upstream"],
                r["cores_busy"],
            ]
            for r in rows
        ],
    )
    print()
    print(
        "Side by side: TTFT overhead = variant - direct (ms; from each p50/p99, and the p50 "
        "of paired calls); ratios = variant / direct"
    )
    print_table(
        [
            "set",
            "conc",
            "variant",
            "dTTFT p50",
            "dTTFT p99",
            "paired p50",
            "goal p50",
            "",
            "tok/s/stream ratio",
            "",
            "agg tok/s ratio",
            "",
        ],
        [
            [
                c["setting"],
                c["concurrency"],
                variant,
                c[f"{variant}_ttft_overhead_p50_ms"],
                c[f"{variant}_ttft_overhead_p99_ms"],
                c[f"{variant}_ttft_overhead_paired_p50_ms"],
                "-" if c["ttft_overhead_goal_ms"] is None else f"<= {c['ttft_overhead_goal_ms']:g}",
                verdict(c["ttft_overhead_goal_met"]) if variant == "ours" else "",
                c[f"{variant}_stream_tokens_per_s_ratio"],
                verdict(c["stream_tokens_goal_met"]) if variant == "ours" else "",
                c[f"{variant}_aggregate_tokens_per_s_ratio"],
                verdict(c["aggregate_tokens_goal_met"]) if variant == "ours" else "",
            ]
            for c in comparisons
            for variant in ("ours", "relay")
        ],
    )
    print(
        f"goals (ours, not asserted): TTFT overhead p50 <= 2 ms at c=1 and <= 5 ms at c=32 in "
        f"setting {OVERHEAD_GOAL_SETTING}; tokens/s >= {TOKENS_RATIO_GOAL:g} x direct"
    )
    print(f"note: {note}")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="See the module docstring (head -70 bench/generate_bench.py) for details.",
    )
    parser.add_argument("--concurrency", default="1,32", help="comma-separated levels")
    parser.add_argument(
        "--settings", default="a,b", help="comma-separated: a (no delays), b (300 ms / 5 ms)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaving rounds per level")
    parser.add_argument(
        "--calls",
        type=int,
        default=None,
        help="calls per variant per round (default: max(20, 3 x concurrency))",
    )
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument(
        "--cancels",
        type=int,
        default=20,
        help="streams cancelled midway to time the upstream close",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "generate.json", help="JSON results"
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="count failed calls instead of stopping"
    )
    parser.add_argument(
        "--stagger",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="spread the workers' first calls over one scripted answer duration "
        "(--no-stagger: all start at once and stay in lockstep)",
    )
    args = parser.parse_args(argv)
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency expects comma-separated integers")
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if not args.concurrency or any(c < 1 for c in args.concurrency):
        parser.error("--concurrency levels must be >= 1")
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown or not args.settings:
        parser.error(f"unknown settings {unknown}; choose from {sorted(SETTINGS)}")
    if args.rounds < 1 or args.tokens < 1 or (args.calls is not None and args.calls < 1):
        parser.error("--rounds, --tokens and --calls must be >= 1")
    return args


@dataclass(frozen=True)
class Endpoints:
    """Where the three processes listen."""

    upstream_base_url: str
    ours: str
    relay: str
    pids: dict[str, int]  # upstream, ours, relay


async def run(args: argparse.Namespace, endpoints: Endpoints) -> dict[str, Any]:
    """All settings and levels against running processes; the results document."""
    pool = max(args.concurrency) + 8
    http_client = openai.DefaultAsyncHttpxClient(
        limits=httpx2.Limits(max_connections=pool, max_keepalive_connections=pool),
        timeout=httpx2.Timeout(CALL_TIMEOUT_S, connect=5.0),
    )
    client = openai.AsyncOpenAI(
        base_url=endpoints.upstream_base_url,
        api_key="x",
        max_retries=0,
        http_client=http_client,
    )
    ours_channel = grpc.aio.insecure_channel(endpoints.ours, options=CHANNEL_OPTIONS)
    relay_channel = grpc.aio.insecure_channel(endpoints.relay, options=CHANNEL_OPTIONS)
    calls = {
        "direct": make_direct_call(client, args.tokens),
        "ours": make_generate_call(ours_channel, args.tokens),
        "relay": make_generate_call(relay_channel, args.tokens),
    }
    probe = CpuProbe(endpoints.pids)
    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    try:
        for name in args.settings:
            setting = SETTINGS[name]
            await asyncio.to_thread(
                script_upstream, endpoints.upstream_base_url, setting, args.tokens
            )
            for concurrency in args.concurrency:
                measured = await bench_level(calls, setting, concurrency, args, probe)
                by_variant = {
                    v: summarise_variant(setting, concurrency, v, measured[v]) for v in VARIANTS
                }
                rows.extend(by_variant.values())
                comparisons.append(compare(setting, concurrency, measured, by_variant))
        cancel = await measure_cancel(ours_channel, endpoints.upstream_base_url, args.cancels)
        print(
            f"cancel -> upstream disconnect ({cancel['repeats']} streams, client-side cancel "
            f"time): p50 {cancel['p50_ms']:.2f} ms, p99 {cancel['p99_ms']:.2f} ms, "
            f"max {cancel['max_ms']:.2f} ms (goal: within 5 ms of the cancel reaching the server)",
            flush=True,
        )
    finally:
        await ours_channel.close(None)
        await relay_channel.close(None)
        await client.close()
    return {"rows": rows, "comparisons": comparisons, "cancel": cancel}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    # A SIGTERM unwinds like a Ctrl-C, so the child processes are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    began = time.perf_counter()
    note = (
        f"{os.cpu_count()} CPU cores shared by the scripted upstream, the two servers and the "
        "load generator (one process, one event loop); direct pays for no server process. "
        "Compare rows within this run, not across machines."
    )
    python = sys.executable
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gw-genbench-")))
        upstream_port = free_port()
        upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
        upstream = stack.enter_context(
            child_process(
                "upstream",
                [
                    python,
                    "-m",
                    "groundwire.server.scripted_llm",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(upstream_port),
                    "--tokens",
                    str(args.tokens),
                ],
                child_env({}),
                work,
            )
        )
        servers: dict[str, tuple[Child, str]] = {}
        for variant, coalesce in (("ours", "true"), ("relay", "false")):
            port = free_port()
            data_dir = work / f"data-{variant}"
            data_dir.mkdir()
            env = child_env(
                {
                    "GROUNDWIRE_LISTEN": f"127.0.0.1:{port}",
                    "GROUNDWIRE_LLM_BASE_URL": upstream_url,
                    "GROUNDWIRE_EMBEDDER": "none",
                    "GROUNDWIRE_DATA_DIR": str(data_dir),
                    "GROUNDWIRE_METRICS_PORT": "0",
                    "GROUNDWIRE_LOG_LEVEL": "WARNING",
                    "GROUNDWIRE_GRACE_PERIOD_S": "0",
                    "GROUNDWIRE_COALESCE_DELTAS": coalesce,
                }
            )
            argv_server = [python, "-m", "groundwire.server.cli", "serve"]
            child = stack.enter_context(child_process(f"server-{variant}", argv_server, env, work))
            servers[variant] = (child, f"127.0.0.1:{port}")
        wait_for_upstream(upstream, upstream_url)
        for child, address in servers.values():
            wait_for_server(child, address)
        print(
            f"upstream {upstream_url} (pid {upstream.process.pid}); "
            + "; ".join(
                f"{v} {address} (pid {child.process.pid})"
                for v, (child, address) in servers.items()
            ),
            flush=True,
        )
        pids = {"upstream": upstream.process.pid}
        pids.update({v: child.process.pid for v, (child, _) in servers.items()})
        endpoints = Endpoints(upstream_url, servers["ours"][1], servers["relay"][1], pids)
        try:
            results = asyncio.run(run(args, endpoints))
        except Aborted as exc:
            print(f"stopped at the first failed call ({exc}); see --keep-going", file=sys.stderr)
            return 1
        finally:
            for child in (upstream, *(c for c, _ in servers.values())):
                if child.process.poll() is not None:
                    print(f"{child.name} exited early:\n{child.tail()}", file=sys.stderr)
    elapsed = time.perf_counter() - began
    output: dict[str, Any] = {
        "tokens_per_answer": args.tokens,
        "rounds": args.rounds,
        "stagger": args.stagger,
        "calls_per_variant_per_round": args.calls or "max(20, 3 x concurrency)",
        "settings": {
            name: {"label": s.label, "ttft_s": s.ttft_s, "inter_token_s": s.inter_token_s}
            for name, s in SETTINGS.items()
            if name in args.settings
        },
        "passages": len(PASSAGES),
        "upstream_model": UPSTREAM_MODEL,
        "goals": {
            "ttft_overhead_p50_ms": {"c=1": 2.0, "c=32": 5.0, "setting": OVERHEAD_GOAL_SETTING},
            "tokens_per_s_ratio_min": TOKENS_RATIO_GOAL,
        },
        "environment": environment(),
        "note": note,
        "elapsed_s": elapsed,
        **results,
    }
    print_report(results["rows"], results["comparisons"], note, args.tokens)
    cancel = results["cancel"]
    print(
        f"cancel -> upstream disconnect: p50 {cancel['p50_ms']:.2f} ms, "
        f"p99 {cancel['p99_ms']:.2f} ms over {cancel['repeats']} streams (goal 5 ms)"
    )
    write_json(args.output, output)
    errors = sum(r["errors"] for r in results["rows"])
    odd = [
        r
        for r in results["rows"]
        if r["calls"] and (r["tokens_min"] != args.tokens or r["tokens_max"] != args.tokens)
    ]
    if errors or odd:
        print(f"warning: {errors} failed calls; {len(odd)} rows with other token counts")
    print(f"wrote {args.output} in {elapsed:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; child processes stopped", file=sys.stderr)
        sys.exit(130)
