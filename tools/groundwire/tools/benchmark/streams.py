"""One Generate stream, timed from the caller's side: through our server over gRPC, or the
direct baseline (``AsyncOpenAI`` streaming straight to the same upstream, with the model,
temperature and ``max_tokens`` our server sends and a prompt of the same shape and size).

The baseline's request is built from what the server publishes, not from its code: the
standard tier's first model and its output limit from ``GetCapabilities``, the contract's
defaults for temperature and output tokens (``generation.proto``), and a grounded prompt as
the README describes the server's (an instruction to answer only from the numbered sources
and cite them as ``[n]``; the sources, then the question).

Time to first token (TTFT) is from issuing the call to the first non-empty text (our first
``delta`` frame; the first chunk with content). Time between tokens (ITL) is per stream
``(last text - first text) / (tokens - 1)``: the mean pace of the answer, comparable on both
sides although our server merges tokens that arrive together into one frame. The raw gaps
between text frames are kept too (they show the merging, and the stalls).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from groundwire.sdk import AsyncClient
from groundwire.tools.benchmark.load import CallFailed
from groundwire.v1 import capabilities_pb2, generation_pb2, generation_pb2_grpc

if TYPE_CHECKING:
    import openai

CALL_TIMEOUT_S = 120.0
# The contract's defaults when a request leaves them unset (generation.proto).
DEFAULT_TEMPERATURE = 0.1
DEFAULT_MAX_OUTPUT_TOKENS = 1024
BASELINE_INSTRUCTION = (
    "Answer the question from the numbered sources below and nothing else. After each claim, "
    "cite the sources it rests on by number in square brackets, such as [1] or [1][4]. When "
    "the sources do not hold the answer, say so instead of guessing. Keep it short."
)
SERVER_TIMINGS = ("overhead", "first_token", "upstream_first_token", "total")

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
class StreamTiming:
    """One successful stream, times in seconds from issuing the call."""

    ttft_s: float
    last_text_s: float
    total_s: float
    tokens: int
    frames: int  # every gRPC message or SSE chunk
    text_frames: int  # frames that carried text
    gaps_s: tuple[float, ...]  # between consecutive text frames
    route: str  # ours: the start frame's route; direct: "direct"
    server: Mapping[str, float] = field(default_factory=dict)  # ours: end.timings

    @property
    def itl_s(self) -> float:
        """Mean time between tokens: ``(last text - first text) / (tokens - 1)``."""
        if self.tokens < 2:
            return math.nan
        return (self.last_text_s - self.ttft_s) / (self.tokens - 1)

    @property
    def tokens_per_s(self) -> float:
        """This stream's rate once it started: ``tokens / (total - TTFT)``."""
        streaming = self.total_s - self.ttft_s
        return self.tokens / streaming if streaming > 0 else math.nan


class _Clock:
    """Collects a stream's text arrival times."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self.last = 0.0
        self.frames = 0
        self.text_frames = 0
        self.gaps: list[float] = []

    def frame(self, has_text: bool) -> None:
        self.frames += 1
        if not has_text:
            return
        now = time.perf_counter() - self.started
        if self.first is None:
            self.first = now
        else:
            self.gaps.append(now - self.last)
        self.last = now
        self.text_frames += 1

    def timing(self, tokens: int, expected: int, route: str, **server: float) -> StreamTiming:
        total = time.perf_counter() - self.started
        if self.first is None:
            raise CallFailed("no text")
        if tokens != expected:
            raise CallFailed(f"{tokens} tokens, not {expected}")
        return StreamTiming(
            ttft_s=self.first,
            last_text_s=self.last,
            total_s=total,
            tokens=tokens,
            frames=self.frames,
            text_frames=self.text_frames,
            gaps_s=tuple(self.gaps),
            route=route,
            server=server,
        )


StreamCall = Callable[[int], Awaitable[StreamTiming]]


def generate_request() -> generation_pb2.GenerateRequest:
    """The Generate request: ``QUESTION`` over ``PASSAGES`` supplied by the caller (no
    retrieval), standard tier, answer cache bypassed."""
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


async def standard_model(address: str) -> capabilities_pb2.ModelInfo:
    """The model our server at ``address`` answers the standard tier with first."""
    async with AsyncClient(address) as client:
        capabilities = await client.capabilities()
    chains = {t.tier: list(t.chain) for t in capabilities.tiers}
    models = {m.name: m for m in capabilities.models}
    chain = chains.get(generation_pb2.TIER_STANDARD, [])
    if not chain or chain[0] not in models:
        raise RuntimeError(f"the server at {address} lists no model for the standard tier")
    return models[chain[0]]


def baseline_prompt() -> str:
    """The user message of the baseline: :data:`PASSAGES` numbered, then :data:`QUESTION`."""
    sources = [f"[{n}] {title}\n{text}" for n, (_, title, text) in enumerate(PASSAGES, 1)]
    return "\n\n".join(["Sources:", *sources, f"Question: {QUESTION}"])


def upstream_request(model: capabilities_pb2.ModelInfo) -> dict[str, Any]:
    """The baseline's request for :func:`generate_request` (``model``: the standard tier's
    first, see :func:`standard_model`), streamed with usage."""
    return {
        "model": model.upstream_model,
        "messages": [
            {"role": "system", "content": BASELINE_INSTRUCTION},
            {"role": "user", "content": baseline_prompt()},
        ],
        "temperature": DEFAULT_TEMPERATURE,
        "max_tokens": min(DEFAULT_MAX_OUTPUT_TOKENS, model.max_output_tokens),
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def direct_call(
    client: openai.AsyncOpenAI, expected_tokens: int, body: Mapping[str, Any]
) -> StreamCall:
    """The baseline: one streamed chat completion of ``body`` straight to the upstream."""

    async def call(_: int) -> StreamTiming:
        clock = _Clock()
        counted = 0
        usage_tokens: int | None = None
        stream = await client.chat.completions.create(
            model=body["model"],
            messages=body["messages"],
            temperature=body["temperature"],
            max_tokens=body["max_tokens"],
            stream=True,
            stream_options={"include_usage": True},
            timeout=CALL_TIMEOUT_S,
        )
        async for chunk in stream:
            has_text = bool(chunk.choices and chunk.choices[0].delta.content)
            clock.frame(has_text)
            counted += has_text
            if chunk.usage is not None:
                usage_tokens = chunk.usage.completion_tokens
        tokens = usage_tokens if usage_tokens is not None else counted
        return clock.timing(tokens, expected_tokens, "direct")

    return call


def generate_call(channel: grpc.aio.Channel, expected_tokens: int) -> StreamCall:
    """One Generate call through our server. An answer that is not the LLM's (a degraded
    route), does not finish with STOP, or lacks its end frame is a failed call."""
    stub: Any = generation_pb2_grpc.GenerationServiceStub(channel)  # typed for the sync API
    request = generate_request()

    async def call(_: int) -> StreamTiming:
        clock = _Clock()
        start: generation_pb2.StartFrame | None = None
        end: generation_pb2.EndFrame | None = None
        async for frame in stub.Generate(request, timeout=CALL_TIMEOUT_S):
            kind = frame.WhichOneof("frame")
            clock.frame(kind == "delta" and bool(frame.delta.text))
            if kind == "start":
                start = frame.start
            elif kind == "end":
                end = frame.end
        if end is None:
            raise CallFailed("no end frame")
        route = generation_pb2.Route.Name(start.route) if start is not None else "no start"
        route = route.removeprefix("ROUTE_").lower()
        if route == "degraded":
            raise CallFailed("route degraded")
        if end.finish_reason != generation_pb2.FINISH_REASON_STOP:
            reason = generation_pb2.FinishReason.Name(end.finish_reason)
            raise CallFailed(f"finish {reason.removeprefix('FINISH_REASON_').lower()}")
        server = {
            name: getattr(end.timings, name).ToTimedelta().total_seconds()
            for name in SERVER_TIMINGS
        }
        return clock.timing(end.usage.completion_tokens, expected_tokens, route, **server)

    return call
