import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from groundwire.v1 import retrieval_pb2 as _retrieval_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_STANDARD: _ClassVar[Tier]
    TIER_ECONOMY: _ClassVar[Tier]
    TIER_LONG_CONTEXT: _ClassVar[Tier]

class Route(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_UNSPECIFIED: _ClassVar[Route]
    ROUTE_PRIMARY: _ClassVar[Route]
    ROUTE_FALLBACK: _ClassVar[Route]
    ROUTE_ECONOMY: _ClassVar[Route]
    ROUTE_LONG_CONTEXT: _ClassVar[Route]
    ROUTE_CACHE: _ClassVar[Route]
    ROUTE_DEGRADED: _ClassVar[Route]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_MAX_TOKENS: _ClassVar[FinishReason]
    FINISH_REASON_CANCELLED: _ClassVar[FinishReason]
    FINISH_REASON_TIME_LIMIT: _ClassVar[FinishReason]
    FINISH_REASON_UPSTREAM_ERROR: _ClassVar[FinishReason]
    FINISH_REASON_DEGRADED: _ClassVar[FinishReason]
    FINISH_REASON_CONTENT_FILTER: _ClassVar[FinishReason]
TIER_UNSPECIFIED: Tier
TIER_STANDARD: Tier
TIER_ECONOMY: Tier
TIER_LONG_CONTEXT: Tier
ROUTE_UNSPECIFIED: Route
ROUTE_PRIMARY: Route
ROUTE_FALLBACK: Route
ROUTE_ECONOMY: Route
ROUTE_LONG_CONTEXT: Route
ROUTE_CACHE: Route
ROUTE_DEGRADED: Route
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_MAX_TOKENS: FinishReason
FINISH_REASON_CANCELLED: FinishReason
FINISH_REASON_TIME_LIMIT: FinishReason
FINISH_REASON_UPSTREAM_ERROR: FinishReason
FINISH_REASON_DEGRADED: FinishReason
FINISH_REASON_CONTENT_FILTER: FinishReason

class ContextPassage(_message.Message):
    __slots__ = ("text", "id", "title", "source_uri")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    text: str
    id: str
    title: str
    source_uri: str
    def __init__(self, text: _Optional[str] = ..., id: _Optional[str] = ..., title: _Optional[str] = ..., source_uri: _Optional[str] = ...) -> None: ...

class ContextPassages(_message.Message):
    __slots__ = ("passages",)
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    passages: _containers.RepeatedCompositeFieldContainer[ContextPassage]
    def __init__(self, passages: _Optional[_Iterable[_Union[ContextPassage, _Mapping]]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("query", "retrieval", "context", "tier", "model", "temperature", "max_output_tokens", "stop", "first_token_timeout", "time_limit", "bypass_cache")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    FIRST_TOKEN_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_FIELD_NUMBER: _ClassVar[int]
    BYPASS_CACHE_FIELD_NUMBER: _ClassVar[int]
    query: str
    retrieval: _retrieval_pb2.RetrieveRequest
    context: ContextPassages
    tier: Tier
    model: str
    temperature: float
    max_output_tokens: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    first_token_timeout: _duration_pb2.Duration
    time_limit: _duration_pb2.Duration
    bypass_cache: bool
    def __init__(self, query: _Optional[str] = ..., retrieval: _Optional[_Union[_retrieval_pb2.RetrieveRequest, _Mapping]] = ..., context: _Optional[_Union[ContextPassages, _Mapping]] = ..., tier: _Optional[_Union[Tier, str]] = ..., model: _Optional[str] = ..., temperature: _Optional[float] = ..., max_output_tokens: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., first_token_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., time_limit: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., bypass_cache: _Optional[bool] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("number", "chunk_id", "doc_id", "title", "source_uri", "score", "text")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    number: int
    chunk_id: str
    doc_id: str
    title: str
    source_uri: str
    score: float
    text: str
    def __init__(self, number: _Optional[int] = ..., chunk_id: _Optional[str] = ..., doc_id: _Optional[str] = ..., title: _Optional[str] = ..., source_uri: _Optional[str] = ..., score: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class StartFrame(_message.Message):
    __slots__ = ("route", "model", "attempt", "sources", "cache_hit")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    route: Route
    model: str
    attempt: int
    sources: _containers.RepeatedCompositeFieldContainer[Source]
    cache_hit: bool
    def __init__(self, route: _Optional[_Union[Route, str]] = ..., model: _Optional[str] = ..., attempt: _Optional[int] = ..., sources: _Optional[_Iterable[_Union[Source, _Mapping]]] = ..., cache_hit: _Optional[bool] = ...) -> None: ...

class DeltaFrame(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class CitationFrame(_message.Message):
    __slots__ = ("number", "start", "end", "chunk_id", "valid")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    number: int
    start: int
    end: int
    chunk_id: str
    valid: bool
    def __init__(self, number: _Optional[int] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., chunk_id: _Optional[str] = ..., valid: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "cached_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ...) -> None: ...

class Money(_message.Message):
    __slots__ = ("currency", "micros")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    MICROS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    micros: int
    def __init__(self, currency: _Optional[str] = ..., micros: _Optional[int] = ...) -> None: ...

class GenerationTimings(_message.Message):
    __slots__ = ("retrieval", "cache", "upstream_first_token", "first_token", "total", "overhead")
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_FIELD_NUMBER: _ClassVar[int]
    retrieval: _duration_pb2.Duration
    cache: _duration_pb2.Duration
    upstream_first_token: _duration_pb2.Duration
    first_token: _duration_pb2.Duration
    total: _duration_pb2.Duration
    overhead: _duration_pb2.Duration
    def __init__(self, retrieval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cache: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., upstream_first_token: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., first_token: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., total: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., overhead: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class EndFrame(_message.Message):
    __slots__ = ("finish_reason", "usage", "cost", "timings", "attempts", "continued_after_failure", "final_model", "detail")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_AFTER_FAILURE_FIELD_NUMBER: _ClassVar[int]
    FINAL_MODEL_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    finish_reason: FinishReason
    usage: Usage
    cost: Money
    timings: GenerationTimings
    attempts: int
    continued_after_failure: bool
    final_model: str
    detail: str
    def __init__(self, finish_reason: _Optional[_Union[FinishReason, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., cost: _Optional[_Union[Money, _Mapping]] = ..., timings: _Optional[_Union[GenerationTimings, _Mapping]] = ..., attempts: _Optional[int] = ..., continued_after_failure: _Optional[bool] = ..., final_model: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("start", "delta", "citation", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CITATION_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: StartFrame
    delta: DeltaFrame
    citation: CitationFrame
    end: EndFrame
    def __init__(self, start: _Optional[_Union[StartFrame, _Mapping]] = ..., delta: _Optional[_Union[DeltaFrame, _Mapping]] = ..., citation: _Optional[_Union[CitationFrame, _Mapping]] = ..., end: _Optional[_Union[EndFrame, _Mapping]] = ...) -> None: ...
