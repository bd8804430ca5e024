"""Production: a Qdrant server or cluster through ``qdrant-client`` (async, gRPC preferred).

The client enters by constructor, so tests hand in ``AsyncQdrantClient(location=":memory:")``
(qdrant-client's local mode, which speaks the same API) and production uses :meth:`connect`.
The embedder a collection was built with lives in the collection's own metadata.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

import grpc
import httpx
from opentelemetry.trace import Span
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.conversions import common_types as types
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from groundwire.clients.errors import EmbedderMismatchError, VectorStoreUnavailableError
from groundwire.clients.models import (
    ChunkPoint,
    CollectionInfo,
    FieldMatch,
    ScoredChunk,
    SearchMode,
    SparseVector,
    StoredDocument,
)
from groundwire.clients.vector_store import payload as pl
from groundwire.clients.vector_store import qdrant_requests as qr
from groundwire.clients.vector_store.identity import qdrant_identity, unshared_qdrant_identity
from groundwire.clients.vendor_log import VendorErrorLog

T = TypeVar("T")

# What a remote failure looks like from qdrant-client: HTTP status errors, transport errors
# (wrapped or raw), gRPC status errors, and our own deadline.
_VENDOR_ERRORS: tuple[type[BaseException], ...] = (
    UnexpectedResponse,
    ResponseHandlingException,
    httpx.HTTPError,
    grpc.RpcError,
    ConnectionError,
    TimeoutError,
)


class QdrantVectorStore:
    """A VectorStore on one Qdrant collection, every call scoped to the tenant.

    ``replication_factor`` and ``write_consistency_factor`` apply when the collection is
    created; ``read_consistency`` to every search and scroll. ``hnsw=False`` (the default)
    asks for exact search; ``hnsw=True`` uses the per-tenant HNSW graphs the collection is
    created with (``m=0, payload_m=16``, built by the server in the background). Every call
    is bounded by ``timeout_s``. The store owns the client and closes it.
    """

    def __init__(
        self,
        client: AsyncQdrantClient,
        collection: str,
        *,
        timeout_s: float = 5.0,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        read_consistency: models.ReadConsistency | None = None,
        hnsw: bool = False,
        hnsw_ef: int = 128,
        url: str | None = None,
    ) -> None:
        """``url`` is where ``client`` points: it names the collection's entries in Redis.
        Without it the store's identity is its own, shared with no other store."""
        self._client = client
        self._collection = collection
        self._vendor_log = VendorErrorLog("vector_store")
        self._identity = (
            qdrant_identity(url, collection) if url else unshared_qdrant_identity(collection)
        )
        self._timeout_s = timeout_s
        # Qdrant's own request timeout is whole seconds; ours (asyncio) is the exact bound.
        self._server_timeout = max(1, math.ceil(timeout_s))
        self._replication_factor = replication_factor
        self._write_consistency_factor = write_consistency_factor
        self._read_consistency = read_consistency
        self._hnsw = hnsw
        self._hnsw_ef = hnsw_ef
        self._info: CollectionInfo | None = None

    @classmethod
    def connect(
        cls,
        url: str,
        api_key: str | None,
        collection: str,
        timeout_s: float = 5.0,
        *,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        read_consistency: models.ReadConsistency | None = None,
        hnsw: bool = False,
    ) -> QdrantVectorStore:
        """A store on the Qdrant server at ``url``, over gRPC (the client's REST side is
        only used for the calls gRPC lacks)."""
        client = AsyncQdrantClient(
            url=url, api_key=api_key, prefer_grpc=True, timeout=max(1, math.ceil(timeout_s))
        )
        return cls(
            client,
            collection,
            timeout_s=timeout_s,
            replication_factor=replication_factor,
            write_consistency_factor=write_consistency_factor,
            read_consistency=read_consistency,
            hnsw=hnsw,
            url=url,
        )

    @property
    def identity(self) -> str:
        """``qdrant:<scheme>://<host>:<port>/<collection>``, the URL normalised."""
        return self._identity

    async def ensure_collection(self, embedder_id: str, dimension: int) -> None:
        """Create the collection if missing; raise EmbedderMismatchError if it was built
        with another embedder or its vectors do not fit."""
        pl.check_collection_args(embedder_id, dimension)
        wanted = CollectionInfo(embedder_id=embedder_id, dimension=dimension)
        with self._span("ensure_collection", **{"groundwire.embedder_id": embedder_id}):
            if not await self._exists():
                try:
                    await self._create(wanted)
                except VectorStoreUnavailableError:
                    # Another replica may have created it meanwhile; then theirs is checked.
                    if not await self._exists():
                        raise
            described = await self._call(
                "get_collection", self._client.get_collection(self._collection)
            )
            self._check_collection(described, wanted)
            for key, schema in self._indexes().items():
                if key not in (described.payload_schema or {}):
                    await self._call(
                        "create_payload_index",
                        self._client.create_payload_index(
                            self._collection,
                            key,
                            field_schema=schema,
                            wait=True,
                            timeout=self._server_timeout,
                        ),
                    )
            self._info = wanted

    async def upsert(self, tenant: str, points: Sequence[ChunkPoint]) -> None:
        """Write the points in one request and wait until they are applied.

        The upsert is conditional on the tenant (``update_filter``): a point id that belongs
        to another tenant is left untouched rather than taken over.
        """
        scope = [pl.tenant_condition(tenant)]
        pl.check_points(points, self._require_info().dimension)
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
            await self._call(
                "upsert",
                self._client.upsert(
                    self._collection,
                    points=structs,
                    wait=True,
                    update_filter=qr.filter_of(scope),
                    timeout=self._server_timeout,
                ),
            )

    async def stored_documents(
        self, tenant: str, doc_ids: Sequence[str]
    ) -> dict[str, StoredDocument]:
        """Content hash and chunk ids of each of the tenant's ``doc_ids`` that exists."""
        scope = [pl.tenant_condition(tenant)]
        if not doc_ids:
            return {}
        with self._span("stored_documents", tenant, **{"groundwire.documents": len(doc_ids)}):
            return pl.stored_documents(await self._scroll_documents(scope, doc_ids))

    async def delete_points(self, tenant: str, chunk_ids: Sequence[str]) -> None:
        """Delete the tenant's points among ``chunk_ids``; other tenants' ids match nothing."""
        scope = [pl.tenant_condition(tenant)]
        pl.check_point_ids(chunk_ids)
        if not chunk_ids:
            return
        with self._span("delete_points", tenant, **{"groundwire.points": len(chunk_ids)}):
            await self._delete("delete_points", qr.filter_of(scope, chunk_ids))

    async def delete_documents(self, tenant: str, doc_ids: Sequence[str]) -> tuple[int, int]:
        """Delete every chunk of the tenant's ``doc_ids``; (documents, chunks) deleted.

        The counts are read just before the delete: a write racing it from another replica
        can make them off by that write, never the deletion itself.
        """
        scope = [pl.tenant_condition(tenant)]
        if not doc_ids:
            return 0, 0
        with self._span("delete_documents", tenant, **{"groundwire.documents": len(doc_ids)}):
            found = pl.stored_documents(await self._scroll_documents(scope, doc_ids))
            chunks = sum(len(d.chunk_ids) for d in found.values())
            if chunks:
                doc_scope = [*scope, pl.Condition(pl.DOC_ID_KEY, tuple(set(doc_ids)))]
                await self._delete("delete_documents", qr.filter_of(doc_scope))
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
        conditions = pl.search_conditions(tenant, filters)
        pl.check_search(mode, dense, sparse, limit, self._require_info().dimension)
        parts = qr.query_parts(
            conditions, mode, dense, sparse, limit, hnsw=self._hnsw, hnsw_ef=self._hnsw_ef
        )
        with self._span(
            "search", tenant, **{"groundwire.search_mode": mode.value, "groundwire.limit": limit}
        ) as span:
            response = await self._call(
                "search",
                self._client.query_points(
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
                    timeout=self._server_timeout,
                ),
            )
            span.set_attribute("groundwire.hits", len(response.points))
        chunks = [
            ScoredChunk(pl.chunk_record(p.id, p.payload), float(p.score)) for p in response.points
        ]
        return pl.ranked(chunks)

    async def count(self, tenant: str) -> int:
        """The exact number of the tenant's points."""
        scope = [pl.tenant_condition(tenant)]
        with self._span("count", tenant):
            result = await self._call(
                "count",
                self._client.count(
                    self._collection,
                    count_filter=qr.filter_of(scope),
                    exact=True,
                    timeout=self._server_timeout,
                ),
            )
        return result.count

    async def close(self) -> None:
        """Close the client (and its connections)."""
        with self._span("close"):
            await self._call("close", self._client.close())

    # -- internals -------------------------------------------------------------------------

    def _span(
        self, op: str, tenant: str | None = None, **extra: str | int
    ) -> AbstractContextManager[Span]:
        return pl.store_span(
            op, backend="qdrant", collection=self._collection, tenant=tenant, **extra
        )

    async def _call(self, op: str, call: Awaitable[T]) -> T:
        """Await a client call within the timeout, mapping vendor failures to ours."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except TimeoutError as exc:
            ours = f"vector store unavailable: {op} timed out after {self._timeout_s} s"
            self._vendor_log(op, f"collection {self._collection!r}: timed out", ours=ours)
            raise VectorStoreUnavailableError(ours) from exc
        except _VENDOR_ERRORS as exc:
            # qdrant-client's text names the server's host:port and, over gRPC, carries
            # debug_error_string: the log gets it, the caller gets our words.
            ours = f"vector store unavailable: {op} failed"
            self._vendor_log(op, f"collection {self._collection!r}: {_vendor_text(exc)}", ours=ours)
            raise VectorStoreUnavailableError(ours) from exc

    def _require_info(self) -> CollectionInfo:
        if self._info is None:
            raise RuntimeError("QdrantVectorStore used before ensure_collection()")
        return self._info

    async def _exists(self) -> bool:
        return await self._call(
            "collection_exists", self._client.collection_exists(self._collection)
        )

    async def _create(self, info: CollectionInfo) -> None:
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
            self._client.create_collection(
                self._collection,
                vectors_config=vectors,
                sparse_vectors_config={
                    pl.SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
                replication_factor=self._replication_factor,
                write_consistency_factor=self._write_consistency_factor,
                # m=0 with payload_m: one graph per tenant and no global one, since every
                # query carries a tenant filter (Qdrant's setup for is_tenant fields).
                hnsw_config=models.HnswConfigDiff(m=0, payload_m=16),
                metadata={pl.COLLECTION_METADATA_KEY: pl.collection_metadata(info)},
                timeout=self._server_timeout,
            ),
        )

    @staticmethod
    def _indexes() -> dict[str, models.PayloadSchemaType | models.KeywordIndexParams]:
        return {
            pl.TENANT_KEY: models.KeywordIndexParams(
                type=models.KeywordIndexType.KEYWORD, is_tenant=True
            ),
            pl.DOC_ID_KEY: models.PayloadSchemaType.KEYWORD,
        }

    def _check_collection(self, described: models.CollectionInfo, wanted: CollectionInfo) -> None:
        where = f"Qdrant collection {self._collection!r}"
        metadata = described.config.metadata or {}
        stored = pl.collection_info(metadata.get(pl.COLLECTION_METADATA_KEY))
        if stored is None:
            raise EmbedderMismatchError(
                f"{where} carries no groundwire record of its embedder (metadata key "
                f"{pl.COLLECTION_METADATA_KEY!r}); it was not created by groundwire. Point "
                "GROUNDWIRE_QDRANT_COLLECTION at another collection, or delete this one."
            )
        remedy = "set GROUNDWIRE_QDRANT_COLLECTION to a new collection"
        pl.check_embedder(stored, wanted.embedder_id, wanted.dimension, where=where, remedy=remedy)
        params = described.config.params
        dense = params.vectors.get(pl.DENSE_VECTOR) if isinstance(params.vectors, dict) else None
        sparse = (params.sparse_vectors or {}).get(pl.SPARSE_VECTOR)
        if (
            (dense.size if dense else 0) != wanted.dimension
            or (dense is not None and dense.distance != models.Distance.COSINE)
            or sparse is None
            or sparse.modifier != models.Modifier.IDF
        ):
            raise EmbedderMismatchError(
                f"{where} records embedder {stored.embedder_id!r}, but its vectors are not the "
                f"ones groundwire creates ({pl.DENSE_VECTOR!r}: cosine, size {wanted.dimension}; "
                f"{pl.SPARSE_VECTOR!r}: IDF); found {dense} and {sparse}. {remedy.capitalize()} "
                "and ingest the documents again."
            )

    async def _scroll_documents(
        self, scope: list[pl.Condition], doc_ids: Sequence[str]
    ) -> list[tuple[object, dict[str, object] | None]]:
        request_filter = qr.filter_of([*scope, pl.Condition(pl.DOC_ID_KEY, tuple(set(doc_ids)))])
        found: list[tuple[object, dict[str, object] | None]] = []
        offset: types.PointId | None = None
        while True:
            page, offset = await self._call(
                "scroll",
                self._client.scroll(
                    self._collection,
                    scroll_filter=request_filter,
                    limit=pl.SCROLL_PAGE,
                    offset=offset,
                    with_payload=list(pl.STORED_DOCUMENT_FIELDS),
                    consistency=self._read_consistency,
                    timeout=self._server_timeout,
                ),
            )
            found.extend((record.id, record.payload) for record in page)
            if offset is None:
                return found

    async def _delete(self, op: str, selector: models.Filter) -> None:
        await self._call(
            op,
            self._client.delete(
                self._collection,
                points_selector=models.FilterSelector(filter=selector),
                wait=True,
                timeout=self._server_timeout,
            ),
        )


def _vendor_text(exc: BaseException) -> str:
    """The vendor's description of ``exc`` for the log (gRPC errors keep theirs apart)."""
    if isinstance(exc, grpc.RpcError):
        code = getattr(exc, "code", None)
        details = getattr(exc, "details", None)
        if callable(code) and callable(details):
            return f"{type(exc).__name__} {code()}: {details()}"
    return f"{type(exc).__name__}: {exc}"
