"""The composition root: settings → client layer → pipelines → servicers → gRPC server.

Nothing else builds clients; everything is handed down by constructor.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from groundwire.server.auth import Authenticator
from groundwire.server.components import Components, build_components
from groundwire.server.interceptors import CallInterceptor, ServerState
from groundwire.server.overload import InflightBound, LagJudge, LoopLagMonitor
from groundwire.server.pipeline.retriever import Retriever
from groundwire.server.reflection_v1 import enable_reflection
from groundwire.server.roles import (
    OwnerListener,
    RemoteComponents,
    build_remote_components,
    connect_owner,
    connect_retrieval_deployment,
    reindex_listener,
)
from groundwire.server.servicers.capabilities import CapabilitiesServicer
from groundwire.server.servicers.documents import DocumentServicer
from groundwire.server.servicers.forwarding import (
    ForwardingDocumentServicer,
    ForwardingRetrievalServicer,
)
from groundwire.server.servicers.generation import GenerationServicer
from groundwire.server.servicers.retrieval import RetrievalServicer
from groundwire.server.settings import (
    Settings,
)
from groundwire.server.telemetry import configure_tracing
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

if TYPE_CHECKING:
    from groundwire.server.workers import WorkerPlan

log = logging.getLogger(__name__)

RETRIEVAL_SERVICE = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name
GENERATION_SERVICE = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name
DOCUMENT_SERVICE = documents_pb2.DESCRIPTOR.services_by_name["DocumentService"].full_name
CAPABILITIES_SERVICE = capabilities_pb2.DESCRIPTOR.services_by_name["CapabilitiesService"].full_name
SERVICE_NAMES = (RETRIEVAL_SERVICE, GENERATION_SERVICE, DOCUMENT_SERVICE, CAPABILITIES_SERVICE)


def connection_age_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC server options that end each connection past its age (see
    ``Settings.max_connection_age_s``); none when the age is 0."""
    if not settings.max_connection_age_s:
        return []
    return [
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
    ]


# The composition a server serves: its own store (Components) or another process's
# (RemoteComponents: a worker that does not own the Edge shard, a generation-only process).
Composition = Components | RemoteComponents


class GroundwireServer:
    """The gRPC server with health, reflection and graceful shutdown, serving the services
    ``GROUNDWIRE_SERVICES`` names."""

    def __init__(
        self, settings: Settings, components: Composition, *, reuse_port: bool = False
    ) -> None:
        """``reuse_port``: share the port with the other worker processes (SO_REUSEPORT; the
        kernel spreads connections over them). Off for a lone process, so that a second
        server started by mistake on the same port fails to bind instead of sharing it."""
        self.settings = settings
        self.composition = components
        self.state = ServerState()
        self.health = health_aio.HealthServicer()
        provider = configure_tracing(settings)
        # Without a tracer provider no span is recorded: opening spans would only cost time.
        tracer = provider.get_tracer("groundwire.server") if provider is not None else None
        self.tracer = tracer
        self.services: tuple[str, ...] = ()
        # Overload: the in-flight bound refuses at the door; the loop's lag monitor (started
        # with the server) keeps timeouts of our own making off the models' breakers.
        self.lag_monitor = LoopLagMonitor(interval_s=settings.loop_lag_interval_s)
        self.bound = InflightBound(
            max_streams=settings.max_inflight_streams,
            max_unary=settings.max_inflight_unary,
            retry_after_s=settings.overload_retry_after_s,
            shed_lag_s=settings.shed_lag_s,
            lag=self.lag_monitor.lag_now,
        )
        components.generation.lag_judge = LagJudge(
            self.lag_monitor,
            share=settings.lag_blame_share,
            connect_timeout_s=settings.llm_connect_timeout_s,
            idle_timeout_s=settings.llm_idle_timeout_s,
            retry_after_s=settings.overload_retry_after_s,
        )
        self.server = grpc.aio.server(
            interceptors=[
                CallInterceptor(
                    Authenticator(settings), self.state, tracer, components.quotas, self.bound
                )
            ],
            options=[
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
                ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
                ("grpc.keepalive_permit_without_calls", 1),
                (
                    "grpc.http2.min_ping_interval_without_data_ms",
                    int(settings.min_client_ping_interval_s * 1000),
                ),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                *connection_age_options(settings),
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        retriever = self._add_services(settings, components)
        capabilities_pb2_grpc.add_CapabilitiesServiceServicer_to_server(
            CapabilitiesServicer(
                retriever,
                components.generation.routes,
                settings,
                cache_enabled=components.cache is not None,
                quotas=components.quotas,
            ),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection((*self.services, health.SERVICE_NAME), self.server)
        self.port = 0

    @property
    def components(self) -> Components:
        """The process's own store and pipelines (TypeError for a server over another
        process's store: see :attr:`composition`)."""
        if not isinstance(self.composition, Components):
            raise TypeError("this server holds no store: its retrieval is another process's")
        return self.composition

    def _add_services(self, settings: Settings, components: Composition) -> Retriever:
        """Register the role's services (recording their names in ``self.services``);
        returns the retriever capabilities report."""
        retriever: Retriever
        if isinstance(components, Components):
            retriever = components.retrieval
            if settings.serves_retrieval:
                retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(
                    RetrievalServicer(components.retrieval, settings), self.server
                )
                documents_pb2_grpc.add_DocumentServiceServicer_to_server(
                    DocumentServicer(components.ingest), self.server
                )
        else:
            retriever = components.retriever
            if settings.serves_retrieval and components.forwards_to_owner:
                hop = components.retriever.hop
                retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(
                    ForwardingRetrievalServicer(hop), self.server
                )
                documents_pb2_grpc.add_DocumentServiceServicer_to_server(
                    ForwardingDocumentServicer(hop), self.server
                )
        if settings.serves_generation:
            generation_pb2_grpc.add_GenerationServiceServicer_to_server(
                GenerationServicer(components.generation, retriever, settings), self.server
            )
        served = {
            RETRIEVAL_SERVICE: settings.serves_retrieval,
            DOCUMENT_SERVICE: settings.serves_retrieval,
            GENERATION_SERVICE: settings.serves_generation,
            CAPABILITIES_SERVICE: True,
        }
        self.services = tuple(name for name in SERVICE_NAMES if served[name])
        return retriever

    async def start(self) -> int:
        """Bind, start serving and mark every service SERVING; returns the bound port."""
        self.port = self.server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise OSError(f"cannot bind {self.settings.listen}")
        await self.server.start()
        self.lag_monitor.start()
        for name in (*self.services, ""):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"listen": self.settings.listen, "port": self.port})
        return self.port

    async def stop(
        self,
        grace_s: float | None = None,
        *,
        before_release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Drain: NOT_SERVING, refuse new calls, let in-flight calls finish within the grace
        period, then release the client layer (``before_release`` runs just before: the
        shard owner serves the other workers until they are done)."""
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        self.state.draining = True
        await self.health.enter_graceful_shutdown()
        log.info("draining", extra={"grace_s": grace})
        await self.server.stop(grace)
        await self.lag_monitor.stop()
        if before_release is not None:
            await before_release()
        await self.composition.close()
        log.info("stopped")


async def serve(settings: Settings, worker: WorkerPlan | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully. ``worker``: this process is
    one of several sharing the port (see :mod:`groundwire.server.workers`)."""
    if worker is not None and worker.owner_socket is not None and not worker.owner:
        # Not the Edge shard's owner: retrieval and ingest are the owner's, over its socket.
        remote = await build_remote_components(
            settings, await connect_owner(settings, worker.owner_socket)
        )
        await _serve_until_stopped(GroundwireServer(settings, remote, reuse_port=True))
        return
    if not settings.serves_retrieval:
        remote = await build_remote_components(
            settings, await connect_retrieval_deployment(settings)
        )
        await _serve_until_stopped(
            GroundwireServer(settings, remote, reuse_port=worker is not None)
        )
        return
    components = await build_components(settings)
    server = GroundwireServer(settings, components, reuse_port=worker is not None)
    owner: OwnerListener | None
    if worker is not None and worker.owner_socket is not None:
        owner = OwnerListener(settings, components, worker.owner_socket, server.tracer)
    else:  # a lone process on an Edge store listens for `groundwire reindex` only
        owner = reindex_listener(settings, components, server.tracer) if worker is None else None
    if owner is not None:
        try:
            await owner.start()
        except BaseException:
            await components.close()
            raise
    peers_done = worker.peers_done_signal if worker is not None else None
    await _serve_until_stopped(server, owner=owner, peers_done=peers_done)


async def _serve_until_stopped(
    server: GroundwireServer,
    *,
    owner: OwnerListener | None = None,
    peers_done: signal.Signals | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain. The shard's owner keeps its socket open
    after its own drain until ``peers_done`` arrives (the supervisor's word that every other
    worker has stopped) or one more grace period passes, so their calls in flight finish."""
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    peers_gone = asyncio.Event()
    if peers_done is not None:
        loop.add_signal_handler(peers_done, peers_gone.set)
    await stop.wait()

    async def close_owner_socket() -> None:
        if owner is None:
            return
        grace = server.settings.grace_period_s
        try:
            if peers_done is not None:  # else no other worker calls it
                await asyncio.wait_for(peers_gone.wait(), timeout=grace + 1.0)
        except TimeoutError:
            log.warning("workers still running after the grace period; closing the socket")
        await owner.stop(grace)

    await server.stop(before_release=close_owner_socket)
