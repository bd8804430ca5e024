"""Domain results as the contract's messages: search hits, metadata, durations, and each
event of an answer as one frame of the Generate stream."""

from __future__ import annotations

from google.protobuf import duration_pb2

from groundwire.clients.models import Metadata, ScoredChunk
from groundwire.server.pipeline.generation.types import Citation, Delta, End, GenerationEvent, Start
from groundwire.server.proto_enums import FINISH_TO_PROTO, ROUTE_TO_PROTO
from groundwire.v1 import common_pb2, generation_pb2


def duration(seconds: float) -> duration_pb2.Duration:
    """A Duration from float seconds (microsecond precision)."""
    out = duration_pb2.Duration()
    out.FromMicroseconds(round(seconds * 1_000_000))
    return out


def metadata_to_proto(metadata: Metadata) -> dict[str, common_pb2.MetadataValue]:
    """Plain metadata values to proto."""
    return {
        name: common_pb2.MetadataValue(string_value=value)
        if isinstance(value, str)
        else common_pb2.MetadataValue(int_value=value)
        for name, value in metadata.items()
    }


def chunk_to_proto(chunk: ScoredChunk) -> common_pb2.Chunk:
    """A search hit as the contract's Chunk."""
    record = chunk.record
    return common_pb2.Chunk(
        chunk_id=record.chunk_id,
        doc_id=record.doc_id,
        title=record.title,
        text=record.text,
        source_uri=record.source_uri,
        chunk_index=record.chunk_index,
        metadata=metadata_to_proto(record.metadata),
        score=chunk.score,
    )


def event_to_proto(event: GenerationEvent) -> generation_pb2.GenerateResponse:
    """One event as one frame."""
    if isinstance(event, Delta):
        return generation_pb2.GenerateResponse(delta=generation_pb2.DeltaFrame(text=event.text))
    if isinstance(event, Citation):
        return generation_pb2.GenerateResponse(
            citation=generation_pb2.CitationFrame(
                number=event.number,
                start=event.start,
                end=event.end,
                chunk_id=event.chunk_id,
                valid=event.valid,
            )
        )
    if isinstance(event, Start):
        return generation_pb2.GenerateResponse(
            start=generation_pb2.StartFrame(
                route=ROUTE_TO_PROTO[event.route],
                model=event.model,
                attempt=event.attempt,
                sources=[
                    generation_pb2.Source(
                        number=s.number,
                        chunk_id=s.chunk_id,
                        doc_id=s.doc_id,
                        title=s.title,
                        source_uri=s.source_uri,
                        score=s.score,
                        text=s.text,
                    )
                    for s in event.sources
                ],
                cache_hit=event.cache_hit,
            )
        )
    return generation_pb2.GenerateResponse(end=_end_to_proto(event))


def _end_to_proto(end: End) -> generation_pb2.EndFrame:
    timings = end.timings
    usage = generation_pb2.Usage(
        prompt_tokens=end.usage.prompt_tokens, completion_tokens=end.usage.completion_tokens
    )
    if end.usage.cached_tokens is not None:
        usage.cached_tokens = end.usage.cached_tokens
    return generation_pb2.EndFrame(
        finish_reason=FINISH_TO_PROTO[end.finish],
        usage=usage,
        cost=generation_pb2.Money(currency=end.currency, micros=end.cost_micros),
        timings=generation_pb2.GenerationTimings(
            retrieval=duration(timings.retrieval_s),
            cache=duration(timings.cache_s),
            upstream_first_token=duration(timings.upstream_first_token_s),
            first_token=duration(timings.first_token_s),
            total=duration(timings.total_s),
            overhead=duration(timings.overhead_s),
        ),
        attempts=end.attempts,
        continued_after_failure=end.continued_after_failure,
        final_model=end.final_model,
        detail=end.detail,
    )
