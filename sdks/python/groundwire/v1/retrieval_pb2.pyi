import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from groundwire.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrievalMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRIEVAL_MODE_UNSPECIFIED: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_DENSE: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_SPARSE: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_HYBRID: _ClassVar[RetrievalMode]
RETRIEVAL_MODE_UNSPECIFIED: RetrievalMode
RETRIEVAL_MODE_DENSE: RetrievalMode
RETRIEVAL_MODE_SPARSE: RetrievalMode
RETRIEVAL_MODE_HYBRID: RetrievalMode

class FieldFilter(_message.Message):
    __slots__ = ("field", "string_equals", "int_equals", "string_any", "int_any")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    STRING_EQUALS_FIELD_NUMBER: _ClassVar[int]
    INT_EQUALS_FIELD_NUMBER: _ClassVar[int]
    STRING_ANY_FIELD_NUMBER: _ClassVar[int]
    INT_ANY_FIELD_NUMBER: _ClassVar[int]
    field: str
    string_equals: str
    int_equals: int
    string_any: StringList
    int_any: IntList
    def __init__(self, field: _Optional[str] = ..., string_equals: _Optional[str] = ..., int_equals: _Optional[int] = ..., string_any: _Optional[_Union[StringList, _Mapping]] = ..., int_any: _Optional[_Union[IntList, _Mapping]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class IntList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class MetadataFilter(_message.Message):
    __slots__ = ("must",)
    MUST_FIELD_NUMBER: _ClassVar[int]
    must: _containers.RepeatedCompositeFieldContainer[FieldFilter]
    def __init__(self, must: _Optional[_Iterable[_Union[FieldFilter, _Mapping]]] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("query", "top_k", "mode", "filter", "min_score", "bypass_cache")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    BYPASS_CACHE_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    mode: RetrievalMode
    filter: MetadataFilter
    min_score: float
    bypass_cache: bool
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., mode: _Optional[_Union[RetrievalMode, str]] = ..., filter: _Optional[_Union[MetadataFilter, _Mapping]] = ..., min_score: _Optional[float] = ..., bypass_cache: _Optional[bool] = ...) -> None: ...

class RetrievalTimings(_message.Message):
    __slots__ = ("cache", "embed", "search", "total")
    CACHE_FIELD_NUMBER: _ClassVar[int]
    EMBED_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    cache: _duration_pb2.Duration
    embed: _duration_pb2.Duration
    search: _duration_pb2.Duration
    total: _duration_pb2.Duration
    def __init__(self, cache: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., embed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., search: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., total: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("chunks", "cache_hit", "timings", "embedder_id", "mode")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.Chunk]
    cache_hit: bool
    timings: RetrievalTimings
    embedder_id: str
    mode: RetrievalMode
    def __init__(self, chunks: _Optional[_Iterable[_Union[_common_pb2.Chunk, _Mapping]]] = ..., cache_hit: _Optional[bool] = ..., timings: _Optional[_Union[RetrievalTimings, _Mapping]] = ..., embedder_id: _Optional[str] = ..., mode: _Optional[_Union[RetrievalMode, str]] = ...) -> None: ...
