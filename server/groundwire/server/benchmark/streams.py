"""One Generate stream, timed from the caller's side: through our server over gRPC, or the
direct baseline (``AsyncOpenAI`` streaming straight to the same upstream, with the very
messages, model, temperature and ``max_tokens`` our server sends).

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

from groundwire.server.benchmark.load import CallFailed
from groundwire.server.pipeline.generation.catalog import BUILTIN_MODELS, BUILTIN_TIERS, Tier
from groundwire.server.pipeline.generation.events import SourceInfo
from groundwire.server.pipeline.generation.prompt import SYSTEM_PROMPT, render_user
from groundwire.server.servicers.generation_convert import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    DEFAULT_TEMPERATURE,
)
from groundwire.v1 import generation_pb2, generation_pb2_grpc

if TYPE_CHECKING:
    import openai

CALL_TIMEOUT_S = 120.0
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


def upstream_request() -> dict[str, Any]:
    """What our server sends upstream for :func:`generate_request` (the standard tier's first
    model, the default temperature and output limit, the same prompt), streamed with usage."""
    spec = {m.name: m for m in BUILTIN_MODELS}[BUILTIN_TIERS[Tier.STANDARD][0]]
    sources = [
        SourceInfo(
            number=i + 1, chunk_id=pid, doc_id="", title=title, source_uri="", score=0.0, text=text
        )
        for i, (pid, title, text) in enumerate(PASSAGES)
    ]
    return {
        "model": spec.upstream_model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": render_user(QUESTION, sources)},
        ],
        "temperature": DEFAULT_TEMPERATURE,
        "max_tokens": min(DEFAULT_MAX_OUTPUT_TOKENS, spec.max_output_tokens),
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def direct_call(client: openai.AsyncOpenAI, expected_tokens: int) -> StreamCall:
    """The baseline: one streamed chat completion straight to the upstream."""
    body = upstream_request()

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
