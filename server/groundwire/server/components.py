"""The parts a server is built from: the client layer the settings describe (embedder, store,
Redis cache, model routes) and the pipelines over it, for a process that owns its store
(:class:`Components`) and for the pieces the other compositions share.

The composition root (:mod:`groundwire.server.app`) assembles a server from these;
:mod:`groundwire.server.roles` (a worker or deployment over another process's store) and
``groundwire reindex`` (a generation's store and embedder) build from them too, without the
server around them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from groundwire.server.settings import (
    EmbedderKind,
    Settings,
    VectorStoreKind,
    environment_secret,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


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
