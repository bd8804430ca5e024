"""GenerateRequest validation and the answer's events as proto frames."""

from __future__ import annotations

import math

from google.protobuf import duration_pb2

from groundwire.clients.errors import FieldViolation, InvalidArgumentError
from groundwire.server.pipeline.generation.answering import Sampling
from groundwire.server.pipeline.generation.catalog import Catalog, Tier
from groundwire.server.pipeline.generation.citations import Citation
from groundwire.server.pipeline.generation.events import (
    Delta,
    End,
    Finish,
    GenerationEvent,
    Route,
    Start,
)
from groundwire.server.pipeline.generation.pipeline import GenerationRequest, Passage
from groundwire.server.pipeline.retrieval import RetrievalQuery
from groundwire.server.servicers.convert import duration
from groundwire.v1 import generation_pb2, retrieval_pb2

MAX_CONTEXT_PASSAGES = 64
MAX_PASSAGE_CHARS = 32_768
MAX_PASSAGE_ID_CHARS = 256
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
MAX_FIRST_TOKEN_TIMEOUT_S = 60.0
DEFAULT_TEMPERATURE = 0.1
DEFAULT_MAX_OUTPUT_TOKENS = 1024
# The ceiling on max_output_tokens when no model is configured (degraded answers only).
MAX_OUTPUT_TOKENS_WITHOUT_MODELS = 32_768

TIER_TO_DOMAIN = {
    generation_pb2.TIER_UNSPECIFIED: Tier.STANDARD,
    generation_pb2.TIER_STANDARD: Tier.STANDARD,
    generation_pb2.TIER_ECONOMY: Tier.ECONOMY,
    generation_pb2.TIER_LONG_CONTEXT: Tier.LONG_CONTEXT,
}
TIER_TO_PROTO = {
    Tier.STANDARD: generation_pb2.TIER_STANDARD,
    Tier.ECONOMY: generation_pb2.TIER_ECONOMY,
    Tier.LONG_CONTEXT: generation_pb2.TIER_LONG_CONTEXT,
}
ROUTE_TO_PROTO = {
    Route.PRIMARY: generation_pb2.ROUTE_PRIMARY,
    Route.FALLBACK: generation_pb2.ROUTE_FALLBACK,
    Route.ECONOMY: generation_pb2.ROUTE_ECONOMY,
    Route.LONG_CONTEXT: generation_pb2.ROUTE_LONG_CONTEXT,
    Route.CACHE: generation_pb2.ROUTE_CACHE,
    Route.DEGRADED: generation_pb2.ROUTE_DEGRADED,
}
FINISH_TO_PROTO = {
    Finish.STOP: generation_pb2.FINISH_REASON_STOP,
    Finish.MAX_TOKENS: generation_pb2.FINISH_REASON_MAX_TOKENS,
    Finish.CANCELLED: generation_pb2.FINISH_REASON_CANCELLED,
    Finish.TIME_LIMIT: generation_pb2.FINISH_REASON_TIME_LIMIT,
    Finish.UPSTREAM_ERROR: generation_pb2.FINISH_REASON_UPSTREAM_ERROR,
    Finish.DEGRADED: generation_pb2.FINISH_REASON_DEGRADED,
    Finish.CONTENT_FILTER: generation_pb2.FINISH_REASON_CONTENT_FILTER,
}


def _seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


def _passages(
    request: generation_pb2.GenerateRequest, violations: list[FieldViolation]
) -> tuple[Passage, ...]:
    listed = request.context.passages
    if not 1 <= len(listed) <= MAX_CONTEXT_PASSAGES:
        violations.append(
            FieldViolation("context.passages", f"must hold 1 to {MAX_CONTEXT_PASSAGES} passages")
        )
        return ()
    out = []
    for i, passage in enumerate(listed):
        if not passage.text.strip():
            violations.append(FieldViolation(f"context.passages[{i}].text", "must not be empty"))
        elif len(passage.text) > MAX_PASSAGE_CHARS:
            violations.append(
                FieldViolation(
                    f"context.passages[{i}].text", f"must be at most {MAX_PASSAGE_CHARS} characters"
                )
            )
        if len(passage.id) > MAX_PASSAGE_ID_CHARS:
            violations.append(
                FieldViolation(
                    f"context.passages[{i}].id",
                    f"must be at most {MAX_PASSAGE_ID_CHARS} characters",
                )
            )
        out.append(Passage(passage.text, passage.id, passage.title, passage.source_uri))
    return tuple(out)


def _sampling(
    request: generation_pb2.GenerateRequest,
    max_output: int,
    default_first_token_timeout_s: float,
    violations: list[FieldViolation],
) -> Sampling:
    temperature = request.temperature if request.HasField("temperature") else DEFAULT_TEMPERATURE
    if not (math.isfinite(temperature) and 0.0 <= temperature <= 2.0):
        violations.append(FieldViolation("temperature", "must be between 0 and 2"))
    max_tokens = (
        request.max_output_tokens
        if request.HasField("max_output_tokens")
        else min(DEFAULT_MAX_OUTPUT_TOKENS, max_output)
    )
    if not 1 <= max_tokens <= max_output:
        violations.append(
            FieldViolation("max_output_tokens", f"must be 1 to {max_output} for this model")
        )
    if len(request.stop) > MAX_STOP_SEQUENCES:
        violations.append(FieldViolation("stop", f"at most {MAX_STOP_SEQUENCES} sequences"))
    for i, stop in enumerate(request.stop):
        if not 1 <= len(stop) <= MAX_STOP_CHARS:
            violations.append(FieldViolation(f"stop[{i}]", f"must be 1 to {MAX_STOP_CHARS} chars"))
    first_token = default_first_token_timeout_s
    if request.HasField("first_token_timeout"):
        first_token = _seconds(request.first_token_timeout)
        if not 0 < first_token <= MAX_FIRST_TOKEN_TIMEOUT_S:
            violations.append(
                FieldViolation(
                    "first_token_timeout",
                    f"must be above 0 and at most {MAX_FIRST_TOKEN_TIMEOUT_S:g} s",
                )
            )
    return Sampling(
        temperature=round(float(temperature), 6),
        max_output_tokens=max_tokens,
        stop=tuple(request.stop),
        first_token_timeout_s=first_token,
    )


def generation_request(
    request: generation_pb2.GenerateRequest,
    *,
    catalog: Catalog,
    retrieval: RetrievalQuery | None,
    default_first_token_timeout_s: float,
    earlier: list[FieldViolation],
) -> GenerationRequest:
    """Validate everything but the query and retrieval options, which the caller checked
    (its violations are ``earlier``; the query it built is ``retrieval``). Every problem is
    reported at once."""
    violations = list(earlier)
    reason: str | None = None
    tier = Tier.STANDARD
    model: str | None = None
    choice = request.WhichOneof("model_choice")
    if choice == "tier":
        known = TIER_TO_DOMAIN.get(request.tier)
        if known is None:
            violations.append(FieldViolation("tier", f"unknown tier {request.tier}"))
        else:
            tier = known
    elif choice == "model":
        if request.model not in catalog.models:
            offered = ", ".join(sorted(catalog.models)) or "none: no model is configured"
            violations.append(
                FieldViolation("model", f"unknown model {request.model!r} (offered: {offered})")
            )
            reason = "ERROR_REASON_UNKNOWN_MODEL"
        else:
            model = request.model
            tier = catalog.tier_of(model)
    max_output = _max_output(catalog, tier, model)
    passages = _passages(request, violations) if request.HasField("context") else None
    sampling = _sampling(request, max_output, default_first_token_timeout_s, violations)
    time_limit = _seconds(request.time_limit) if request.HasField("time_limit") else None
    if time_limit is not None and time_limit <= 0:
        violations.append(FieldViolation("time_limit", "must be above 0"))
    if violations:
        raise InvalidArgumentError(violations, reason=reason if len(violations) == 1 else None)
    return GenerationRequest(
        query=request.query.strip(),
        retrieval=retrieval,
        passages=passages,
        tier=tier,
        model=model,
        sampling=sampling,
        time_limit_s=time_limit,
        use_cache=not request.bypass_cache,
    )


def _max_output(catalog: Catalog, tier: Tier, model: str | None) -> int:
    """The largest max_output_tokens the request's first model accepts."""
    chain = catalog.chain(tier, model) or catalog.chain(Tier.STANDARD)
    if not chain:
        return MAX_OUTPUT_TOKENS_WITHOUT_MODELS
    return catalog.models[chain[0]].max_output_tokens


def retrieval_options(request: generation_pb2.GenerateRequest) -> retrieval_pb2.RetrieveRequest:
    """The retrieval options (defaults when the request sets none)."""
    if request.HasField("retrieval"):
        return request.retrieval
    return retrieval_pb2.RetrieveRequest()


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
