"""A :class:`~groundwire.server.pipeline.retriever.Retriever` in another process, reached
through the ``groundwire.v1`` contract.

Two hops use it. A worker that does not own the Edge shard reaches the owner over a private
Unix socket: the tenant this worker authenticated travels in :data:`INTERNAL_TENANT_HEADER`,
trusted there because only this deployment's processes can open the socket (mode 0600), and
not charged again against quotas. A generation-only deployment reaches a retrieval deployment
over the network: the caller's own credentials travel instead and are checked again there.
Either way the correlation id, the trace context and the caller's remaining deadline go
along, and the far side's errors come back as our errors with their details (a bad filter is
still INVALID_ARGUMENT naming the field).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Sequence
from typing import Any, TypeAlias

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import propagate

from groundwire.clients.correlation import CORRELATION_HEADER, current_correlation_id
from groundwire.clients.errors import (
    DeadlineExceededError,
    FieldViolation,
    GroundwireError,
    InvalidArgumentError,
    QuotaExceededError,
    UpstreamUnavailableError,
)
from groundwire.clients.models import ChunkRecord, ScoredChunk, SearchMode
from groundwire.server.pipeline.retrieval import RetrievalQuery, RetrievalResult
from groundwire.server.proto_enums import MODE_TO_DOMAIN, MODE_TO_PROTO
from groundwire.v1 import (
    capabilities_pb2,
    capabilities_pb2_grpc,
    common_pb2,
    documents_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)

log = logging.getLogger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Metadata: TypeAlias = "tuple[tuple[str, str], ...]"

# The tenant a front worker authenticated, honoured only by the owner's Unix-socket listener
# (the public listener's Authenticator never reads it).
INTERNAL_TENANT_HEADER = "x-groundwire-internal-tenant"
# The owner's store identity, sent with its GetCapabilities answers on the socket.
INDEX_IDENTITY_HEADER = "x-groundwire-index-identity"
TRACE_HEADERS = ("traceparent", "tracestate")
# One channel option set for both hops: messages as large as the public contract allows.

# The gRPC call being served in this task, so that a hop made deep in the generation
# pipeline can forward its credentials, trace context and deadline. Set by the servicers;
# each call runs in its own task, so nothing needs resetting.
_serving: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "groundwire_serving_call", default=None
)


def remember_call(context: Context) -> None:
    """Make ``context`` the call a remote hop in this task forwards from."""
    _serving.set(context)


class RemoteRetrievalError(GroundwireError):
    """An error the far side returned that has no class of our own: its code, reason and
    message pass through as they came."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.code = code
        self.reason = reason


def remote_error(error: grpc.aio.AioRpcError) -> GroundwireError:
    """The far side's status as our error, details intact (ErrorInfo reason, BadRequest
    violations, QuotaFailure, RetryInfo); a failure of the hop itself (no status of ours)
    becomes UNAVAILABLE or DEADLINE_EXCEEDED in our own words, its text to the log."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reason: str | None = None
    violations: list[FieldViolation] = []
    quota: error_details_pb2.QuotaFailure.Violation | None = None
    retry_after_s: float | None = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            quota = failure.violations[0] if failure.violations else None
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after_s = retry.retry_delay.ToMilliseconds() / 1000
    code = error.code()
    if reason is None:
        log.warning(
            "retrieval hop failed", extra={"code": code.name, "vendor_detail": error.details()}
        )
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceededError("the time limit passed during retrieval")
        return UpstreamUnavailableError(
            "retrieval is unavailable: the process serving it could not be reached",
            retry_after_s=retry_after_s,
        )
    if violations and code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError(violations, reason=reason)
    if quota is not None and retry_after_s is not None:
        return QuotaExceededError(quota.subject, quota.description, retry_after_s=retry_after_s)
    return RemoteRetrievalError(
        code, reason, error.details() or code.name, retry_after_s=retry_after_s
    )


class Hop:
    """How calls reach the other process: the channel, and what metadata they carry."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        trusted: bool,
        credential_headers: Sequence[str] = (),
    ) -> None:
        """``trusted``: the owner's private socket (the tenant travels in
        :data:`INTERNAL_TENANT_HEADER`); otherwise ``credential_headers`` (lower-case) are
        copied from the caller's metadata for the far side to authenticate again."""
        self.channel = channel
        self.trusted = trusted
        self._credential_headers = frozenset(credential_headers)
        self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        self.documents = documents_pb2_grpc.DocumentServiceStub(channel)
        self.capabilities = capabilities_pb2_grpc.CapabilitiesServiceStub(channel)

    def metadata(self, tenant: str, context: Context | None) -> Metadata:
        """The metadata of a hop made for ``tenant`` while serving ``context``."""
        incoming: Sequence[Any] = (
            tuple(context.invocation_metadata() or ()) if context is not None else ()
        )
        out: list[tuple[str, str]] = []
        if self.trusted:
            out.append((INTERNAL_TENANT_HEADER, tenant))
        else:
            out.extend(
                (key, value)
                for key, value in incoming
                if key in self._credential_headers and isinstance(value, str)
            )
        correlation_id = current_correlation_id()
        if correlation_id:
            out.append((CORRELATION_HEADER, correlation_id))
        trace: dict[str, str] = {}
        propagate.inject(trace)  # the server span of this call, when tracing is on
        if not trace:
            # Tracing off here: pass the caller's own context on untouched.
            trace = {k: v for k, v in incoming if k in TRACE_HEADERS and isinstance(v, str)}
        out.extend(trace.items())
        return tuple(out)

    @staticmethod
    def timeout(context: Context | None) -> float | None:
        """The caller's remaining deadline, in seconds (None: it set none)."""
        return context.time_remaining() if context is not None else None

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close(None)


class RemoteRetriever:
    """Retrieval answered by another process through ``RetrievalService.Retrieve``.

    Its modes and embedder id are what the far side's GetCapabilities reported at start
    (:meth:`connect`), so requests are validated here exactly as there.
    """

    def __init__(
        self,
        hop: Hop,
        *,
        supported_modes: tuple[SearchMode, ...],
        embedder_id: str,
        index_identity: str | None = None,
    ) -> None:
        """``index_identity``: the far side's store identity when it told us (the owner's
        socket does; a retrieval deployment's public port does not)."""
        self.hop = hop
        self.index_identity = index_identity
        self._modes = supported_modes
        self._embedder_id = embedder_id

    @classmethod
    async def connect(
        cls,
        hop: Hop,
        *,
        wait_s: float,
        startup_metadata: Metadata = (),
        what: str,
    ) -> RemoteRetriever:
        """Wait (at most ``wait_s``) until the far side answers GetCapabilities, then build
        the retriever from its answer. Raises UpstreamUnavailableError naming ``what`` when it
        never does, or at once when it refuses the call (a wrong key is not worth waiting)."""
        deadline = time.monotonic() + wait_s
        last = "no answer"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UpstreamUnavailableError(
                    f"{what} did not answer within {wait_s:g} s ({last})"
                )
            try:
                call = hop.capabilities.GetCapabilities(
                    capabilities_pb2.GetCapabilitiesRequest(),
                    metadata=startup_metadata,
                    timeout=min(left, 5.0),
                    wait_for_ready=True,
                )
                reply = await call
                initial = await call.initial_metadata()
                break
            except grpc.aio.AioRpcError as error:
                if error.code() in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    raise UpstreamUnavailableError(
                        f"{what} refused the start-up call ({error.code().name}): "
                        "set GROUNDWIRE_RETRIEVAL_API_KEY to a key it accepts"
                    ) from None
                last = error.code().name
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        modes = tuple(MODE_TO_DOMAIN[m] for m in reply.retrieval_modes if m in MODE_TO_DOMAIN)
        if not modes:
            raise UpstreamUnavailableError(f"{what} reports no retrieval mode")
        log.info(
            "remote retrieval",
            extra={
                "target": what,
                "modes": [m.value for m in modes],
                "embedder_id": reply.embedder_id,
            },
        )
        identity = dict(initial or ()).get(INDEX_IDENTITY_HEADER)
        return cls(
            hop,
            supported_modes=modes,
            embedder_id=reply.embedder_id,
            index_identity=identity if isinstance(identity, str) else None,
        )

    @property
    def default_mode(self) -> SearchMode:
        """Hybrid when the far side has a dense embedder, else sparse (as it decides)."""
        return SearchMode.HYBRID if SearchMode.HYBRID in self._modes else SearchMode.SPARSE

    @property
    def supported_modes(self) -> tuple[SearchMode, ...]:
        """The modes the far side serves."""
        return self._modes

    @property
    def embedder_id(self) -> str:
        """The far side's dense embedder id."""
        return self._embedder_id

    async def retrieve(self, tenant: str, query: RetrievalQuery) -> RetrievalResult:
        """One Retrieve on the far side, for ``tenant``, within the caller's deadline."""
        context = _serving.get()
        started = time.perf_counter()
        try:
            response = await self.hop.retrieval.Retrieve(
                retrieve_request(query),
                metadata=self.hop.metadata(tenant, context),
                timeout=self.hop.timeout(context),
            )
        except grpc.aio.AioRpcError as error:
            raise remote_error(error) from None
        timings = response.timings
        return RetrievalResult(
            chunks=[scored_chunk(chunk) for chunk in response.chunks],
            cache_hit=response.cache_hit,
            mode=MODE_TO_DOMAIN.get(response.mode, query.mode),
            embedder_id=response.embedder_id,
            cache_s=timings.cache.ToNanoseconds() / 1e9,
            embed_s=timings.embed.ToNanoseconds() / 1e9,
            search_s=timings.search.ToNanoseconds() / 1e9,
            total_s=time.perf_counter() - started,
        )

    async def drain(self) -> None:
        """Nothing runs in the background here: each hop is awaited by its caller."""

    async def close(self) -> None:
        """Close the channel."""
        await self.hop.close()


def retrieve_request(query: RetrievalQuery) -> retrieval_pb2.RetrieveRequest:
    """A validated query back in the contract's form."""
    request = retrieval_pb2.RetrieveRequest(
        query=query.text,
        top_k=query.top_k,
        mode=MODE_TO_PROTO[query.mode],
        bypass_cache=not query.use_cache,
    )
    for match in query.filters:
        condition = request.filter.must.add(field=match.field)
        strings = all(isinstance(v, str) for v in match.values)
        if len(match.values) == 1:
            if strings:
                condition.string_equals = str(match.values[0])
            else:
                condition.int_equals = int(match.values[0])
        elif strings:
            condition.string_any.values.extend(str(v) for v in match.values)
        else:
            condition.int_any.values.extend(int(v) for v in match.values)
    if query.min_score is not None:
        request.min_score = query.min_score
    return request


def scored_chunk(chunk: common_pb2.Chunk) -> ScoredChunk:
    """A Retrieve hit as the pipeline's chunk."""
    metadata: dict[str, str | int] = {
        name: value.string_value if value.WhichOneof("kind") == "string_value" else value.int_value
        for name, value in chunk.metadata.items()
    }
    return ScoredChunk(
        ChunkRecord(
            chunk_id=chunk.chunk_id,
            doc_id=chunk.doc_id,
            chunk_index=chunk.chunk_index,
            text=chunk.text,
            title=chunk.title,
            source_uri=chunk.source_uri,
            metadata=metadata,
        ),
        chunk.score,
    )
