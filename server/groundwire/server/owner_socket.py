"""The Edge shard owner's private listener: the same ``groundwire.v1`` RetrievalService,
DocumentService and CapabilitiesService, on a Unix socket only this deployment's processes
can open, for the workers that do not own the shard; and the internal ReindexService, for a
``groundwire reindex`` command run beside a serving server (served there only).

Its calls were authenticated and counted by the worker that took them from the caller, so
here the tenant is read from :data:`~groundwire.server.pipeline.remote_retrieval.
INTERNAL_TENANT_HEADER` (trusted because the socket is mode 0600 in a directory of ours),
no quota is charged and no call metric is counted again. Errors become our statuses exactly
as on the public port, so the front worker relays them with their details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeAlias, cast

import grpc
from grpc_status import rpc_status
from opentelemetry import propagate, trace
from opentelemetry.trace import Span

from groundwire.clients.correlation import (
    CORRELATION_HEADER,
    correlation_scope,
    current_correlation_id,
    new_correlation_id,
    sanitize_correlation_id,
)
from groundwire.clients.errors import GroundwireError, UnauthenticatedError
from groundwire.server.auth import CallHeaders
from groundwire.server.context import set_tenant
from groundwire.server.pipeline.remote_retrieval import (
    INDEX_IDENTITY_HEADER,
    INTERNAL_TENANT_HEADER,
)
from groundwire.server.status import build_status, internal_status

log = logging.getLogger(__name__)
error_log = logging.getLogger("groundwire.errors")

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]"
Behavior = Callable[..., Any]

# Read without a tenant (the front worker's start-up call, the reindex command's calls).
TENANT_FREE_PREFIXES = (
    "/groundwire.v1.CapabilitiesService/",
    "/grpc.health.v1.Health/",
    "/groundwire.internal.v1.",
)
# Where the owner says which socket it listens on (the command finds it there, also when the
# default path under the data directory is too long for a socket address).
ADVERTISEMENT_FILE = "groundwire-owner-socket"


class TrustedCallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Tenant from the internal header, correlation id and trace context continued, our
    errors as rich statuses; no quota, no call metrics, access lines at DEBUG only."""

    def __init__(self, identity: str, tracer: trace.Tracer | None = None) -> None:
        """``identity``: the store's (its Redis namespace), sent with every answer to
        GetCapabilities so the front workers key their own Redis entries as the owner does."""
        self.identity = identity
        self.tracer = tracer

    def _span(self, method: str, metadata: CallHeaders) -> AbstractContextManager[Span | None]:
        if self.tracer is None:
            return contextlib.nullcontext()
        return self.tracer.start_as_current_span(
            method.lstrip("/"),
            context=propagate.extract(metadata),
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "groundwire.hop": "owner"},
        )

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or (handler.request_streaming and handler.response_streaming):
            return handler  # nothing served here streams both ways
        metadata = CallHeaders(handler_call_details.invocation_metadata or ())
        correlation_id = (
            sanitize_correlation_id(metadata.get(CORRELATION_HEADER)) or new_correlation_id()
        )
        tenant = metadata.get(INTERNAL_TENANT_HEADER) or None
        needs_tenant = not method.startswith(TENANT_FREE_PREFIXES)
        interceptor = self

        def wrap(behavior: Behavior) -> Behavior:
            async def unary(request: Any, context: Context) -> Any:
                with correlation_scope(correlation_id), interceptor._span(method, metadata):
                    set_tenant(tenant)  # each call runs in its own task (own context)
                    try:
                        if needs_tenant and tenant is None:
                            raise UnauthenticatedError(
                                f"missing {INTERNAL_TENANT_HEADER} on the owner socket",
                                missing=True,
                            )
                        if not needs_tenant:
                            await context.send_initial_metadata(
                                ((INDEX_IDENTITY_HEADER, interceptor.identity),)
                            )
                        return await behavior(request, context)
                    except BaseException as exc:
                        await _abort(method, exc, context)
                        raise
                    finally:
                        log.debug("owner rpc", extra={"method": method, "tenant": tenant})

            return unary

        def wrap_stream(behavior: Behavior) -> Behavior:
            async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
                with correlation_scope(correlation_id), interceptor._span(method, metadata):
                    set_tenant(tenant)
                    try:
                        if needs_tenant and tenant is None:
                            raise UnauthenticatedError(
                                f"missing {INTERNAL_TENANT_HEADER} on the owner socket",
                                missing=True,
                            )
                        async for item in behavior(request, context):
                            yield item
                    except GeneratorExit:
                        raise
                    except BaseException as exc:
                        await _abort(method, exc, context)
                        raise
                    finally:
                        log.debug("owner rpc", extra={"method": method, "tenant": tenant})

            return stream

        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                wrap_stream(cast(Behavior, handler.unary_stream)),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                wrap(cast(Behavior, handler.stream_unary)),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            wrap(cast(Behavior, handler.unary_unary)),
            handler.request_deserializer,
            handler.response_serializer,
        )


async def _abort(method: str, exc: BaseException, context: Context) -> None:
    """Our error as the status the public port would send; cancellation and aborts pass."""
    if isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError)):
        return
    correlation_id = current_correlation_id() or ""
    if isinstance(exc, GroundwireError):
        status = build_status(exc, correlation_id)
        if exc.code is grpc.StatusCode.INTERNAL:
            error_log.error("internal error: %s", exc.message, exc_info=exc)
    else:
        status = internal_status(correlation_id)
        error_log.error("unhandled exception in %s", method, exc_info=exc)
    converted = rpc_status.to_status(status)
    await context.abort(converted.code, converted.details, converted.trailing_metadata)


def bind_private(server: grpc.aio.Server, path: Path) -> None:
    """Listen on the Unix socket ``path``, readable and writable by this user alone (the
    socket is created under a umask that leaves nobody else any access, then chmod-ed)."""
    previous = os.umask(0o177)
    try:
        if server.add_insecure_port(f"unix:{path}") == 0:
            raise OSError(f"cannot listen on {path}")
    finally:
        os.umask(previous)
    os.chmod(path, 0o600)


def advertise(root: Path, socket: Path) -> None:
    """Tell reindex commands under ``root`` (``<data_dir>/edge``) where the owner listens."""
    path = root / ADVERTISEMENT_FILE
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"{socket}\n", encoding="utf-8")
    os.replace(temporary, path)


def withdraw(root: Path, socket: Path) -> None:
    """Remove the advertisement, if it still names ``socket`` (a newer owner may have
    replaced it)."""
    path = root / ADVERTISEMENT_FILE
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8").strip() == str(socket):
            path.unlink()


def find(root: Path) -> Path | None:
    """The socket the owner of the store under ``root`` advertised (None: none did). It may
    be stale: a crashed owner leaves its advertisement behind."""
    try:
        named = (root / ADVERTISEMENT_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Path(named) if named else None
