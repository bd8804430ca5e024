"""Helpers for Generate tests: requests with passages, and reading a whole stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import duration_pb2

from groundwire.v1 import generation_pb2

PASSAGES = (
    ("aspirin", "Aspirin lowers fever and relieves mild pain. It thins the blood."),
    ("water", "Water boils at 100 degrees Celsius at sea level."),
    ("tides", "Tides are caused by the gravitational pull of the Moon and the Sun."),
)


def passages_request(
    query: str = "What lowers fever?", **fields: Any
) -> generation_pb2.GenerateRequest:
    """A Generate request grounded in :data:`PASSAGES` (no retrieval)."""
    return generation_pb2.GenerateRequest(
        query=query,
        context=generation_pb2.ContextPassages(
            passages=[
                generation_pb2.ContextPassage(id=pid, text=text, title=pid.title())
                for pid, text in PASSAGES
            ]
        ),
        **fields,
    )


def uncached_request(**fields: Any) -> generation_pb2.GenerateRequest:
    """:func:`passages_request` that bypasses the answer cache: every call reaches the
    upstream."""
    return passages_request(bypass_cache=True, **fields)


def seconds(value: float) -> duration_pb2.Duration:
    """A Duration of ``value`` seconds (millisecond precision)."""
    out = duration_pb2.Duration()
    out.FromMilliseconds(int(value * 1000))
    return out


@dataclass
class Stream:
    """Everything a caller saw of one Generate call."""

    frames: list[generation_pb2.GenerateResponse] = field(default_factory=list)
    error: grpc.aio.AioRpcError | None = None
    initial_metadata: dict[str, str] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return [str(f.WhichOneof("frame")) for f in self.frames]

    @property
    def start(self) -> generation_pb2.StartFrame:
        assert self.frames and self.frames[0].HasField("start"), self.kinds
        return self.frames[0].start

    @property
    def end(self) -> generation_pb2.EndFrame:
        assert self.frames and self.frames[-1].HasField("end"), self.kinds
        return self.frames[-1].end

    @property
    def text(self) -> str:
        return "".join(f.delta.text for f in self.frames if f.HasField("delta"))

    @property
    def deltas(self) -> list[str]:
        return [f.delta.text for f in self.frames if f.HasField("delta")]

    @property
    def citations(self) -> list[generation_pb2.CitationFrame]:
        return [f.citation for f in self.frames if f.HasField("citation")]


async def collect(call: Any) -> Stream:
    """Read a Generate call to its end, keeping a failed status instead of raising."""
    stream = Stream()
    try:
        async for frame in call:
            stream.frames.append(frame)
    except grpc.aio.AioRpcError as exc:
        stream.error = exc
    stream.initial_metadata = {k: str(v) for k, v in (await call.initial_metadata() or ())}
    return stream


async def read_deltas(call: Any, count: int) -> int:
    """Read a Generate call until ``count`` deltas have arrived (or it ended), leaving it
    open for the caller to cancel; returns how many deltas arrived."""
    seen = 0
    async for frame in call:
        if frame.HasField("delta"):
            seen += 1
            if seen == count:
                break
    return seen


def assert_well_formed(stream: Stream) -> None:
    """One start first, one end last, deltas and citations between, each citation after
    the delta that completed its marker and pointing at the text it covers."""
    kinds = stream.kinds
    assert kinds[0] == "start" and kinds[-1] == "end", kinds
    assert kinds.count("start") == 1 and kinds.count("end") == 1, kinds
    assert set(kinds[1:-1]) <= {"delta", "citation"}, kinds
    text = ""
    for frame in stream.frames[1:-1]:
        if frame.HasField("delta"):
            assert frame.delta.text, "an empty delta"
            text += frame.delta.text
        else:
            citation = frame.citation
            assert citation.end <= len(text), "a citation before its text"
            marker = text[citation.start : citation.end]
            assert marker.startswith("[") and marker.endswith("]")
            assert str(citation.number) in marker
