"""Request validation, in one layer: the contract's messages in, the pipeline's domain types
out, or one INVALID_ARGUMENT naming every offending field.

Each check appends to one list of violations instead of raising, so a request's problems are
collected in one pass (a Generate request's retrieval options, filters and sampling alike)
and reported together. What passes here is something the pipeline and the stores can carry
out: a filter the stores cannot express is refused here, never deeper down as an internal
error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf import duration_pb2

from groundwire.clients.errors import FieldViolation, InvalidArgumentError
from groundwire.clients.models import (
    METADATA_FIELD_NAME,
    FieldMatch,
    Metadata,
    SearchMode,
    is_metadata_field_name,
)
from groundwire.server.pipeline.generation.catalog import Catalog
from groundwire.server.pipeline.generation.types import (
    GenerationRequest,
    Passage,
    Sampling,
    Tier,
)
from groundwire.server.pipeline.retrieval import RetrievalQuery
from groundwire.server.pipeline.retriever import Retriever
from groundwire.server.proto_enums import MODE_TO_DOMAIN, TIER_TO_DOMAIN
from groundwire.server.settings import Settings
from groundwire.v1 import common_pb2, generation_pb2, retrieval_pb2

MAX_FILTER_CONDITIONS = 16
MAX_ANY_VALUES = 100
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

Violations = list[FieldViolation]


@dataclass(frozen=True)
class RetrievalLimits:
    """What this deployment accepts in a retrieval (settings and the retriever's modes)."""

    supported_modes: tuple[SearchMode, ...]
    default_mode: SearchMode
    default_top_k: int
    max_top_k: int
    max_query_chars: int

    @classmethod
    def of(cls, settings: Settings, retriever: Retriever) -> RetrievalLimits:
        """The limits of this deployment, read per call (a remote retriever learns its modes
        when it connects)."""
        modes = retriever.supported_modes, retriever.default_mode
        return cls(*modes, settings.default_top_k, settings.max_top_k, settings.max_query_chars)


def _raise_if_any(violations: Violations, reason: str | None = None) -> None:
    """One INVALID_ARGUMENT with every violation; ``reason`` only when it is the sole one."""
    if violations:
        raise InvalidArgumentError(violations, reason=reason if len(violations) == 1 else None)


def metadata_to_domain(metadata: Mapping[str, common_pb2.MetadataValue], path: str) -> Metadata:
    """Proto metadata to plain values; a value with no kind set is a malformed request."""
    out: Metadata = {}
    for name, value in metadata.items():
        kind = value.WhichOneof("kind")
        if kind is None:
            raise InvalidArgumentError.of(f"{path}[{name}]", "a metadata value must set a kind")
        out[name] = value.string_value if kind == "string_value" else value.int_value
    return out


def _query(text: str, max_chars: int, field: str, violations: Violations) -> None:
    if not text.strip():
        violations.append(FieldViolation(field, "must not be empty or blank"))
    elif len(text) > max_chars:
        violations.append(FieldViolation(field, f"must be at most {max_chars} characters"))


def _filters(
    request: retrieval_pb2.RetrieveRequest, prefix: str, violations: Violations
) -> tuple[FieldMatch, ...]:
    conditions = request.filter.must
    if len(conditions) > MAX_FILTER_CONDITIONS:
        violations.append(
            FieldViolation(f"{prefix}filter.must", f"at most {MAX_FILTER_CONDITIONS} conditions")
        )
        return ()
    matches = []
    for i, condition in enumerate(conditions):
        path = f"{prefix}filter.must[{i}]"
        if not is_metadata_field_name(condition.field):
            violations.append(
                FieldViolation(
                    f"{path}.field",
                    f"must match {METADATA_FIELD_NAME.pattern} (got {condition.field!r})",
                )
            )
        kind = condition.WhichOneof("match")
        values: tuple[str | int, ...]
        if kind == "string_equals":
            values = (condition.string_equals,)
        elif kind == "int_equals":
            values = (condition.int_equals,)
        elif kind in ("string_any", "int_any"):
            values = tuple(getattr(condition, kind).values)
            if not 1 <= len(values) <= MAX_ANY_VALUES:
                violations.append(
                    FieldViolation(
                        f"{path}.{kind}.values", f"must hold 1 to {MAX_ANY_VALUES} values"
                    )
                )
        else:
            violations.append(
                FieldViolation(
                    f"{path}.match", "set one of string_equals, int_equals, string_any, int_any"
                )
            )
            continue
        matches.append(FieldMatch(condition.field, values))
    return tuple(matches)


def _retrieval(
    request: retrieval_pb2.RetrieveRequest,
    query_text: str,
    limits: RetrievalLimits,
    prefix: str,
    violations: Violations,
) -> RetrievalQuery:
    """The query a RetrieveRequest asks for; meaningful only when no violation was added."""
    _query(query_text, limits.max_query_chars, "query", violations)
    top_k = request.top_k if request.HasField("top_k") else limits.default_top_k
    if not 1 <= top_k <= limits.max_top_k:
        violations.append(FieldViolation(f"{prefix}top_k", f"must be 1 to {limits.max_top_k}"))
    mode = limits.default_mode
    if request.mode != retrieval_pb2.RETRIEVAL_MODE_UNSPECIFIED:
        known = MODE_TO_DOMAIN.get(request.mode)
        if known is None:
            violations.append(FieldViolation(f"{prefix}mode", f"unknown mode {request.mode}"))
        elif known not in limits.supported_modes:
            violations.append(
                FieldViolation(
                    f"{prefix}mode", f"{known.value} is not available: no dense embedder"
                )
            )
        else:
            mode = known
    min_score = request.min_score if request.HasField("min_score") else None
    if min_score is not None and not math.isfinite(min_score):
        violations.append(FieldViolation(f"{prefix}min_score", "must be a finite number"))
    return RetrievalQuery(
        text=query_text.strip(),
        top_k=top_k,
        mode=mode,
        filters=_filters(request, prefix, violations),
        min_score=min_score,
        use_cache=not request.bypass_cache,
    )


def retrieval_query(
    request: retrieval_pb2.RetrieveRequest, limits: RetrievalLimits
) -> RetrievalQuery:
    """A Retrieve request as the pipeline's query, or InvalidArgumentError naming every
    offending field."""
    violations: Violations = []
    query = _retrieval(request, request.query, limits, "", violations)
    _raise_if_any(violations)
    return query


def _seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


def _passages(
    request: generation_pb2.GenerateRequest, violations: Violations
) -> tuple[Passage, ...]:
    listed = request.context.passages
    if not 1 <= len(listed) <= MAX_CONTEXT_PASSAGES:
        violations.append(
            FieldViolation("context.passages", f"must hold 1 to {MAX_CONTEXT_PASSAGES} passages")
        )
        return ()
    out = []
    for i, passage in enumerate(listed):
        path = f"context.passages[{i}]"
        if not passage.text.strip():
            violations.append(FieldViolation(f"{path}.text", "must not be empty"))
        elif len(passage.text) > MAX_PASSAGE_CHARS:
            violations.append(
                FieldViolation(f"{path}.text", f"must be at most {MAX_PASSAGE_CHARS} characters")
            )
        if len(passage.id) > MAX_PASSAGE_ID_CHARS:
            violations.append(
                FieldViolation(f"{path}.id", f"must be at most {MAX_PASSAGE_ID_CHARS} characters")
            )
        out.append(Passage(passage.text, passage.id, passage.title, passage.source_uri))
    return tuple(out)


def _sampling(
    request: generation_pb2.GenerateRequest,
    max_output: int,
    default_first_token_timeout_s: float,
    violations: Violations,
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


def _max_output(catalog: Catalog, tier: Tier, model: str | None) -> int:
    """The largest max_output_tokens the request's first model accepts."""
    chain = catalog.chain(tier, model) or catalog.chain(Tier.STANDARD)
    if not chain:
        return MAX_OUTPUT_TOKENS_WITHOUT_MODELS
    return catalog.models[chain[0]].max_output_tokens


def generation_request(
    request: generation_pb2.GenerateRequest,
    *,
    catalog: Catalog,
    limits: RetrievalLimits,
    default_first_token_timeout_s: float,
) -> GenerationRequest:
    """A Generate request as the pipeline's, or InvalidArgumentError naming every offending
    field: the query, the retrieval options (when no passages are given), the model choice,
    the passages and the sampling, all in one pass."""
    violations: Violations = []
    retrieval: RetrievalQuery | None = None
    if request.HasField("context"):
        _query(request.query, limits.max_query_chars, "query", violations)
    else:
        options = request.retrieval if request.HasField("retrieval") else None
        retrieval = _retrieval(
            options or retrieval_pb2.RetrieveRequest(),
            request.query,
            limits,
            "retrieval.",
            violations,
        )
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
    _raise_if_any(violations, reason)
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
