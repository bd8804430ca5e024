"""What the sync and async clients share: call metadata, deadlines, channel options, requests."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeAlias, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from groundwire.sdk._version import __version__
from groundwire.sdk.errors import CORRELATION_ID_KEY, GroundwireError
from groundwire.v1 import generation_pb2, retrieval_pb2

#: The deadline of unary calls (health, capabilities, retrieve, delete) when none is given.
DEFAULT_UNARY_TIMEOUT_S = 30.0
#: The deadline of streaming calls (generate, ingest) when none is given.
DEFAULT_STREAM_TIMEOUT_S = 300.0
#: Channel options applied before the caller's own (which win on the same key).
DEFAULT_CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.max_send_message_length": 64 * 1024 * 1024,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    "grpc.primary_user_agent": f"groundwire-sdk-python/{__version__}",
}
HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"

ChannelOptions: TypeAlias = Sequence[tuple[str, Any]] | Mapping[str, Any]
Metadata: TypeAlias = tuple[tuple[str, str], ...]
RetrievalModeLike: TypeAlias = retrieval_pb2.RetrievalMode.ValueType | str
TierLike: TypeAlias = generation_pb2.Tier.ValueType | str

#: The retrieval modes by their short names (``"dense"``, ``"sparse"``, ``"hybrid"``), the
#: names :func:`retrieval_mode`, the ``mode=`` keyword and command-line flags accept. Read
#: from the generated enum, so a mode the contract adds appears here without an SDK change.
RETRIEVAL_MODES: Mapping[str, retrieval_pb2.RetrievalMode.ValueType] = MappingProxyType(
    {
        name.removeprefix("RETRIEVAL_MODE_").lower(): value
        for name, value in retrieval_pb2.RetrievalMode.items()
        if value != retrieval_pb2.RETRIEVAL_MODE_UNSPECIFIED
    }
)
#: The model tiers by their short names (``"standard"``, ``"economy"``, ``"long-context"``),
#: the names :func:`tier` accepts; read from the generated enum like :data:`RETRIEVAL_MODES`.
TIERS: Mapping[str, generation_pb2.Tier.ValueType] = MappingProxyType(
    {
        name.removeprefix("TIER_").lower().replace("_", "-"): value
        for name, value in generation_pb2.Tier.items()
        if value != generation_pb2.TIER_UNSPECIFIED
    }
)


class ServingStatus(enum.IntEnum):
    """The ``grpc.health.v1.HealthCheckResponse.ServingStatus`` of a server."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3


def channel_options(options: ChannelOptions | None) -> list[tuple[str, Any]]:
    """The defaults overlaid with the caller's options, as gRPC expects them."""
    merged = dict(DEFAULT_CHANNEL_OPTIONS)
    if options is not None:
        merged.update(options.items() if isinstance(options, Mapping) else options)
    return list(merged.items())


def call_metadata(api_key: str | None, correlation_id: str) -> Metadata:
    """The request metadata of one call: credentials and correlation id."""
    if api_key:
        return (("authorization", f"Bearer {api_key}"), (CORRELATION_ID_KEY, correlation_id))
    return ((CORRELATION_ID_KEY, correlation_id),)


def new_correlation_id(given: str | None) -> str:
    """The caller's correlation id, or a fresh random one."""
    return given if given else uuid.uuid4().hex


def header_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    """The first value of ``key`` in gRPC metadata, as text."""
    for name, value in metadata or ():
        if name == key:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None


def metadata_dict(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str | bytes]:
    """gRPC metadata as a dict (the first value of each key)."""
    result: dict[str, str | bytes] = {}
    for name, value in metadata or ():
        result.setdefault(name, value)
    return result


def retrieval_mode(mode: RetrievalModeLike) -> retrieval_pb2.RetrievalMode.ValueType:
    """A retrieval mode from its enum value or name (``"dense"``, ``"RETRIEVAL_MODE_DENSE"``)."""
    if isinstance(mode, str):
        name = mode.upper()
        if not name.startswith("RETRIEVAL_MODE_"):
            name = f"RETRIEVAL_MODE_{name}"
        try:
            return retrieval_pb2.RetrievalMode.Value(name)
        except ValueError:
            raise ValueError(
                f"unknown retrieval mode {mode!r}; known: {', '.join(RETRIEVAL_MODES)}"
            ) from None
    return mode


def tier(value: TierLike) -> generation_pb2.Tier.ValueType:
    """A model tier from its enum value or name (``"long-context"``, ``"TIER_LONG_CONTEXT"``)."""
    if isinstance(value, str):
        short = value.lower().removeprefix("tier_").replace("_", "-")
        try:
            return TIERS[short]
        except KeyError:
            raise ValueError(f"unknown tier {value!r}; known: {', '.join(TIERS)}") from None
    return value


def retrieve_request(
    query: retrieval_pb2.RetrieveRequest | str,
    *,
    top_k: int | None,
    mode: RetrievalModeLike | None,
    filter: retrieval_pb2.MetadataFilter | None,
    min_score: float | None,
    bypass_cache: bool,
) -> retrieval_pb2.RetrieveRequest:
    """The request of ``retrieve``: the one given, or one built from a query and options."""
    if isinstance(query, retrieval_pb2.RetrieveRequest):
        if any(v is not None for v in (top_k, mode, filter, min_score)) or bypass_cache:
            raise TypeError("pass options either in the RetrieveRequest or as keywords, not both")
        return query
    request = retrieval_pb2.RetrieveRequest(query=query, bypass_cache=bypass_cache)
    if top_k is not None:
        request.top_k = top_k
    if mode is not None:
        request.mode = retrieval_mode(mode)
    if filter is not None:
        request.filter.CopyFrom(filter)
    if min_score is not None:
        request.min_score = min_score
    return request


def generate_request(
    request: generation_pb2.GenerateRequest | str,
) -> generation_pb2.GenerateRequest:
    """The request of ``generate``: the one given, or a bare question with server defaults."""
    if isinstance(request, str):
        return generation_pb2.GenerateRequest(query=request)
    return request


def _health_messages() -> tuple[type[message.Message], type[message.Message]]:
    # The two messages of grpc/health/v1/health.proto, built in a private pool so the SDK
    # needs neither grpcio-health-checking nor a slot in the default pool.
    proto = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="groundwire_sdk/grpc/health/v1/health.proto",
        package="grpc.health.v1",
        syntax="proto3",
    )
    request = file.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=proto.TYPE_STRING, label=proto.LABEL_OPTIONAL)
    response = file.message_type.add(name="HealthCheckResponse")
    states = response.enum_type.add(name="ServingStatus")
    for state in ServingStatus:
        states.value.add(name=state.name, number=state.value)
    response.field.add(
        name="status",
        number=1,
        type=proto.TYPE_ENUM,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
        label=proto.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")
        ),
        message_factory.GetMessageClass(
            pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")
        ),
    )


HealthCheckRequest, HealthCheckResponse = _health_messages()


def health_request(service: str) -> bytes:
    """A serialized ``HealthCheckRequest`` for ``service``."""
    return HealthCheckRequest(service=service).SerializeToString()


def health_status(response: bytes) -> ServingStatus:
    """The status of a serialized ``HealthCheckResponse``."""
    decoded = HealthCheckResponse.FromString(response)
    value = cast(int, getattr(decoded, "status"))  # noqa: B009 - a dynamic message
    try:
        return ServingStatus(value)
    except ValueError:
        return ServingStatus.UNKNOWN


class FrameRecord:
    """What one ``Generate`` stream has received so far; shared by the sync and asyncio
    streams, which feed it each frame (:meth:`_observe`) and the response headers."""

    def __init__(self, sent_id: str) -> None:
        self._headers: dict[str, str | bytes] | None = None
        self._done = False
        #: The correlation id sent with the request.
        self.sent_correlation_id = sent_id
        #: The start frame, once received.
        self.start: generation_pb2.StartFrame | None = None
        #: The end frame, once received.
        self.end: generation_pb2.EndFrame | None = None
        #: The citation frames received so far.
        self.citations: list[generation_pb2.CitationFrame] = []
        #: The error the stream ended with, if any.
        self.error: GroundwireError | None = None
        self._answer: list[str] = []

    @property
    def answer(self) -> str:
        """The answer text received so far (the deltas, concatenated)."""
        return "".join(self._answer)

    @property
    def done(self) -> bool:
        """True once the stream has ended, successfully or not."""
        return self._done

    @property
    def correlation_id(self) -> str | None:
        """The correlation id the server echoed in its response headers.

        Known once the headers have arrived (with the first frame, or with an error); ``None``
        before. ``initial_metadata()`` waits for them.
        """
        if self._headers is None:
            return None
        return header_value(self._headers.items(), CORRELATION_ID_KEY)

    def cancel(self) -> None:
        """Cancel the call (each stream implements it over its own kind of call)."""
        raise NotImplementedError

    def _observe(self, frame: generation_pb2.GenerateResponse) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "start":
            self.start = frame.start
        elif kind == "delta":
            self._answer.append(frame.delta.text)
        elif kind == "citation":
            self.citations.append(frame.citation)
        elif kind == "end":
            self.end = frame.end


class TextView:
    """The frame state of a text-only stream, read from the frame stream beneath it."""

    stream: FrameRecord

    @property
    def start(self) -> generation_pb2.StartFrame | None:
        """The start frame (route, model, sources), once received."""
        return self.stream.start

    @property
    def end(self) -> generation_pb2.EndFrame | None:
        """The end frame, once received."""
        return self.stream.end

    @property
    def citations(self) -> list[generation_pb2.CitationFrame]:
        """The citation frames received so far."""
        return self.stream.citations

    @property
    def answer(self) -> str:
        """The answer text received so far."""
        return self.stream.answer

    @property
    def correlation_id(self) -> str | None:
        """The correlation id the server echoed."""
        return self.stream.correlation_id

    def cancel(self) -> None:
        """Cancel the call."""
        self.stream.cancel()
