"""What the generation pipeline produces: a start, deltas, citations and an end, in that
order (the servicer turns each into one frame of the stream)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from groundwire.server.pipeline.generation.citations import Citation


class Route(enum.StrEnum):
    """Which path served an answer."""

    PRIMARY = "primary"
    FALLBACK = "fallback"
    ECONOMY = "economy"
    LONG_CONTEXT = "long_context"
    CACHE = "cache"
    DEGRADED = "degraded"


class Finish(enum.StrEnum):
    """Why an answer ended."""

    STOP = "stop"
    MAX_TOKENS = "max_tokens"
    CANCELLED = "cancelled"
    TIME_LIMIT = "time_limit"
    UPSTREAM_ERROR = "upstream_error"
    DEGRADED = "degraded"
    CONTENT_FILTER = "content_filter"


# The upstream's finish_reason values and ours.
UPSTREAM_FINISH = {
    "stop": Finish.STOP,
    "length": Finish.MAX_TOKENS,
    "content_filter": Finish.CONTENT_FILTER,
}


@dataclass(frozen=True)
class SourceInfo:
    """A grounding passage, numbered as the prompt numbers it."""

    number: int
    chunk_id: str
    doc_id: str
    title: str
    source_uri: str
    score: float
    text: str


@dataclass(frozen=True)
class Start:
    """The answer begins: who serves it, from which sources."""

    route: Route
    model: str
    attempt: int
    sources: tuple[SourceInfo, ...]
    cache_hit: bool = False


@dataclass(frozen=True)
class Delta:
    """New answer text."""

    text: str


@dataclass(frozen=True)
class Usage:
    """Tokens summed over attempts; ``cached_tokens`` is None when never reported."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None


@dataclass(frozen=True)
class Timings:
    """Where the time went, in seconds."""

    retrieval_s: float = 0.0
    cache_s: float = 0.0
    upstream_first_token_s: float = 0.0
    first_token_s: float = 0.0
    total_s: float = 0.0
    overhead_s: float = 0.0


@dataclass(frozen=True)
class End:
    """The answer is over."""

    finish: Finish
    usage: Usage
    cost_micros: int
    currency: str
    timings: Timings
    attempts: int = 0
    continued_after_failure: bool = False
    final_model: str = ""
    detail: str = ""


GenerationEvent = Start | Delta | Citation | End
