from groundwire.v1 import generation_pb2 as _generation_pb2
from groundwire.v1 import retrieval_pb2 as _retrieval_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "upstream_model", "context_window", "max_output_tokens", "input_micros_per_million", "output_micros_per_million", "currency", "breaker")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MICROS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    name: str
    upstream_model: str
    context_window: int
    max_output_tokens: int
    input_micros_per_million: int
    output_micros_per_million: int
    currency: str
    breaker: BreakerState
    def __init__(self, name: _Optional[str] = ..., upstream_model: _Optional[str] = ..., context_window: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., input_micros_per_million: _Optional[int] = ..., output_micros_per_million: _Optional[int] = ..., currency: _Optional[str] = ..., breaker: _Optional[_Union[BreakerState, str]] = ...) -> None: ...

class TierInfo(_message.Message):
    __slots__ = ("tier", "chain")
    TIER_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    tier: _generation_pb2.Tier
    chain: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tier: _Optional[_Union[_generation_pb2.Tier, str]] = ..., chain: _Optional[_Iterable[str]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_top_k", "max_query_chars", "max_document_bytes", "max_message_bytes", "max_context_passages")
    MAX_TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_QUERY_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_PASSAGES_FIELD_NUMBER: _ClassVar[int]
    max_top_k: int
    max_query_chars: int
    max_document_bytes: int
    max_message_bytes: int
    max_context_passages: int
    def __init__(self, max_top_k: _Optional[int] = ..., max_query_chars: _Optional[int] = ..., max_document_bytes: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_context_passages: _Optional[int] = ...) -> None: ...

class GetCapabilitiesResponse(_message.Message):
    __slots__ = ("server_version", "embedder_id", "retrieval_modes", "models", "tiers", "limits", "features")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_ID_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_MODES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    embedder_id: str
    retrieval_modes: _containers.RepeatedScalarFieldContainer[_retrieval_pb2.RetrievalMode]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    tiers: _containers.RepeatedCompositeFieldContainer[TierInfo]
    limits: Limits
    features: _containers.ScalarMap[str, bool]
    def __init__(self, server_version: _Optional[str] = ..., embedder_id: _Optional[str] = ..., retrieval_modes: _Optional[_Iterable[_Union[_retrieval_pb2.RetrievalMode, str]]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., tiers: _Optional[_Iterable[_Union[TierInfo, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., features: _Optional[_Mapping[str, bool]] = ...) -> None: ...
