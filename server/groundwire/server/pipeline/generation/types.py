"""The generation pipeline's types, in one place: what a validated request holds, and what
an answer produces (a start, deltas and citations, and an end, in that order; the servicer
turns each event into one frame of the stream)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from groundwire.server.pipeline.retrieval import RetrievalQuery


class Tier(enum.StrEnum):
    """A class of service; each maps to a chain of models tried in order."""

    STANDARD = "standard"
    ECONOMY = "economy"
    LONG_CONTEXT = "long_context"


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
class Sampling:
    """The caller's sampling parameters."""

    temperature: float
    max_output_tokens: int
    stop: tuple[str, ...]
    first_token_timeout_s: float


@dataclass(frozen=True)
class Passage:
    """A caller-supplied grounding passage."""

    text: str
    id: str = ""
    title: str = ""
    source_uri: str = ""


@dataclass(frozen=True)
class GenerationRequest:
    """A validated Generate request: grounding is ``passages`` or else ``retrieval``."""

    query: str
    retrieval: RetrievalQuery | None
    passages: tuple[Passage, ...] | None
    tier: Tier
    model: str | None
    sampling: Sampling
    time_limit_s: float | None = None
    use_cache: bool = True

    @property
    def choice(self) -> str:
        """What the caller chose, as part of the answer cache key."""
        return f"model:{self.model}" if self.model else f"tier:{self.tier.value}"


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
class Citation:
    """One cited number; a list marker gives one per number, all sharing the marker's span."""

    number: int
    start: int
    """Offset of the marker's ``[`` in the whole answer."""
    end: int
    """Offset one past the marker's ``]``."""
    chunk_id: str
    """The cited source's chunk id; ``""`` when the number names no source."""
    valid: bool
    """False when the number names no source (a model's invention, or 0)."""


@dataclass(frozen=True)
class Usage:
    """Tokens summed over attempts; ``cached_tokens`` is None when never reported."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None


ZERO_USAGE = Usage(0, 0, None)


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
