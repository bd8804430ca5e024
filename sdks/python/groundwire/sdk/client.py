"""The synchronous groundwire client, over a blocking :class:`grpc.Channel`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from groundwire.sdk import errors
from groundwire.sdk._common import (
    DEFAULT_STREAM_TIMEOUT_S,
    DEFAULT_UNARY_TIMEOUT_S,
    HEALTH_CHECK_METHOD,
    ChannelOptions,
    FrameRecord,
    RetrievalModeLike,
    ServingStatus,
    TextView,
    call_metadata,
    channel_options,
    generate_request,
    health_request,
    health_status,
    metadata_dict,
    new_correlation_id,
    retrieve_request,
)
from groundwire.sdk._ingest import (
    DEFAULT_INGEST_BATCH_SIZE,
    IngestProgress,
    advance,
    batches,
    check_batch_size,
)
from groundwire.v1 import (
    capabilities_pb2,
    capabilities_pb2_grpc,
    documents_pb2,
    documents_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)

__all__ = ["Client", "GenerateStream", "TextStream"]

_T = TypeVar("_T")


class GenerateStream(FrameRecord, Iterator[generation_pb2.GenerateResponse]):
    """One ``Generate`` call: iterate it for the typed frames, in the order the server sends.

    The stream also records what it has seen: :attr:`start`, :attr:`citations`,
    :attr:`answer` (the deltas so far) and :attr:`end`. A failure raises a
    :class:`~groundwire.sdk.errors.GroundwireError` from the iteration; a failure after the
    first delta comes after the end frame, which stays available in :attr:`end`.

    Use it as a context manager to cancel the call when the block exits early.
    """

    def __init__(self, call: grpc.CallIterator[generation_pb2.GenerateResponse], sent_id: str):
        self._call = call
        self._frames = iter(call)
        self._lock = threading.Lock()
        super().__init__(sent_id)

    def initial_metadata(self) -> dict[str, str | bytes]:
        """The server's response headers, waiting for them if need be."""
        if self._headers is None:
            try:
                self._headers = metadata_dict(self._call.initial_metadata())
            except grpc.RpcError as error:
                raise errors.from_rpc_error(
                    error, correlation_id=self.sent_correlation_id
                ) from error
        return self._headers

    def cancel(self) -> None:
        """Cancel the call; the iteration then ends with :class:`~groundwire.sdk.errors.Cancelled`.

        Safe to call from any thread, and after the stream has ended.
        """
        self._call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> generation_pb2.GenerateResponse:
        with self._lock:
            if self.error is not None:
                raise self.error
            try:
                frame = next(self._frames)
            except StopIteration:
                self._done = True
                raise
            except grpc.RpcError as error:
                self._done = True
                self._capture_headers()
                self.error = errors.from_rpc_error(error, correlation_id=self.sent_correlation_id)
                raise self.error from error
            if self._headers is None:
                self._capture_headers()
            self._observe(frame)
            return frame

    def _capture_headers(self) -> None:
        try:
            self._headers = metadata_dict(self._call.initial_metadata())
        except Exception:  # no headers were received
            self._headers = self._headers or {}

    def text(self) -> Iterator[str]:
        """Iterate only the delta texts; the other frames are still recorded."""
        for frame in self:
            if frame.WhichOneof("frame") == "delta":
                yield frame.delta.text

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._done:
            self.cancel()
            self._done = True


class TextStream(TextView, Iterator[str]):
    """The delta texts of one ``Generate`` call; the other frames stay on :attr:`stream`.

    After the iteration, :attr:`end` holds the end frame (usage, cost, finish reason).
    """

    stream: GenerateStream

    def __init__(self, stream: GenerateStream) -> None:
        #: The underlying frame stream.
        self.stream = stream
        self._texts = stream.text()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> str:
        return next(self._texts)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stream.__exit__(exc_type, exc, traceback)


class Client:
    """A synchronous groundwire client.

    Every call carries the API key (``authorization: Bearer``), a correlation id (the
    caller's, or a fresh ``uuid4().hex``) and a deadline; every failure raises a
    :class:`~groundwire.sdk.errors.GroundwireError`.

    Args:
        address: ``host:port`` of the server.
        api_key: The API key, sent as ``authorization: Bearer <key>``.
        timeout: The default deadline of every call, in seconds; ``None`` means 30 s for
            unary calls and 300 s for the streams (generate, ingest). Each method's own
            ``timeout`` overrides it.
        secure: Use TLS with the system's root certificates.
        credentials: Explicit channel credentials (implies TLS).
        options: Extra gRPC channel options, overriding the SDK's defaults.
    """

    def __init__(
        self,
        address: str,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        secure: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        options: ChannelOptions | None = None,
    ) -> None:
        merged = channel_options(options)
        if credentials is None and secure:
            credentials = grpc.ssl_channel_credentials()
        channel = (
            grpc.secure_channel(address, credentials, options=merged)
            if credentials is not None
            else grpc.insecure_channel(address, options=merged)
        )
        self._setup(channel, api_key, timeout)

    @classmethod
    def from_channel(
        cls, channel: grpc.Channel, *, api_key: str | None = None, timeout: float | None = None
    ) -> Client:
        """A client over an existing channel (closed by :meth:`close`)."""
        client = cls.__new__(cls)
        client._setup(channel, api_key, timeout)
        return client

    def _setup(self, channel: grpc.Channel, api_key: str | None, timeout: float | None) -> None:
        self._channel = channel
        self._api_key = api_key
        self._timeout = timeout
        self._capabilities = capabilities_pb2_grpc.CapabilitiesServiceStub(channel)
        self._documents = documents_pb2_grpc.DocumentServiceStub(channel)
        self._retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        self._generation = generation_pb2_grpc.GenerationServiceStub(channel)
        self._health = channel.unary_unary(HEALTH_CHECK_METHOD, None, None)

    @property
    def channel(self) -> grpc.Channel:
        """The underlying gRPC channel."""
        return self._channel

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _deadline(self, timeout: float | None, default: float) -> float:
        if timeout is not None:
            return timeout
        return self._timeout if self._timeout is not None else default

    def _unary(
        self,
        call: Callable[..., _T],
        request: Any,
        timeout: float | None,
        correlation_id: str | None,
        default_timeout: float = DEFAULT_UNARY_TIMEOUT_S,
    ) -> _T:
        sent = new_correlation_id(correlation_id)
        try:
            return call(
                request,
                timeout=self._deadline(timeout, default_timeout),
                metadata=call_metadata(self._api_key, sent),
            )
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error, correlation_id=sent) from error

    def health(
        self, service: str = "", *, timeout: float | None = None, correlation_id: str | None = None
    ) -> ServingStatus:
        """The server's status from the standard ``grpc.health.v1.Health/Check``."""
        reply: bytes = self._unary(self._health, health_request(service), timeout, correlation_id)
        return health_status(reply)

    def capabilities(
        self, *, timeout: float | None = None, correlation_id: str | None = None
    ) -> capabilities_pb2.GetCapabilitiesResponse:
        """The models, tiers, limits and features of the server."""
        return self._unary(
            self._capabilities.GetCapabilities,
            capabilities_pb2.GetCapabilitiesRequest(),
            timeout,
            correlation_id,
        )

    def ingest(
        self,
        documents: Iterable[documents_pb2.Document],
        *,
        timeout: float | None = None,
        correlation_id: str | None = None,
    ) -> documents_pb2.IngestDocumentsResponse:
        """Stream ``documents`` to the server and return its summary.

        Bad documents do not fail the call; they are listed in the summary's ``failures``.
        The documents are read lazily, so a generator over a large corpus is fine.
        """
        requests = (documents_pb2.IngestDocumentsRequest(document=d) for d in documents)
        return self._unary(
            self._documents.IngestDocuments,
            requests,
            timeout,
            correlation_id,
            DEFAULT_STREAM_TIMEOUT_S,
        )

    def ingest_batches(
        self,
        documents: Iterable[documents_pb2.Document],
        *,
        batch_size: int = DEFAULT_INGEST_BATCH_SIZE,
        timeout: float | None = None,
        correlation_id: str | None = None,
    ) -> Iterator[IngestProgress]:
        """Ingest ``documents`` in calls of ``batch_size``; yield the progress after each.

        Each batch is one ``IngestDocuments`` call with its own deadline (``timeout``, as for
        :meth:`ingest`), and all carry one correlation id (yours or a fresh one). What the last
        yielded :class:`~groundwire.sdk.IngestProgress` counts is written, so a caller that
        stops early, or whose later batch fails with a
        :class:`~groundwire.sdk.errors.GroundwireError`, knows what got in. Documents are read
        lazily, one batch at a time.
        """
        check_batch_size(batch_size)
        sent = new_correlation_id(correlation_id)

        def calls() -> Iterator[IngestProgress]:
            progress: IngestProgress | None = None
            for batch in batches(documents, batch_size):
                summary = self.ingest(batch, timeout=timeout, correlation_id=sent)
                progress = advance(progress, summary, len(batch))
                yield progress

        return calls()

    def delete_documents(
        self,
        doc_ids: Iterable[str],
        *,
        timeout: float | None = None,
        correlation_id: str | None = None,
    ) -> documents_pb2.DeleteDocumentsResponse:
        """Remove documents and all their chunks by doc id."""
        return self._unary(
            self._documents.DeleteDocuments,
            documents_pb2.DeleteDocumentsRequest(doc_ids=list(doc_ids)),
            timeout,
            correlation_id,
        )

    def retrieve(
        self,
        query: retrieval_pb2.RetrieveRequest | str,
        *,
        top_k: int | None = None,
        mode: RetrievalModeLike | None = None,
        filter: retrieval_pb2.MetadataFilter | None = None,
        min_score: float | None = None,
        bypass_cache: bool = False,
        timeout: float | None = None,
        correlation_id: str | None = None,
    ) -> retrieval_pb2.RetrieveResponse:
        """The chunks that best match a query, best first.

        Pass a :class:`RetrieveRequest`, or a query string and the options as keywords
        (``mode`` takes the enum value or a name such as ``"hybrid"``).
        """
        request = retrieve_request(
            query,
            top_k=top_k,
            mode=mode,
            filter=filter,
            min_score=min_score,
            bypass_cache=bypass_cache,
        )
        return self._unary(self._retrieval.Retrieve, request, timeout, correlation_id)

    def generate(
        self,
        request: generation_pb2.GenerateRequest | str,
        *,
        timeout: float | None = None,
        correlation_id: str | None = None,
    ) -> GenerateStream:
        """Start one answer; iterate the returned stream for its typed frames.

        A string is a question with the server's defaults (retrieval grounding, standard tier).
        Errors surface while iterating.
        """
        sent = new_correlation_id(correlation_id)
        call = self._generation.Generate(
            generate_request(request),
            timeout=self._deadline(timeout, DEFAULT_STREAM_TIMEOUT_S),
            metadata=call_metadata(self._api_key, sent),
        )
        return GenerateStream(call, sent)

    def generate_text(
        self,
        request: generation_pb2.GenerateRequest | str,
        *,
        timeout: float | None = None,
        correlation_id: str | None = None,
    ) -> TextStream:
        """Start one answer and iterate only its delta texts; ``.end`` holds the end frame."""
        return TextStream(self.generate(request, timeout=timeout, correlation_id=correlation_id))
