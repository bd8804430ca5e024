"""Production: a Qdrant server or cluster through ``qdrant-client`` (async, gRPC preferred).

The client enters by constructor, so tests hand in ``AsyncQdrantClient(location=":memory:")``
(qdrant-client's local mode, which speaks the same API) and production uses :meth:`connect`,
whose :class:`QdrantConnection` spreads calls over several nodes (reads near, writes home,
failover on an unreachable node; see ``qdrant_connection``).
The embedder a collection was built with lives in the collection's own metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

from opentelemetry.trace import Span
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.conversions import common_types as types

from groundwire.clients.errors import SparseScopeUnavailableError, VectorStoreUnavailableError
from groundwire.clients.models import (
    ChunkPoint,
    CollectionInfo,
    FieldMatch,
    ScoredChunk,
    SearchMode,
    SparseVector,
    StoredDocument,
)
from groundwire.clients.vector_store import checks as ck
from groundwire.clients.vector_store import collection_record as cr
from groundwire.clients.vector_store import payload as pl
from groundwire.clients.vector_store import qdrant_alias as qa
from groundwire.clients.vector_store import qdrant_collection as qc
from groundwire.clients.vector_store import qdrant_requests as qr
from groundwire.clients.vector_store import qdrant_tenancy as qt
from groundwire.clients.vector_store import search_plan as sp
from groundwire.clients.vector_store.identity import unshared_qdrant_identity
from groundwire.clients.vector_store.qdrant_connection import (
    NodeCall,
    QdrantConnection,
    QdrantNodes,
)
from groundwire.clients.vector_store.scan import ScannedChunk, ScanOffset, qdrant_page
from groundwire.clients.vector_store.spans import store_span

T = TypeVar("T")


class QdrantVectorStore:
    """A VectorStore on one Qdrant collection, every call scoped to the tenant.

    ``replication_factor`` and ``write_consistency_factor`` apply when the collection is
    created and are applied to an existing one at start (drift Qdrant cannot fix by itself is
    logged as a WARNING); ``read_consistency`` goes with every search, scroll and count,
    ``write_ordering`` with every write. Sparse scores stay within the tenant's documents on
    every server version (see :mod:`.qdrant_tenancy`); the server's version is checked and
    logged at start. ``hnsw=False`` (the default)
    asks for exact search; ``hnsw=True`` uses the per-tenant HNSW graphs the collection is
    created with (``m=0, payload_m=16``, built by the server in the background). Every call
    is bounded by its kind's timeout (``timeout_s`` for all of them when a bare client is
    handed in). The store owns the client or connection and closes it.
    """

    def __init__(
        self,
        client: AsyncQdrantClient | QdrantConnection,
        collection: str,
        *,
        timeout_s: float = 5.0,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        read_consistency: models.ReadConsistency | None = None,
        write_ordering: models.WriteOrdering | None = None,
        hnsw: bool = False,
        hnsw_ef: int = 128,
        url: str | None = None,
    ) -> None:
        """``url`` is where a bare ``client`` points: it names the collection's entries in
        Redis. Without it the store's identity is its own, shared with no other store. A
        :class:`QdrantConnection` names itself (its write URLs)."""
        if isinstance(client, QdrantConnection):
            self._connection = client
        else:
            self._connection = QdrantConnection.of_client(client, url=url, timeout_s=timeout_s)
        self._named = isinstance(client, QdrantConnection) or bool(url)
        self._identity = self._identity_of(collection)
        self._collection = collection
        # The alias to create over the collection once it exists (set by pin()).
        self._alias_to_create: str | None = None
        self._replication_factor = replication_factor
        self._write_consistency_factor = write_consistency_factor
        self._read_consistency = read_consistency
        self._write_ordering = write_ordering
        self._facts: qt.ServerFacts | None = None
        self._scope = qt.SparseScope.CORPUS_FILTER
        self._shards: qt.TenantShards | None = None
        self._hnsw = hnsw
        self._hnsw_ef = hnsw_ef
        self._info: CollectionInfo | None = None

    @classmethod
    def connect(
        cls,
        nodes: QdrantNodes,
        collection: str,
        *,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        read_consistency: models.ReadConsistency | None = None,
        write_ordering: models.WriteOrdering | None = None,
        hnsw: bool = False,
    ) -> QdrantVectorStore:
        """A store on the Qdrant deployment ``nodes`` names, over gRPC unless
        ``nodes.prefer_grpc`` is false (the client's REST side serves the calls gRPC lacks)."""
        return cls(
            QdrantConnection(nodes),
            collection,
            replication_factor=replication_factor,
            write_consistency_factor=write_consistency_factor,
            read_consistency=read_consistency,
            write_ordering=write_ordering,
            hnsw=hnsw,
        )

    @property
    def identity(self) -> str:
        """``qdrant:<scheme>://<host>:<port>/<collection>``, the URL normalised; with several
        write URLs, ``qdrant:<url>,<url>/<collection>`` with the URLs sorted, so replicas of a
        deployment listing the same home nodes in any order share their Redis entries (they
        must list the same nodes: a different list is another index to Redis). After
        :meth:`pin`, the collection is the physical one the alias pointed at."""
        return self._identity

    @property
    def collection(self) -> str:
        """The collection this store reads and writes (the physical one after :meth:`pin`)."""
        return self._collection

    async def pin(self) -> str:
        """Resolve the configured name once, before the store is used (and before its
        identity names anything in Redis): an alias pins the collection it points at now; a
        plain collection of that name is used as it is; when neither exists, generation 1
        (``<name>__1``) is created by :meth:`ensure_collection` with the alias over it. Later
        switches of the alias reach this store only by a restart (see ``qdrant_alias``).
        Returns the physical collection."""
        with self._span("pin"):
            physical, create = await qa.resolve(self._call, self._collection)
        self._alias_to_create = self._collection if create else None
        self._collection = physical
        self._identity = self._identity_of(physical)
        return physical

    async def scan(
        self, offset: ScanOffset | None, limit: int, *, full: bool
    ) -> tuple[list[ScannedChunk], ScanOffset | None]:
        """One page of every tenant's chunks (for a reindex only: see ``scan``)."""
        with self._span("scan", None, **{"groundwire.limit": limit}):
            return await qdrant_page(self._call, self._collection, offset, limit, full=full)

    async def ensure_collection(self, embedder_id: str, dimension: int) -> None:
        """Create the collection if missing; raise EmbedderMismatchError if it was built
        with another embedder or its vectors do not fit."""
        ck.check_collection_args(embedder_id, dimension)
        wanted = CollectionInfo(embedder_id=embedder_id, dimension=dimension)
        with self._span("ensure_collection", **{"groundwire.embedder_id": embedder_id}):
            facts = await self._server_facts()
            if not await self._exists():
                try:
                    await self._create(wanted, qt.choose_scope(facts, None))
                except VectorStoreUnavailableError:
                    # Another replica may have created it meanwhile; then theirs is checked.
                    if not await self._exists():
                        raise
            described = await self._call(
                "get_collection", lambda client, _: client.get_collection(self._collection)
            )
            qc.check_collection(described, wanted, self._collection)
            if self._alias_to_create is not None:
                await qa.create_alias(self._call, self._alias_to_create, self._collection)
                self._alias_to_create = None
            await self._adopt(facts, described)
            for key, schema in qc.payload_indexes().items():
                if key not in (described.payload_schema or {}):
                    # _call runs the lambda before the loop moves on (so B023 does not apply).
                    await self._call(
                        "create_payload_index",
                        lambda client, timeout: client.create_payload_index(
                            self._collection,
                            key,  # noqa: B023
                            field_schema=schema,  # noqa: B023
                            wait=True,
                            timeout=timeout,
                        ),
                    )
            self._info = wanted

    async def upsert(self, tenant: str, points: Sequence[ChunkPoint]) -> None:
        """Write the points in one request and wait until they are applied.

        The upsert is conditional on the tenant (``update_filter``): a point id that belongs
        to another tenant is left untouched rather than taken over. With a shard per tenant
        the write goes to the writer's own shard (created on its first write), so it cannot
        reach another tenant's point at all.
        """
        scope = [sp.tenant_condition(tenant)]
        ck.check_points(points, self._require_info().dimension)
        if not points:
            return
        structs = [
            models.PointStruct(
                id=p.record.chunk_id,
                vector=qr.named_vectors(p),
                payload=pl.chunk_payload(tenant, p.record),
            )
            for p in points
        ]
        with self._span("upsert", tenant, **{"groundwire.points": len(points)}):
            if self._shards is not None:
                await self._shards.ensure(tenant)
            await self._call(
                "upsert",
                lambda client, timeout: client.upsert(
                    self._collection,
                    points=structs,
                    wait=True,
                    update_filter=qr.filter_of(scope),
                    shard_key_selector=self._selector(tenant),
                    ordering=self._write_ordering,
                    timeout=timeout,
                ),
            )

    async def stored_documents(
        self, tenant: str, doc_ids: Sequence[str]
    ) -> dict[str, StoredDocument]:
        """Content hash and chunk ids of each of the tenant's ``doc_ids`` that exists."""
        scope = [sp.tenant_condition(tenant)]
        if not doc_ids:
            return {}
        with self._span("stored_documents", tenant, **{"groundwire.documents": len(doc_ids)}):
            return pl.stored_documents(await self._scroll_documents(tenant, scope, doc_ids))

    async def delete_points(self, tenant: str, chunk_ids: Sequence[str]) -> None:
        """Delete the tenant's points among ``chunk_ids``; other tenants' ids match nothing."""
        scope = [sp.tenant_condition(tenant)]
        ck.check_point_ids(chunk_ids)
        if not chunk_ids:
            return
        with self._span("delete_points", tenant, **{"groundwire.points": len(chunk_ids)}):
            await self._delete("delete_points", tenant, qr.filter_of(scope, chunk_ids))

    async def delete_documents(self, tenant: str, doc_ids: Sequence[str]) -> tuple[int, int]:
        """Delete every chunk of the tenant's ``doc_ids``; (documents, chunks) deleted.

        The counts are read just before the delete: a write racing it from another replica
        can make them off by that write, never the deletion itself.
        """
        scope = [sp.tenant_condition(tenant)]
        if not doc_ids:
            return 0, 0
        with self._span("delete_documents", tenant, **{"groundwire.documents": len(doc_ids)}):
            found = pl.stored_documents(await self._scroll_documents(tenant, scope, doc_ids))
            chunks = sum(len(d.chunk_ids) for d in found.values())
            if chunks:
                doc_scope = [*scope, sp.Condition(pl.DOC_ID_KEY, tuple(set(doc_ids)))]
                await self._delete("delete_documents", tenant, qr.filter_of(doc_scope))
            return len(found), chunks

    async def search(
        self,
        tenant: str,
        *,
        mode: SearchMode,
        dense: list[float] | None,
        sparse: SparseVector | None,
        limit: int,
        filters: Sequence[FieldMatch] = (),
        min_score: float | None = None,
    ) -> list[ScoredChunk]:
        """The tenant's best ``limit`` chunks; hybrid fuses dense and sparse by RRF."""
        conditions = sp.search_conditions(tenant, filters)
        ck.check_search(mode, dense, sparse, limit, self._require_info().dimension)
        if mode is not SearchMode.DENSE and self._scope is qt.SparseScope.UNSCOPED:
            assert self._facts is not None  # set with the scope by ensure_collection
            raise SparseScopeUnavailableError(qt.refusal(self._facts, self._collection))
        parts = qr.query_parts(
            conditions, mode, dense, sparse, limit, hnsw=self._hnsw, hnsw_ef=self._hnsw_ef
        )
        with self._span(
            "search", tenant, **{"groundwire.search_mode": mode.value, "groundwire.limit": limit}
        ) as span:
            if await self._without_shard(tenant):
                return []
            response = await self._call(
                "search",
                lambda client, timeout: client.query_points(
                    self._collection,
                    query=parts.query,
                    using=parts.using,
                    prefetch=parts.prefetch,
                    query_filter=parts.filter,
                    search_params=parts.params,
                    limit=limit,
                    with_payload=True,
                    score_threshold=min_score,  # for hybrid: on the fused score
                    consistency=self._read_consistency,
                    shard_key_selector=self._selector(tenant),
                    timeout=timeout,
                ),
            )
            span.set_attribute("groundwire.hits", len(response.points))
        chunks = [
            ScoredChunk(pl.chunk_record(p.id, p.payload), float(p.score)) for p in response.points
        ]
        return sp.ranked(chunks)

    async def count(self, tenant: str) -> int:
        """The exact number of the tenant's points."""
        scope = [sp.tenant_condition(tenant)]
        with self._span("count", tenant):
            if await self._without_shard(tenant):
                return 0
            result = await self._call(
                "count",
                lambda client, timeout: client.count(
                    self._collection,
                    count_filter=qr.filter_of(scope),
                    exact=True,
                    shard_key_selector=self._selector(tenant),
                    timeout=timeout,
                ),
            )
        return result.count

    async def close(self) -> None:
        """Close the client (and its connections)."""
        with self._span("close"):
            await self._connection.close()

    # -- internals -------------------------------------------------------------------------

    def _span(
        self, op: str, tenant: str | None = None, **extra: str | int
    ) -> AbstractContextManager[Span]:
        return store_span(op, backend="qdrant", collection=self._collection, tenant=tenant, **extra)

    async def _call(self, op: str, call: NodeCall[T]) -> T:
        """Run a client call through the connection: ``call(client, timeout)`` goes to the
        nodes ``op``'s policy names (``qdrant_connection.POLICIES``) and fails over on an
        unreachable node, with the seconds its attempt has left. Vendor failures become
        VectorStoreUnavailableError with our words."""
        return await self._connection.run(op, call)

    def _require_info(self) -> CollectionInfo:
        if self._info is None:
            raise RuntimeError("QdrantVectorStore used before ensure_collection()")
        return self._info

    def _identity_of(self, collection: str) -> str:
        if self._named:
            return self._connection.identity(collection)
        return unshared_qdrant_identity(collection)

    async def _exists(self) -> bool:
        return await self._call(
            "collection_exists", lambda client, _: client.collection_exists(self._collection)
        )

    async def _server_facts(self) -> qt.ServerFacts:
        facts = await qt.server_facts(self._call)
        qt.log.info(
            "qdrant server",
            extra={"collection": self._collection, "qdrant_version": facts.version},
        )
        self._facts = facts
        return facts

    async def _adopt(self, facts: qt.ServerFacts, described: models.CollectionInfo) -> None:
        """Take on the collection as it is: its sparse scope and cluster settings."""
        self._scope = qt.choose_scope(facts, described.config.params.sharding_method)
        if self._scope is qt.SparseScope.TENANT_SHARDS:
            self._shards = qt.TenantShards(
                self._collection, self._call, replication_factor=self._replication_factor
            )
            await self._shards.load()
        elif self._scope is qt.SparseScope.UNSCOPED:
            qt.log.warning(qt.refusal(facts, self._collection))
        await qt.reconcile_cluster_settings(
            self._collection,
            self._call,
            described,
            replication_factor=self._replication_factor,
            write_consistency_factor=self._write_consistency_factor,
        )

    def _selector(self, tenant: str) -> str | None:
        """The tenant's shard key, with a shard per tenant (callers made sure it exists)."""
        return tenant if self._shards is not None else None

    async def _without_shard(self, tenant: str) -> bool:
        """With a shard per tenant: whether the tenant has none yet (it never wrote), so a
        read has nothing to find; the server is asked until the shard exists, as another
        replica may have created it."""
        return self._shards is not None and not await self._shards.exists(tenant)

    async def _create(self, info: CollectionInfo, scope: qt.SparseScope) -> None:
        vectors = (
            {
                pl.DENSE_VECTOR: models.VectorParams(
                    size=info.dimension, distance=models.Distance.COSINE
                )
            }
            if info.dimension
            else {}
        )
        await self._call(
            "create_collection",
            lambda client, timeout: client.create_collection(
                self._collection,
                vectors_config=vectors,
                sparse_vectors_config={
                    pl.SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
                replication_factor=self._replication_factor,
                write_consistency_factor=self._write_consistency_factor,
                # A shard per tenant where the server cannot scope IDF otherwise (before 1.19):
                # shard_number is then the number of shards per shard key.
                sharding_method=(
                    models.ShardingMethod.CUSTOM if scope is qt.SparseScope.TENANT_SHARDS else None
                ),
                shard_number=1 if scope is qt.SparseScope.TENANT_SHARDS else None,
                # m=0 with payload_m: one graph per tenant and no global one, since every
                # query carries a tenant filter (Qdrant's setup for is_tenant fields).
                hnsw_config=models.HnswConfigDiff(m=0, payload_m=16),
                metadata={cr.COLLECTION_METADATA_KEY: cr.collection_metadata(info)},
                timeout=timeout,
            ),
        )

    async def _scroll_documents(
        self, tenant: str, scope: list[sp.Condition], doc_ids: Sequence[str]
    ) -> list[tuple[object, dict[str, object] | None]]:
        if await self._without_shard(tenant):
            return []
        selector = self._selector(tenant)
        request_filter = qr.filter_of([*scope, sp.Condition(pl.DOC_ID_KEY, tuple(set(doc_ids)))])
        found: list[tuple[object, dict[str, object] | None]] = []
        offset: types.PointId | None = None
        while True:
            # _call runs the lambda before offset moves on (so B023 does not apply).
            page, offset = await self._call(
                "scroll",
                lambda client, timeout: client.scroll(
                    self._collection,
                    scroll_filter=request_filter,
                    limit=pl.SCROLL_PAGE,
                    offset=offset,  # noqa: B023
                    with_payload=list(pl.STORED_DOCUMENT_FIELDS),
                    consistency=self._read_consistency,
                    shard_key_selector=selector,
                    timeout=timeout,
                ),
            )
            found.extend((record.id, record.payload) for record in page)
            if offset is None:
                return found

    async def _delete(self, op: str, tenant: str, selector: models.Filter) -> None:
        if await self._without_shard(tenant):
            return
        await self._call(
            op,
            lambda client, timeout: client.delete(
                self._collection,
                points_selector=models.FilterSelector(filter=selector),
                shard_key_selector=self._selector(tenant),
                wait=True,
                ordering=self._write_ordering,
                timeout=timeout,
            ),
        )
