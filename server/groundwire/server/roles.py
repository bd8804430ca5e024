"""The compositions of a process that does not hold the store itself, and the shard owner's
private listener (see README "Workers and roles").

- A worker that does not own the Edge shard, and a generation-only deployment, build no
  store and no embedder: generation retrieves through a
  :class:`~groundwire.server.pipeline.remote_retrieval.RemoteRetriever`, and (for the worker)
  RetrievalService and DocumentService are forwarded to the owner.
- The owner (worker 0) keeps the full composition and also listens on a Unix socket
  (:class:`OwnerListener`) for the other workers. A lone process on an Edge store listens
  there too, for ``groundwire reindex`` only (:func:`reindex_listener`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from groundwire.clients.ports import Cache
from groundwire.clients.redis_link import RedisLink
from groundwire.clients.sparse import Bm25Encoder
from groundwire.clients.tokenization import default_remote_tokenizer
from groundwire.clients.vector_store import EdgeVectorStore
from groundwire.server import owner_socket
from groundwire.server.owner_socket import TrustedCallInterceptor, bind_private
from groundwire.server.pipeline.cache_writes import CacheWrites
from groundwire.server.pipeline.generation.pipeline import GenerationPipeline
from groundwire.server.pipeline.remote_retrieval import Hop, RemoteRetriever
from groundwire.server.quotas import Quotas
from groundwire.server.servicers.capabilities import CapabilitiesServicer
from groundwire.server.servicers.documents import DocumentServicer
from groundwire.server.servicers.retrieval import RetrievalServicer
from groundwire.server.settings import Settings
from groundwire.v1 import capabilities_pb2_grpc, documents_pb2_grpc, retrieval_pb2_grpc

if TYPE_CHECKING:
    from opentelemetry import trace

    from groundwire.server.components import Components

log = logging.getLogger(__name__)

# The credentials a generation-only process passes on to the retrieval deployment, which
# authenticates the caller again (the tenant header only matters in mesh_header mode).
API_KEY_HEADERS = ("authorization", "x-api-key")


@dataclass
class RemoteComponents:
    """What a process without the store builds: the remote retriever, generation over it,
    the cache and quotas (under the far store's namespace, so entries and counters are the
    ones the owner's side uses)."""

    retriever: RemoteRetriever
    generation: GenerationPipeline
    cache: Cache | None
    writes: CacheWrites
    quotas: Quotas | None = None
    redis: RedisLink | None = None
    namespace: str = ""

    @property
    def forwards_to_owner(self) -> bool:
        """True for a worker reaching the Edge shard's owner (it forwards RetrievalService
        and DocumentService too); False for a generation-only process."""
        return self.retriever.hop.trusted

    async def close(self) -> None:
        """Release every client."""
        await self.writes.drain()
        if self.quotas is not None:
            await self.quotas.drain()
        await self.generation.routes.close()
        if self.cache is not None:
            await self.cache.close()
        if self.redis is not None:
            await self.redis.close()
        await self.retriever.close()


def channel_options(settings: Settings) -> list[tuple[str, int]]:
    """Options of a hop's channel: messages as large as the public port accepts."""
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
    ]


# A retrieval deployment is several pods behind one name (a headless Service): resolve it
# through DNS and spread calls over every address (round_robin), instead of pinning this
# process's one connection to one pod (pick_first). The server's max connection age makes
# the channel re-resolve, so pods added by the autoscaler get calls; keepalive notices a pod
# that vanished without closing its connections.
NETWORK_HOP_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


def network_target(url: str) -> str:
    """The gRPC target of ``GROUNDWIRE_RETRIEVAL_URL``: ``unix:`` as it is, ``host:port``
    through the DNS resolver (every address of the name, not the first)."""
    return url if url.startswith("unix:") else f"dns:///{url}"


async def connect_owner(settings: Settings, socket: Path) -> RemoteRetriever:
    """The retriever of a worker that does not own the shard: the owner's socket, waited for
    (it loads the model and opens the store first)."""
    channel = grpc.aio.insecure_channel(f"unix:{socket}", options=channel_options(settings))
    try:
        return await RemoteRetriever.connect(
            Hop(channel, trusted=True),
            wait_s=settings.retrieval_wait_s,
            what=f"the Edge shard's owner (worker 0, {socket})",
        )
    except BaseException:
        await channel.close(None)
        raise


async def connect_retrieval_deployment(settings: Settings) -> RemoteRetriever:
    """The retriever of a generation-only process: GROUNDWIRE_RETRIEVAL_URL, with the
    callers' credentials forwarded on every call."""
    assert settings.retrieval_url is not None  # checked by Settings
    channel = grpc.aio.insecure_channel(
        network_target(settings.retrieval_url),
        options=[*channel_options(settings), *NETWORK_HOP_OPTIONS],
    )
    headers = (*API_KEY_HEADERS, settings.tenant_header.lower())
    startup = (
        (("authorization", f"Bearer {settings.retrieval_api_key}"),)
        if settings.retrieval_api_key
        else ()
    )
    try:
        return await RemoteRetriever.connect(
            Hop(channel, trusted=False, credential_headers=headers),
            wait_s=settings.retrieval_wait_s,
            startup_metadata=startup,
            what=f"the retrieval deployment at GROUNDWIRE_RETRIEVAL_URL ({settings.retrieval_url})",
        )
    except BaseException:
        await channel.close(None)
        raise


async def build_remote_components(
    settings: Settings, retriever: RemoteRetriever
) -> RemoteComponents:
    """Generation over ``retriever``, with the cache and quotas under the far store's
    namespace (the owner tells it; a retrieval deployment over the network does not, and
    then this deployment's entries are its own)."""
    from groundwire.server.components import (
        build_generation,
        build_routes,
        cache_for_identity,
        shared_counters,
    )

    identity = retriever.index_identity or f"remote:{settings.retrieval_url}"
    try:
        routes = build_routes(settings)
        cache = await cache_for_identity(settings, identity)
    except BaseException:
        await retriever.close()
        raise
    sparse = Bm25Encoder(avg_len=settings.bm25_avg_len)
    writes = CacheWrites(cache)
    redis, namespace, quotas = shared_counters(settings, cache, identity, routes)
    generation = build_generation(
        settings,
        retriever=retriever,
        routes=routes,
        # MiniLM's own tokenizer, as the owner's embedder has: prompts are sized alike.
        tokenizer=default_remote_tokenizer(),
        cache=cache,
        writes=writes,
        sparse=sparse,
        quotas=quotas,
    )
    return RemoteComponents(
        retriever=retriever,
        generation=generation,
        cache=cache,
        writes=writes,
        quotas=quotas,
        redis=redis,
        namespace=namespace,
    )


class OwnerListener:
    """The owner's second gRPC server, on its private Unix socket: Retrieve, ingest, delete
    and capabilities for the other workers (``peers``), trusted, not charged, not counted
    again; and the internal ReindexService for ``groundwire reindex`` (an Edge store only).
    ``temporary_dir``: the socket's own directory, removed at stop."""

    def __init__(
        self,
        settings: Settings,
        components: Components,
        socket: Path,
        tracer: trace.Tracer | None = None,
        *,
        peers: bool = True,
        temporary_dir: Path | None = None,
    ) -> None:
        self.socket = socket
        self.root = settings.data_dir / "edge"
        self.temporary_dir = temporary_dir
        self.server = grpc.aio.server(
            interceptors=[TrustedCallInterceptor(components.store.identity, tracer)],
            options=[
                *channel_options(settings),
                ("grpc.so_reuseport", 0),
            ],
        )
        if isinstance(components.store, EdgeVectorStore):
            # Imported here: the reindex steps import the composition root, which imports us.
            from groundwire.server.reindex import owner as reindex_owner

            reindex_owner.add_to_server(self.server, settings, components)
        if not peers:
            return
        retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(
            RetrievalServicer(components.retrieval, settings), self.server
        )
        documents_pb2_grpc.add_DocumentServiceServicer_to_server(
            DocumentServicer(components.ingest), self.server
        )
        capabilities_pb2_grpc.add_CapabilitiesServiceServicer_to_server(
            CapabilitiesServicer(
                components.retrieval,
                components.generation.routes,
                settings,
                cache_enabled=components.cache is not None,
            ),
            self.server,
        )

    async def start(self) -> None:
        """Listen on the socket (mode 0600) and say where, for reindex commands."""
        bind_private(self.server, self.socket)
        await self.server.start()
        owner_socket.advertise(self.root, self.socket)
        log.info("owner socket listening", extra={"socket": str(self.socket)})

    async def stop(self, grace_s: float) -> None:
        """Let the calls in flight finish within ``grace_s``, then close."""
        owner_socket.withdraw(self.root, self.socket)
        await self.server.stop(grace_s)
        if self.temporary_dir is not None:
            shutil.rmtree(self.temporary_dir, ignore_errors=True)


def reindex_listener(
    settings: Settings, components: Components, tracer: trace.Tracer | None = None
) -> OwnerListener | None:
    """For a lone process (no workers) on an Edge store: the owner socket with ReindexService
    only, so ``groundwire reindex`` runs while it serves. None for other stores."""
    if not isinstance(components.store, EdgeVectorStore):
        return None
    from groundwire.server.owner_path import owner_socket_path

    socket, temporary_dir = owner_socket_path(settings.data_dir)
    return OwnerListener(
        settings, components, socket, tracer, peers=False, temporary_dir=temporary_dir
    )
