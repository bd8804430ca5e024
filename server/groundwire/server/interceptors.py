"""The server's one interceptor: the in-flight bound, correlation id, server span, draining,
authentication, error mapping and the access log.

Each wraps the handler's behaviour function; unary and streaming responses need different
wrappers (a coroutine vs an async generator), built by :func:`_wrap`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, TypeAlias, cast

import grpc
from grpc_status import rpc_status
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, StatusCode

from groundwire.clients.correlation import (
    CORRELATION_HEADER,
    MESH_REQUEST_HEADER,
    correlation_scope,
    current_correlation_id,
    new_correlation_id,
    sanitize_correlation_id,
)
from groundwire.clients.errors import GroundwireError, ShuttingDownError
from groundwire.clients.telemetry import CORRELATION_ATTRIBUTE
from groundwire.server import metrics
from groundwire.server.auth import Authenticator, CallHeaders
from groundwire.server.context import set_tenant
from groundwire.server.overload import RETRY_PUSHBACK_HEADER, InflightBound, OverloadedError
from groundwire.server.quotas import Quotas
from groundwire.server.request_decoding import decoded, decoded_stream, tolerant
from groundwire.server.status import build_status, internal_status

log = logging.getLogger("groundwire.access")
error_log = logging.getLogger("groundwire.errors")

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Behavior = Callable[..., Any]
# grpc-stubs makes these generic for type checking only; strings keep runtime happy.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]"

# The codes that mark a server span as failed (OpenTelemetry's gRPC conventions).
SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Authenticated but not counted against a request quota (health and reflection have no tenant).
QUOTA_FREE_PREFIXES = ("/groundwire.v1.CapabilitiesService/",)
# The codes that say the caller sent what the contract does not accept (a malformed body,
# a bad field, missing or conflicting credentials): their access line is a WARNING, so a
# broken or hostile client shows up without a traceback; everything else is INFO (server
# faults get their own ERROR line with the traceback on groundwire.errors).
CALLER_FAULT_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED})


def _metadata(details: grpc.HandlerCallDetails) -> CallHeaders:
    return CallHeaders(details.invocation_metadata or ())


def _wrap(
    handler: Handler | None,
    make_unary: Callable[[Behavior, bool], Behavior],
    make_stream: Callable[[Behavior, bool], Behavior],
) -> Handler | None:
    """Rebuild ``handler`` with its behaviour wrapped (unary or streaming response) and its
    deserializer made tolerant (see :mod:`groundwire.server.request_decoding`); the
    factories are told whether the request is a stream."""
    if handler is None:
        return None
    streaming = handler.request_streaming
    deserializer = tolerant(handler.request_deserializer)
    if handler.response_streaming:
        behavior = handler.stream_stream if streaming else handler.unary_stream
        # A streaming handler written as a coroutine (it calls context.write) is wrapped like
        # a unary one; gRPC tells the two kinds apart by the wrapper's own kind.
        wrap = make_unary if inspect.iscoroutinefunction(behavior) else make_stream
        if streaming:
            return grpc.stream_stream_rpc_method_handler(
                wrap(cast(Behavior, handler.stream_stream), True),
                deserializer,
                handler.response_serializer,
            )
        return grpc.unary_stream_rpc_method_handler(
            wrap(cast(Behavior, handler.unary_stream), False),
            deserializer,
            handler.response_serializer,
        )
    if streaming:
        return grpc.stream_unary_rpc_method_handler(
            make_unary(cast(Behavior, handler.stream_unary), True),
            deserializer,
            handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        make_unary(cast(Behavior, handler.unary_unary), False),
        deserializer,
        handler.response_serializer,
    )


class _EchoFirst:
    """The call as its handler sees it while the initial metadata (the correlation id's
    echo) is on its way, sent concurrently with the handler's first steps rather than
    before them: that batch's round trip through gRPC's core (~0.15 ms) no longer delays the
    upstream request, so it is off the time to the first token. A message or an abort waits
    for the metadata first, and so must the wrapper before the call's status (see
    :meth:`sent`): whatever goes out first otherwise carries gRPC's own, empty, initial
    metadata, and the echo is lost. Everything else is the call's own context."""

    __slots__ = ("_context", "_echo")

    def __init__(self, context: Context, echo: tuple[tuple[str, str], ...]) -> None:
        self._context = context
        self._echo: asyncio.Future[None] | None = asyncio.ensure_future(
            context.send_initial_metadata(echo)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def sent(self) -> None:
        """Wait until the initial metadata has left (or failed with the call: the call's own
        outcome reports that)."""
        echo = self._echo
        if echo is not None:
            self._echo = None
            with contextlib.suppress(Exception):
                await echo

    async def write(self, message: Any) -> None:
        await self.sent()
        await self._context.write(message)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        await self.sent()
        await self._context.abort(code, details, trailing_metadata)


class ServerState:
    """Shared between the shutdown path and the interceptor: are we draining?"""

    def __init__(self) -> None:
        self.draining = False


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Everything groundwire does around a call, in one wrapper (each interceptor layer costs
    about 0.15 ms a call in grpc.aio), in this order: refuses the call at once when the
    process is at its in-flight bound (see :mod:`groundwire.server.overload`; before any
    decoding, span or authentication, so a refusal costs microseconds); picks the correlation id
    (``x-correlation-id``, else the mesh's ``x-request-id``, else a new one), makes it current
    and echoes it in initial and trailing metadata; opens the server span (continuing the
    caller's ``traceparent``) when a tracer is given; refuses calls while draining;
    authenticates (tenant into the context); counts the call against the tenant's request
    quota; turns our exceptions into rich statuses (INTERNAL never leaks internals); writes one
    JSON access log line.

    The server span is ours rather than OpenTelemetry's gRPC interceptor's: that one cannot
    wrap a streaming handler written as a coroutine (``Generate`` is one, so that a cancel
    reaches it), and a second interceptor layer would cost another 0.15 ms a call.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        state: ServerState,
        tracer: trace.Tracer | None = None,
        quotas: Quotas | None = None,
        bound: InflightBound | None = None,
    ) -> None:
        """Without a ``tracer`` no server span is opened (traces off: spans cost nothing);
        without ``quotas`` no request quota applies; without ``bound`` no call is refused for
        load (health and reflection never are)."""
        self.authenticator = authenticator
        self.state = state
        self.tracer = tracer
        self.quotas = quotas
        self.bound = bound

    def server_span(
        self, method: str, metadata: Mapping[str, str]
    ) -> AbstractContextManager[Span | None]:
        """The call's server span (current while the handler runs), or no span."""
        if self.tracer is None:
            return contextlib.nullcontext()
        service, _, name = method.strip("/").partition("/")
        return self.tracer.start_as_current_span(
            method.lstrip("/"),
            context=propagate.extract(metadata),
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            record_exception=False,
            set_status_on_exception=False,
        )

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method: str = handler_call_details.method
        metadata = _metadata(handler_call_details)
        correlation_id = (
            sanitize_correlation_id(metadata.get(CORRELATION_HEADER))
            or sanitize_correlation_id(metadata.get(MESH_REQUEST_HEADER))
            or new_correlation_id()
        )
        echo = ((CORRELATION_HEADER, correlation_id),)
        needs_auth = not method.startswith(UNAUTHENTICATED_PREFIXES)
        interceptor = self
        handler = await continuation(handler_call_details)
        # Health and reflection say nothing about load and must answer a prober under any.
        bound = self.bound if needs_auth else None
        # Response streams (Generate) and other calls have bounds of their own.
        stream = handler is not None and handler.response_streaming

        def make_unary(behavior: Behavior, request_streaming: bool) -> Behavior:
            async def unary(request: Any, context: Context) -> Any:
                if bound is not None and not bound.try_enter(stream):
                    _refuse(interceptor, method, context, correlation_id, stream)
                    return None
                try:
                    with (
                        correlation_scope(correlation_id),
                        interceptor.server_span(method, metadata) as span,
                    ):
                        echoed = _EchoFirst(context, echo)
                        context.set_trailing_metadata(echo)
                        call = _Call(interceptor, method, metadata, needs_auth, context)
                        try:
                            # Before anything else: bytes that are not a message are refused
                            # unread (a client stream's, where its bad message is reached).
                            request = (
                                decoded_stream(request) if request_streaming else decoded(request)
                            )
                            call.admit()
                            await call.charge_request()
                            response = await behavior(request, echoed)
                            await echoed.sent()
                            return response
                        except BaseException as exc:
                            await echoed.sent()
                            await call.fail(exc)
                            raise
                        finally:
                            call.finish(span)
                finally:
                    if bound is not None:
                        bound.leave(stream)

            return unary

        def make_stream(behavior: Behavior, request_streaming: bool) -> Behavior:
            # Inlined rather than wrapping another generator: a layer per frame would cost.
            async def streamed(request: Any, context: Context) -> AsyncIterator[Any]:
                if bound is not None and not bound.try_enter(stream):
                    _refuse(interceptor, method, context, correlation_id, stream)
                    return
                try:
                    with (
                        correlation_scope(correlation_id),
                        interceptor.server_span(method, metadata) as span,
                    ):
                        echoed = _EchoFirst(context, echo)
                        context.set_trailing_metadata(echo)
                        call = _Call(interceptor, method, metadata, needs_auth, context)
                        try:
                            # Before anything else: bytes that are not a message are refused
                            # unread (a client stream's, where its bad message is reached).
                            request = (
                                decoded_stream(request) if request_streaming else decoded(request)
                            )
                            call.admit()
                            await call.charge_request()
                            async for response in behavior(request, echoed):
                                await echoed.sent()
                                yield response
                            await echoed.sent()
                        except BaseException as exc:
                            await echoed.sent()
                            await call.fail(exc)
                            raise
                        finally:
                            call.finish(span)
                finally:
                    if bound is not None:
                        bound.leave(stream)

            return streamed

        return _wrap(handler, make_unary, make_stream)  # type: ignore[return-value]


def _refuse(
    interceptor: CallInterceptor,
    method: str,
    context: Context,
    correlation_id: str,
    stream: bool,
) -> None:
    """Answer a call the in-flight bound refused: RESOURCE_EXHAUSTED with ErrorInfo
    OVERLOADED and RetryInfo, counted and logged like any call. Nothing else is done for it
    (no span, no initial metadata, no authentication), and the status is set for the handler
    to return with rather than raised through ``context.abort``: under overload the refusals
    are most of the work, and the abort costs more (0.84 against 1.03 ms of CPU a refusal,
    measured side by side on a busy machine)."""
    assert interceptor.bound is not None
    started = time.perf_counter()
    error = interceptor.bound.refusal(stream)
    converted = rpc_status.to_status(build_status(error, correlation_id))
    context.set_code(converted.code)
    context.set_details(converted.details)
    context.set_trailing_metadata(
        (
            *converted.trailing_metadata,
            (CORRELATION_HEADER, correlation_id),
            (RETRY_PUSHBACK_HEADER, str(round(interceptor.bound.retry_after_s * 1000))),
        )
    )
    service = method.strip("/").partition("/")[0]
    code_name = converted.code.name
    metrics.OVERLOAD_REFUSALS.labels(service).inc()
    metrics.RPC_REQUESTS.labels(method, code_name).inc()
    latency = time.perf_counter() - started
    metrics.RPC_LATENCY.labels(method).observe(latency)
    log.info(
        "rpc",
        extra={
            "method": method,
            "code": code_name,
            "reason": error.reason,
            "latency_ms": round(latency * 1000, 3),
            "tenant": None,
            "peer": context.peer(),
            "correlation_id": correlation_id,
        },
    )


class _Call:
    """The bookkeeping of one call inside :class:`CallInterceptor`."""

    def __init__(
        self,
        interceptor: CallInterceptor,
        method: str,
        metadata: CallHeaders,
        needs_auth: bool,
        context: Context,
    ) -> None:
        self.interceptor = interceptor
        self.method = method
        self.metadata = metadata
        self.needs_auth = needs_auth
        self.context = context
        self.code = grpc.StatusCode.OK
        self.reason: str | None = None
        self.tenant: str | None = None
        self.started = time.perf_counter()
        # The gRPC service counted in metrics.INFLIGHT_CALLS once admitted; None until then.
        self.inflight: str | None = None
        # Tagged here, not in admit(): a malformed request never gets that far.
        trace.get_current_span().set_attribute(
            CORRELATION_ATTRIBUTE, current_correlation_id() or ""
        )

    def admit(self) -> None:
        """Refuse while draining, authenticate and make the tenant current."""
        if not self.needs_auth:
            return
        if self.interceptor.state.draining:
            raise ShuttingDownError("server is shutting down; retry on another replica")
        self.tenant = self.interceptor.authenticator.tenant_for(self.metadata)
        trace.get_current_span().set_attribute("groundwire.tenant", self.tenant)
        set_tenant(self.tenant)
        # Counted from here (health and reflection never are: they say nothing about load).
        self.inflight = self.method.strip("/").partition("/")[0]
        metrics.INFLIGHT_CALLS.labels(self.inflight).inc()

    async def charge_request(self) -> None:
        """Count the call against the tenant's requests per minute (QuotaExceededError when
        spent). GetCapabilities is not counted, so a caller can always read its limits."""
        quotas = self.interceptor.quotas
        if quotas is None or self.tenant is None or self.method.startswith(QUOTA_FREE_PREFIXES):
            return
        await quotas.admit_request(self.tenant)

    async def fail(self, exc: BaseException) -> None:
        """Map ``exc`` to a status and abort; AbortError and cancellation pass through."""
        correlation_id = current_correlation_id() or ""
        if isinstance(exc, asyncio.CancelledError):
            self.code = grpc.StatusCode.CANCELLED
            return
        if isinstance(exc, grpc.aio.AbortError):
            self.code = self.context.code() or grpc.StatusCode.UNKNOWN
            return
        pushback: tuple[tuple[str, str], ...] = ()
        if isinstance(exc, GroundwireError):
            status = build_status(exc, correlation_id)
            self.code = exc.code
            self.reason = exc.reason
            if isinstance(exc, OverloadedError) and exc.retry_after_s is not None:
                # gRPC's own retries (a client retry policy) read this, not RetryInfo.
                pushback = ((RETRY_PUSHBACK_HEADER, str(round(exc.retry_after_s * 1000))),)
            if exc.code is grpc.StatusCode.INTERNAL:
                error_log.error("internal error: %s", exc.message, exc_info=exc)
        else:
            status = internal_status(correlation_id)
            self.code = grpc.StatusCode.INTERNAL
            self.reason = "ERROR_REASON_INTERNAL"
            error_log.error("unhandled exception in %s", self.method, exc_info=exc)
        converted = rpc_status.to_status(status)
        trailing = (
            *converted.trailing_metadata,
            (CORRELATION_HEADER, correlation_id),
            *pushback,
        )
        await self.context.abort(converted.code, converted.details, trailing)

    def finish(self, span: Span | None) -> None:
        """Write the access log line and metrics, close the span's status; restore the tenant
        context."""
        latency = time.perf_counter() - self.started
        if self.inflight is not None:
            metrics.INFLIGHT_CALLS.labels(self.inflight).dec()
        code_name = self.code.name
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", self.code.value[0])
            if self.code in SERVER_ERROR_CODES:
                span.set_status(StatusCode.ERROR, code_name)
        metrics.RPC_REQUESTS.labels(self.method, code_name).inc()
        if self.reason == OverloadedError.reason:
            metrics.OVERLOAD_REFUSALS.labels(self.method.strip("/").partition("/")[0]).inc()
        metrics.RPC_LATENCY.labels(self.method).observe(latency)
        log.log(
            logging.WARNING if self.code in CALLER_FAULT_CODES else logging.INFO,
            "rpc",
            extra={
                "method": self.method,
                "code": code_name,
                "reason": self.reason,
                "latency_ms": round(latency * 1000, 3),
                "tenant": self.tenant,
                "peer": self.context.peer(),
            },
        )
        if self.tenant is not None:
            # Each call runs in its own task (own context); clearing is enough.
            set_tenant(None)
