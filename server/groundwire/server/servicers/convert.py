"""Proto ⇄ domain conversions and request validation shared by the servicers."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from google.protobuf import duration_pb2

from groundwire.clients.errors import FieldViolation, InvalidArgumentError
from groundwire.clients.models import FieldMatch, Metadata, ScoredChunk, SearchMode
from groundwire.server.pipeline.retrieval import RetrievalQuery
from groundwire.v1 import common_pb2, retrieval_pb2

MAX_FILTER_CONDITIONS = 16
MAX_ANY_VALUES = 100
FILTER_FIELD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")

MODE_TO_DOMAIN = {
    retrieval_pb2.RETRIEVAL_MODE_DENSE: SearchMode.DENSE,
    retrieval_pb2.RETRIEVAL_MODE_SPARSE: SearchMode.SPARSE,
    retrieval_pb2.RETRIEVAL_MODE_HYBRID: SearchMode.HYBRID,
}
MODE_TO_PROTO = {v: k for k, v in MODE_TO_DOMAIN.items()}


def duration(seconds: float) -> duration_pb2.Duration:
    """A Duration from float seconds (microsecond precision)."""
    out = duration_pb2.Duration()
    out.FromMicroseconds(round(seconds * 1_000_000))
    return out


def metadata_to_domain(metadata: Mapping[str, common_pb2.MetadataValue], path: str) -> Metadata:
    """Proto metadata to plain values; a value with no kind set is a malformed request."""
    out: Metadata = {}
    for name, value in metadata.items():
        kind = value.WhichOneof("kind")
        if kind is None:
            raise InvalidArgumentError.of(f"{path}[{name}]", "a metadata value must set a kind")
        out[name] = value.string_value if kind == "string_value" else value.int_value
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


def _filters(request: retrieval_pb2.RetrieveRequest, prefix: str) -> tuple[FieldMatch, ...]:
    conditions = request.filter.must
    if len(conditions) > MAX_FILTER_CONDITIONS:
        raise InvalidArgumentError.of(
            f"{prefix}filter.must", f"at most {MAX_FILTER_CONDITIONS} conditions"
        )
    matches = []
    for i, condition in enumerate(conditions):
        path = f"{prefix}filter.must[{i}]"
        if not FILTER_FIELD.match(condition.field):
            raise InvalidArgumentError.of(
                f"{path}.field", f"must match {FILTER_FIELD.pattern} (got {condition.field!r})"
            )
        kind = condition.WhichOneof("match")
        values: tuple[str | int, ...]
        if kind == "string_equals":
            values = (condition.string_equals,)
        elif kind == "int_equals":
            values = (condition.int_equals,)
        elif kind in ("string_any", "int_any"):
            listed = getattr(condition, kind).values
            if not 1 <= len(listed) <= MAX_ANY_VALUES:
                raise InvalidArgumentError.of(
                    f"{path}.{kind}.values", f"must hold 1 to {MAX_ANY_VALUES} values"
                )
            values = tuple(listed)
        else:
            raise InvalidArgumentError.of(
                f"{path}.match",
                "set one of string_equals, int_equals, string_any, int_any",
            )
        matches.append(FieldMatch(condition.field, values))
    return tuple(matches)


def query_violations(text: str, max_chars: int, field: str = "query") -> list[FieldViolation]:
    """What is wrong with a question: blank, or too long."""
    if not text.strip():
        return [FieldViolation(field, "must not be empty or blank")]
    if len(text) > max_chars:
        return [FieldViolation(field, f"must be at most {max_chars} characters")]
    return []


def retrieval_query(
    request: retrieval_pb2.RetrieveRequest,
    *,
    query_text: str,
    supported_modes: tuple[SearchMode, ...],
    default_mode: SearchMode,
    default_top_k: int,
    max_top_k: int,
    max_query_chars: int,
    prefix: str = "",
    query_field: str = "query",
) -> RetrievalQuery:
    """Validate a RetrieveRequest (all problems at once where they are independent)."""
    violations = query_violations(query_text, max_query_chars, query_field)
    stripped = query_text.strip()
    top_k = request.top_k if request.HasField("top_k") else default_top_k
    if not 1 <= top_k <= max_top_k:
        violations.append(FieldViolation(f"{prefix}top_k", f"must be 1 to {max_top_k}"))
    mode = default_mode
    if request.mode != retrieval_pb2.RETRIEVAL_MODE_UNSPECIFIED:
        known = MODE_TO_DOMAIN.get(request.mode)
        if known is None:
            violations.append(FieldViolation(f"{prefix}mode", f"unknown mode {request.mode}"))
        elif known not in supported_modes:
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
    if violations:
        raise InvalidArgumentError(violations)
    return RetrievalQuery(
        text=stripped,
        top_k=top_k,
        mode=mode,
        filters=_filters(request, prefix),
        min_score=min_score,
        use_cache=not request.bypass_cache,
    )
