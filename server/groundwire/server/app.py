"""The composition root: settings → client layer → pipelines → servicers → gRPC server.

Nothing else builds clients; everything is handed down by constructor.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from groundwire.clients.breaker import CircuitBreaker
from groundwire.clients.embedder import OpenAIEmbedder, TorchEmbedder
from groundwire.clients.llm import OpenAIChatClient
from groundwire.clients.onnx_embedder import OnnxEmbedder
from groundwire.clients.ports import Cache, DenseEmbedder, Tokenizer, VectorStore
from groundwire.clients.redis_cache import RedisCache
from groundwire.clients.redis_link import RedisLink, key_namespace, redacted
from groundwire.clients.sparse import Bm25Encoder
from groundwire.clients.tokenization import default_remote_tokenizer
from groundwire.clients.vector_store import EdgeVectorStore, QdrantVectorStore, qdrant_tenancy
from groundwire.clients.vector_store.edge_pointer import live_dir
from groundwire.clients.vector_store.qdrant_connection import QdrantNodes, Timeouts
from groundwire.server.auth import Authenticator
from groundwire.server.interceptors import CallInterceptor, ServerState
from groundwire.server.overload import InflightBound, LagJudge, LoopLagMonitor
from groundwire.server.pipeline.cache_writes import CacheWrites
from groundwire.server.pipeline.chunking import Chunker
from groundwire.server.pipeline.generation.answer_cache import AnswerCache
from groundwire.server.pipeline.generation.catalog import load_catalog
from groundwire.server.pipeline.generation.metrics import export_breakers
from groundwire.server.pipeline.generation.pipeline import GenerationPipeline
from groundwire.server.pipeline.generation.prompt import PromptBuilder, TokenCounter
from groundwire.server.pipeline.generation.routing import ModelRoutes
from groundwire.server.pipeline.ingest import IngestPipeline
from groundwire.server.pipeline.retrieval import RetrievalPipeline
from groundwire.server.pipeline.retriever import Retriever
from groundwire.server.quotas import Quotas, build_quotas
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
    EmbedderKind,
    Settings,
    VectorStoreKind,
    environment_secret,
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


@dataclass
class Components:
    """The client layer and pipelines, built once per process."""

    store: VectorStore
    dense: DenseEmbedder | None
    cache: Cache | None
    retrieval: RetrievalPipeline
    ingest: IngestPipeline
    generation: GenerationPipeline
    # False when the embedder is shared beyond this server (tests share one loaded model).
    owns_dense: bool = True
    # The tenant quotas; None when no tenant has a limit.
    quotas: Quotas | None = None
    # The one Redis link (the cache's, shared by the quotas); None when no Redis is configured.
    redis: RedisLink | None = None
    # The prefix of every Redis key and counter: names the index (see key_namespace).
    namespace: str = ""

    async def close(self) -> None:
        """Release every client, store last so in-flight writes are flushed."""
        await self.retrieval.drain()
        if self.quotas is not None:
            await self.quotas.drain()  # charges still on their way to Redis
        await self.generation.routes.close()
        if self.cache is not None:
            await self.cache.close()
        if self.redis is not None:
            await self.redis.close()  # idempotent: the cache may have closed it
        if self.dense is not None and self.owns_dense:
            await self.dense.close()
        await self.store.close()


async def build_dense_embedder(settings: Settings) -> DenseEmbedder | None:
    """The dense embedder the settings name, or None for sparse-only."""
    if settings.embedder is EmbedderKind.LOCAL:
        return await OnnxEmbedder.load(
            batch_size=settings.embed_batch_size,
            num_threads=settings.embed_threads,
            query_threads=settings.embed_query_threads,
        )
    if settings.embedder is EmbedderKind.LOCAL_TORCH:
        return await TorchEmbedder.load(
            batch_size=settings.embed_batch_size,
            num_threads=settings.embed_threads,
            query_threads=settings.embed_query_threads,
        )
    if settings.embedder is EmbedderKind.OPENAI:
        assert settings.embeddings_base_url is not None  # checked by Settings
        return OpenAIEmbedder(
            base_url=settings.embeddings_base_url,
            model=settings.embeddings_model,
            dimension=settings.embeddings_dimension,
            api_key=settings.embeddings_api_key,
            timeout_s=settings.embeddings_timeout_s,
            batch_size=settings.embed_batch_size,
            retry_after_cap_s=settings.retry_after_cap_s,
        )
    return None


def qdrant_nodes(settings: Settings) -> QdrantNodes:
    """The Qdrant nodes, their timeouts and retries as the settings name them."""
    search_s, write_s, index_s = settings.qdrant_timeouts
    return QdrantNodes.of(
        settings.qdrant_urls,
        read_urls=settings.qdrant_read_urls,
        grpc_port=settings.qdrant_grpc_port,
        api_key=settings.qdrant_api_key,
        prefer_grpc=settings.qdrant_prefer_grpc,
        timeouts=Timeouts(search_s, write_s, index_s),
        retries=settings.qdrant_retries,
    )


def qdrant_store(settings: Settings, collection: str) -> QdrantVectorStore:
    """A Qdrant store on ``collection`` (a name or an alias), with the settings' cluster,
    consistency and index options (the server's own, and each generation of a reindex)."""
    return QdrantVectorStore.connect(
        qdrant_nodes(settings),
        collection=collection,
        replication_factor=settings.qdrant_replication_factor,
        write_consistency_factor=settings.qdrant_write_consistency_factor,
        read_consistency=qdrant_tenancy.read_consistency(settings.qdrant_read_consistency),
        write_ordering=qdrant_tenancy.write_ordering(settings.qdrant_write_ordering),
        hnsw=settings.qdrant_hnsw,
    )


async def build_store(settings: Settings) -> VectorStore:
    """The vector store the settings name."""
    if settings.vector_store is VectorStoreKind.QDRANT:
        assert settings.qdrant_url is not None  # checked by Settings
        store = qdrant_store(settings, settings.qdrant_collection)
        try:
            await store.pin()  # the alias's collection now; a reindex switch needs a restart
        except BaseException:
            await store.close()
            raise
        return store
    # The live generation a reindex switched to (edge_pointer); the first one until then.
    return EdgeVectorStore(live_dir(settings.data_dir / "edge"), hnsw=settings.edge_hnsw)


async def build_cache(settings: Settings, store: VectorStore) -> RedisCache | None:
    """The Redis cache on the process's one :class:`RedisLink`, under the namespace of the
    store's index; None when no Redis is configured (never a fake)."""
    return await cache_for_identity(settings, store.identity)


async def cache_for_identity(settings: Settings, identity: str) -> RedisCache | None:
    """:func:`build_cache` for the index named ``identity`` (a process without the store
    uses the identity the store's owner reports)."""
    if not settings.redis_url:
        return None
    link = RedisLink.from_url(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=settings.redis_max_connections,
        timeout_s=settings.redis_timeout_s,
        failure_threshold=settings.redis_breaker_failures,
        reset_s=settings.redis_breaker_reset_s,
    )
    namespace = key_namespace(settings.redis_key_prefix, identity)
    log.info(
        "redis cache",
        extra={
            "redis": redacted(settings.redis_url),
            "index_identity": identity,
            "namespace": namespace,
        },
    )
    cache = RedisCache(link, namespace=namespace)
    if not await cache.ping():
        log.warning("redis not reachable at start; the cache bypasses itself until it is")
    return cache


def build_routes(settings: Settings, clock: Callable[[], float] = time.monotonic) -> ModelRoutes:
    """The model catalog with a client per endpoint and a breaker per model (on ``clock``)."""
    catalog = load_catalog(
        settings.llm_catalog,
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key,
        secret=environment_secret,
    )
    for name, why in catalog.unavailable.items():
        log.info("model not available", extra={"model": name, "why": why})
    clients: dict[tuple[str, str | None], OpenAIChatClient] = {}
    by_model: dict[str, OpenAIChatClient] = {}
    for name, spec in catalog.models.items():
        assert spec.base_url is not None  # load_catalog leaves out models without one
        key = (spec.base_url, spec.api_key)
        if key not in clients:
            clients[key] = OpenAIChatClient(
                spec.base_url,
                api_key=spec.api_key,
                system=spec.provider,
                connect_timeout_s=settings.llm_connect_timeout_s,
                idle_timeout_s=settings.llm_idle_timeout_s,
                max_connections=settings.llm_max_connections,
                retry_after_cap_s=settings.retry_after_cap_s,
            )
        by_model[name] = clients[key]
    breakers = {
        name: CircuitBreaker(
            name,
            failure_threshold=settings.breaker_failure_threshold,
            reset_timeout_s=settings.breaker_reset_s,
            max_open_s=settings.retry_after_cap_s,
            clock=clock,
        )
        for name in catalog.models
    }
    export_breakers(breakers)
    return ModelRoutes(catalog, by_model, breakers)


async def build_components(settings: Settings) -> Components:
    """Build the client layer the settings describe, then the pipelines over it. The store
    comes first: when another process owns it, that is said before seconds of model loading."""
    store = await build_store(settings)
    dense: DenseEmbedder | None = None
    try:
        dense = await build_dense_embedder(settings)
        cache = await build_cache(settings, store)
    except BaseException:
        if dense is not None:
            await dense.close()
        await store.close()
        raise
    return await assemble_components(settings, store=store, dense=dense, cache=cache)


async def assemble_components(
    settings: Settings,
    *,
    store: VectorStore,
    dense: DenseEmbedder | None,
    cache: Cache | None,
    routes: ModelRoutes | None = None,
) -> Components:
    """Check the store against the embedder (refusing to start on a mismatch) and build the
    pipelines over the given clients (``routes`` defaults to what the settings describe)."""
    try:
        routes = routes if routes is not None else build_routes(settings)
        await store.ensure_collection(
            dense.embedder_id if dense is not None else "",
            dense.dimension if dense is not None else 0,
        )
    except BaseException:
        await store.close()
        raise
    sparse = Bm25Encoder(avg_len=settings.bm25_avg_len)
    tokenizer = dense.tokenizer if dense is not None else default_remote_tokenizer()
    chunker = Chunker(tokenizer, settings.chunk_tokens, settings.chunk_overlap_tokens)
    writes = CacheWrites(cache)
    retrieval = RetrievalPipeline(
        store=store,
        sparse=sparse,
        dense=dense,
        cache=cache,
        cache_ttl_s=settings.retrieval_cache_ttl_s,
        writes=writes,
    )
    ingest = IngestPipeline(
        store=store,
        chunker=chunker,
        sparse=sparse,
        dense=dense,
        cache=cache,
        index_signature=(
            f"{dense.embedder_id if dense else 'none'}|{sparse.id}|"
            f"chunk={settings.chunk_tokens}/{settings.chunk_overlap_tokens}"
        ),
        max_document_bytes=settings.max_document_bytes,
        batch_documents=settings.ingest_batch_documents,
    )
    redis, namespace, quotas = shared_counters(settings, cache, store.identity, routes)
    generation = build_generation(
        settings,
        retriever=retrieval,
        routes=routes,
        tokenizer=tokenizer,
        cache=cache,
        writes=writes,
        sparse=sparse,
        quotas=quotas,
    )
    return Components(
        store=store,
        dense=dense,
        cache=cache,
        retrieval=retrieval,
        ingest=ingest,
        generation=generation,
        redis=redis,
        namespace=namespace,
        quotas=quotas,
    )


def shared_counters(
    settings: Settings, cache: Cache | None, identity: str, routes: ModelRoutes
) -> tuple[RedisLink | None, str, Quotas | None]:
    """The Redis link, the namespace of the index named ``identity`` and the quotas counted
    under it. Quotas share the cache's link (one pool, one breaker) and its namespace."""
    redis = cache.link if isinstance(cache, RedisCache) else None
    namespace = key_namespace(settings.redis_key_prefix, identity)
    quotas = build_quotas(
        settings, link=redis, namespace=namespace, currency=routes.catalog.currency
    )
    return redis, namespace, quotas


def build_generation(
    settings: Settings,
    *,
    retriever: Retriever,
    routes: ModelRoutes,
    tokenizer: Tokenizer,
    cache: Cache | None,
    writes: CacheWrites,
    sparse: Bm25Encoder,
    quotas: Quotas | None,
) -> GenerationPipeline:
    """The generation pipeline over ``retriever`` (in this process or another), prompts sized
    in ``tokenizer``'s tokens, answers cached through ``cache``."""
    return GenerationPipeline(
        retrieval=retriever,
        routes=routes,
        prompts=PromptBuilder(TokenCounter(tokenizer)),
        answers=AnswerCache(
            cache,
            writes,
            ttl_s=settings.answer_cache_ttl_s,
            max_temperature=settings.answer_cache_max_temperature,
        ),
        sparse=sparse,
        coalesce_deltas=settings.coalesce_deltas,
        budget=quotas,
    )


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
        self.bound = InflightBound(
            max_streams=settings.max_inflight_streams,
            max_unary=settings.max_inflight_unary,
            retry_after_s=settings.overload_retry_after_s,
        )
        self.lag_monitor = LoopLagMonitor(interval_s=settings.loop_lag_interval_s)
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
