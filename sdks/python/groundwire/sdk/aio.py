"""The asyncio groundwire client, over a :mod:`grpc.aio` channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

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
    async_batches,
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

__all__ = ["AsyncClient", "AsyncGenerateStream", "AsyncTextStream"]

_T = TypeVar("_T")
_GenerateCall = grpc.aio.UnaryStreamCall[
    generation_pb2.GenerateRequest, generation_pb2.GenerateResponse
]


def _task_is_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class AsyncGenerateStream(FrameRecord, AsyncIterator[generation_pb2.GenerateResponse]):
    """One ``Generate`` call: ``async for`` over it for the typed frames.

    Records :attr:`start`, :attr:`citations`, :attr:`answer` and :attr:`end` as they arrive. A
    failure raises a :class:`~groundwire.sdk.errors.GroundwireError` from the iteration; a
    failure after the first delta comes after the end frame, which stays in :attr:`end`.
    After :meth:`cancel` the iteration ends with :class:`~groundwire.sdk.errors.Cancelled`.

    Use it as an async context manager to cancel the call when the block exits early.
    """

    def __init__(self, call: _GenerateCall, sent_id: str) -> None:
        self._call = call
        self._frames = call.__aiter__()
        super().__init__(sent_id)
        self._cancel_requested = False

    async def initial_metadata(self) -> dict[str, str | bytes]:
        """The server's response headers, waiting for them if need be."""
        if self._headers is None:
            try:
                self._headers = metadata_dict(await self._call.initial_metadata())
            except grpc.RpcError as error:
                raise errors.from_rpc_error(
                    error, correlation_id=self.sent_correlation_id
                ) from error
        return self._headers

    def cancel(self) -> None:
        """Cancel the call; the iteration then ends with :class:`~groundwire.sdk.errors.Cancelled`.

        Safe to call after the stream has ended.
        """
        self._cancel_requested = True
        self._call.cancel()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> generation_pb2.GenerateResponse:
        if self.error is not None:
            raise self.error
        try:
            frame = await self._frames.__anext__()
        except StopAsyncIteration:
            self._done = True
            raise
        except grpc.RpcError as error:
            self._done = True
            await self._capture_headers()
            self.error = errors.from_rpc_error(error, correlation_id=self.sent_correlation_id)
            raise self.error from error
        except asyncio.CancelledError as cancelled:
            # grpc.aio reports a locally cancelled call as CancelledError; only our own
            # cancel() becomes a Cancelled error, a cancelled task keeps its CancelledError.
            if not self._cancel_requested or _task_is_cancelling():
                raise
            self._done = True
            self.error = errors.cancelled_locally(self.sent_correlation_id, cancelled)
            raise self.error from cancelled
        if self._headers is None:
            await self._capture_headers()
        self._observe(frame)
        return frame

    async def _capture_headers(self) -> None:
        try:
            self._headers = metadata_dict(await self._call.initial_metadata())
        except (grpc.RpcError, asyncio.CancelledError):
            if _task_is_cancelling():
                raise
            self._headers = self._headers or {}

    async def text(self) -> AsyncIterator[str]:
        """Iterate only the delta texts; the other frames are still recorded."""
        async for frame in self:
            if frame.WhichOneof("frame") == "delta":
                yield frame.delta.text

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._done:
            self.cancel()
            self._done = True


class AsyncTextStream(TextView, AsyncIterator[str]):
    """The delta texts of one ``Generate`` call; the other frames stay on :attr:`stream`.

    After the iteration, :attr:`end` holds the end frame (usage, cost, finish reason).
    """

    stream: AsyncGenerateStream

    def __init__(self, stream: AsyncGenerateStream) -> None:
        #: The underlying frame stream.
        self.stream = stream
        self._texts = stream.text()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        return await self._texts.__anext__()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stream.__aexit__(exc_type, exc, traceback)


class AsyncClient:
    """An asyncio groundwire client; the same surface as :class:`~groundwire.sdk.Client`.

    Create it inside a running event loop (``grpc.aio`` channels belong to one loop). Every
    call carries the API key (``authorization: Bearer``), a correlation id (the caller's, or a
    fresh ``uuid4().hex``) and a deadline; every failure raises a
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
            grpc.aio.secure_channel(address, credentials, options=merged)
            if credentials is not None
            else grpc.aio.insecure_channel(address, options=merged)
        )
        self._setup(channel, api_key, timeout)

    @classmethod
    def from_channel(
        cls, channel: grpc.aio.Channel, *, api_key: str | None = None, timeout: float | None = None
    ) -> AsyncClient:
        """A client over an existing ``grpc.aio`` channel (closed by :meth:`close`)."""
        client = cls.__new__(cls)
        client._setup(channel, api_key, timeout)
        return client

    def _setup(self, channel: grpc.aio.Channel, api_key: str | None, timeout: float | None) -> None:
        self._channel = channel
        self._api_key = api_key
        self._timeout = timeout
        self._capabilities = capabilities_pb2_grpc.CapabilitiesServiceStub(channel)
        self._documents = documents_pb2_grpc.DocumentServiceStub(channel)
        self._retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        self._generation = generation_pb2_grpc.GenerationServiceStub(channel)
        self._health = channel.unary_unary(HEALTH_CHECK_METHOD, None, None)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying ``grpc.aio`` channel."""
        return self._channel

    async def close(self, grace: float | None = None) -> None:
        """Close the channel; calls still in flight after ``grace`` seconds are cancelled."""
        await self._channel.close(grace)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _deadline(self, timeout: float | None, default: float) -> float:
        if timeout is not None:
            return timeout
        return self._timeout if self._timeout is not None else default

    async def _unary(
        self,
        call: Callable[..., Awaitable[_T]],
        request: Any,
        timeout: float | None,  # noqa: ASYNC109 - a gRPC deadline, sent to the server
        correlation_id: str | None,
        default_timeout: float = DEFAULT_UNARY_TIMEOUT_S,
    ) -> _T:
        sent = new_correlation_id(correlation_id)
        try:
            return await call(
                request,
                timeout=self._deadline(timeout, default_timeout),
                metadata=call_metadata(self._api_key, sent),
            )
        except grpc.RpcError as error:
            raise errors.from_rpc_error(error, correlation_id=sent) from error

    async def health(
        self,
        service: str = "",
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline, sent to the server
        correlation_id: str | None = None,
    ) -> ServingStatus:
        """The server's status from the standard ``grpc.health.v1.Health/Check``."""
        reply: bytes = await self._unary(
            self._health, health_request(service), timeout, correlation_id
        )
        return health_status(reply)

    async def capabilities(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline, sent to the server
        correlation_id: str | None = None,
    ) -> capabilities_pb2.GetCapabilitiesResponse:
        """The models, tiers, limits and features of the server."""
        return await self._unary(
            self._capabilities.GetCapabilities,
            capabilities_pb2.GetCapabilitiesRequest(),
            timeout,
            correlation_id,
        )

    async def ingest(
        self,
        documents: Iterable[documents_pb2.Document] | AsyncIterable[documents_pb2.Document],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline, sent to the server
        correlation_id: str | None = None,
    ) -> documents_pb2.IngestDocumentsResponse:
        """Stream ``documents`` (sync or async iterable) to the server; return its summary.

        Bad documents do not fail the call; they are listed in the summary's ``failures``.
        """
        requests: Any
        if isinstance(documents, AsyncIterable):
            source = documents

            async def from_async() -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
                async for document in source:
                    yield documents_pb2.IngestDocumentsRequest(document=document)

            requests = from_async()
        else:
            requests = (documents_pb2.IngestDocumentsRequest(document=d) for d in documents)
        return await self._unary(
            self._documents.IngestDocuments,
            requests,
            timeout,
            correlation_id,
            DEFAULT_STREAM_TIMEOUT_S,
        )

    def ingest_batches(
        self,
        documents: Iterable[documents_pb2.Document] | AsyncIterable[documents_pb2.Document],
        *,
        batch_size: int = DEFAULT_INGEST_BATCH_SIZE,
        timeout: float | None = None,
        correlation_id: str | None = None,
    ) -> AsyncIterator[IngestProgress]:
        """Ingest ``documents`` in calls of ``batch_size``; ``async for`` the progress after each.

        Not a coroutine: it returns the async iterator at once (and refuses a ``batch_size``
        below one at once). Each batch is one ``IngestDocuments`` call with its own deadline,
        all under one correlation id; see :meth:`Client.ingest_batches
        <groundwire.sdk.Client.ingest_batches>`. When the iterating task is cancelled, the last
        progress it received still counts what the server wrote.
        """
        check_batch_size(batch_size)
        sent = new_correlation_id(correlation_id)

        async def calls() -> AsyncIterator[IngestProgress]:
            progress: IngestProgress | None = None
            async for batch in async_batches(documents, batch_size):
                summary = await self.ingest(batch, timeout=timeout, correlation_id=sent)
                progress = advance(progress, summary, len(batch))
                yield progress

        return calls()

    async def delete_documents(
        self,
        doc_ids: Iterable[str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline, sent to the server
        correlation_id: str | None = None,
    ) -> documents_pb2.DeleteDocumentsResponse:
        """Remove documents and all their chunks by doc id."""
        return await self._unary(
            self._documents.DeleteDocuments,
            documents_pb2.DeleteDocumentsRequest(doc_ids=list(doc_ids)),
            timeout,
            correlation_id,
        )

    async def retrieve(
        self,
        query: retrieval_pb2.RetrieveRequest | str,
        *,
        top_k: int | None = None,
        mode: RetrievalModeLike | None = None,
        filter: retrieval_pb2.MetadataFilter | None = None,
        min_score: float | None = None,
        bypass_cache: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline, sent to the server
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
        return await self._unary(self._retrieval.Retrieve, request, timeout, correlation_id)

    def generate(
        self,
        request: generation_pb2.GenerateRequest | str,
        *,
        timeout: float | None = None,
        correlation_id: str | None = None,
    ) -> AsyncGenerateStream:
        """Start one answer; ``async for`` over the returned stream for its typed frames.

        Not a coroutine: the call starts at once. A string is a question with the server's
        defaults. Errors surface while iterating.
        """
        sent = new_correlation_id(correlation_id)
        call = self._generation.Generate(
            generate_request(request),
            timeout=self._deadline(timeout, DEFAULT_STREAM_TIMEOUT_S),
            metadata=call_metadata(self._api_key, sent),
        )
        return AsyncGenerateStream(call, sent)

    def generate_text(
        self,
        request: generation_pb2.GenerateRequest | str,
        *,
        timeout: float | None = None,
        correlation_id: str | None = None,
    ) -> AsyncTextStream:
        """Start one answer and iterate only its delta texts; ``.end`` holds the end frame."""
        return AsyncTextStream(
            self.generate(request, timeout=timeout, correlation_id=correlation_id)
        )
