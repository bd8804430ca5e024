"""One contract for both VectorStores: Qdrant Edge on disk, qdrant-client's local mode and a
real Qdrant server.

Every test in the first part runs against each of them with the same tiny corpus of hand-made
vectors (dimension 4; sparse term ids stand for words), so any difference between the
embedded default and production shows up here. The real server is the 1.18 binary in
distributed mode (one peer), where the store gives each tenant a shard of its own to keep
sparse scores per tenant (see ``qdrant_tenancy``); each test gets fresh collections. Without
the binary those cases skip, naming the variable that points at it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from groundwire.clients.errors import EmbedderMismatchError, VectorStoreUnavailableError
from groundwire.clients.models import (
    ChunkPoint,
    ChunkRecord,
    FieldMatch,
    ScoredChunk,
    SearchMode,
    SparseVector,
    point_id,
)
from groundwire.clients.ports import VectorStore
from groundwire.clients.vector_store import EdgeVectorStore, QdrantVectorStore
from groundwire.clients.vector_store.qdrant_connection import QdrantNodes, Timeouts
from groundwire.testing.redis_process import free_port
from tests.qdrant_server import QdrantServer

A = "acme"
B = "globex"
EMBEDDER = "test/4"

# Sparse term ids, as a BM25 encoder would hash words.
CAT, DOG, FISH, SCALE, PET, BIRD = 1, 2, 3, 4, 5, 6


def chunk(
    tenant: str,
    doc_id: str,
    index: int,
    dense: list[float] | None,
    terms: Mapping[int, float],
    meta: Mapping[str, str | int] | None = None,
    content_hash: str = "h1",
) -> ChunkPoint:
    """A chunk whose id is derived the way ingest derives it."""
    record = ChunkRecord(
        chunk_id=point_id(tenant, doc_id, index),
        doc_id=doc_id,
        chunk_index=index,
        text=f"{tenant} {doc_id} #{index}",
        title=f"About {doc_id}",
        source_uri=f"https://example.test/{tenant}/{doc_id}",
        metadata=dict(meta or {}),
        content_hash=content_hash,
    )
    return ChunkPoint(record, dense, SparseVector(list(terms), list(terms.values())))


CORPUS_A = [
    chunk(
        A,
        "cat",
        0,
        [1, 0, 0, 0],
        {CAT: 1, PET: 1},
        {"lang": "en", "year": 2020, "source.kind": "web", "2020": 1},
    ),
    chunk(A, "dog", 0, [0, 1, 0, 0], {DOG: 1, PET: 1}, {"lang": "de", "year": 2021}),
    chunk(A, "fish", 0, [0, 0, 1, 0], {FISH: 2}, {"lang": "fr", "year": 2022}),
    chunk(A, "fish", 1, [0, 0, 0.9, 0.1], {FISH: 1, SCALE: 1}, {"lang": "fr", "year": 2022}),
]
# Tenant B matches A's queries as well as or better than A's own chunks, and shares the doc
# id "cat": any leak between tenants would surface.
CORPUS_B = [
    chunk(B, "cat", 0, [1, 0, 0, 0], {CAT: 3, PET: 1}, {"lang": "en", "year": 2020}),
    chunk(B, "bird", 0, [0, 0, 0, 1], {BIRD: 1}, {"lang": "en", "year": 2020}),
]
IDS_A = {p.record.chunk_id for p in CORPUS_A}
IDS_B = {p.record.chunk_id for p in CORPUS_B}
RECORDS = {p.record.chunk_id: p.record for p in CORPUS_A + CORPUS_B}


def sparse(terms: Mapping[int, float]) -> SparseVector:
    return SparseVector(list(terms), list(terms.values()))


@dataclass
class Stores:
    """Opens stores of one backend; closes them after the test."""

    backend: str
    tmp_path: Path
    server: QdrantServer | None = None
    client: AsyncQdrantClient = field(default_factory=lambda: AsyncQdrantClient(":memory:"))
    opened: list[VectorStore] = field(default_factory=list)
    # Collections of their own on the shared server: tests never see each other's data.
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def tenant_shards(self) -> bool:
        """Whether tenants live in shards of their own (the real 1.18 server)."""
        return self.server is not None

    def new(self, name: str = "chunks") -> VectorStore:
        store: VectorStore
        if self.backend == "edge":
            store = EdgeVectorStore(self.tmp_path / name)
        elif self.server is not None:
            store = QdrantVectorStore(
                server_client(self.server),
                f"{name}-{self.suffix}",
                timeout_s=30,
                url=self.server.url,
            )
        else:
            # The same client stands for the same server: a second store sees the same data.
            store = QdrantVectorStore(self.client, name)
        self.opened.append(store)
        return store

    async def open(
        self, embedder_id: str = EMBEDDER, dimension: int = 4, name: str = "chunks"
    ) -> VectorStore:
        store = self.new(name)
        await store.ensure_collection(embedder_id, dimension)
        return store

    async def reopen(
        self,
        store: VectorStore,
        embedder_id: str = EMBEDDER,
        dimension: int = 4,
        name: str = "chunks",
    ) -> VectorStore:
        """Another store on the same data (Edge: the first must let go of the directory)."""
        if self.backend == "edge":
            await store.close()
        return await self.open(embedder_id, dimension, name)

    async def close(self) -> None:
        if self.backend == "qdrant":
            await self.client.close()
            return
        for store in self.opened:
            await store.close()
        if self.server is not None:
            admin = server_client(self.server)
            for described in (await admin.get_collections()).collections:
                if described.name.endswith(self.suffix):
                    await admin.delete_collection(described.name)
            await admin.close()


def server_client(server: QdrantServer) -> AsyncQdrantClient:
    """A gRPC client of the real server (its version is checked by the store, not here)."""
    return AsyncQdrantClient(
        url=server.url, grpc_port=server.grpc_port, prefer_grpc=True, check_compatibility=False
    )


BACKENDS = ["edge", "qdrant", "qdrant-server"]


def backend_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    """Stores of the backend ``request.param`` names; the server only when it is asked for."""
    if request.param == "qdrant-server":
        return Stores(request.param, tmp_path, server=request.getfixturevalue("qdrant_peer"))
    return Stores(request.param, tmp_path)


async def fill(store: VectorStore) -> VectorStore:
    """Both tenants' corpora, one document per upsert as ingest writes them."""
    for doc_id in ("cat", "dog", "fish"):
        await store.upsert(A, [p for p in CORPUS_A if p.record.doc_id == doc_id])
    await store.upsert(B, CORPUS_B)
    return store


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    factory = backend_stores(request, tmp_path)
    yield factory
    await factory.close()


@pytest.fixture
async def store(stores: Stores) -> VectorStore:
    """A store of its own holding both corpora, for tests that write."""
    return await fill(await stores.open())


@pytest.fixture(scope="module", params=BACKENDS)
async def corpus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[VectorStore]:
    """One store per backend holding both corpora, shared by the tests that only read
    (creating an Edge shard with its indexes takes about half a second)."""
    factory = backend_stores(request, tmp_path_factory.mktemp("corpus"))
    yield await fill(await factory.open())
    await factory.close()


@dataclass(frozen=True)
class Query:
    """A search as the pipeline would send it, minus the tenant."""

    mode: SearchMode
    dense: list[float] | None = None
    sparse: SparseVector | None = None

    async def run(
        self,
        store: VectorStore,
        tenant: str,
        *,
        limit: int = 10,
        filters: tuple[FieldMatch, ...] = (),
        min_score: float | None = None,
    ) -> list[ScoredChunk]:
        return await store.search(
            tenant,
            mode=self.mode,
            dense=self.dense,
            sparse=self.sparse,
            limit=limit,
            filters=filters,
            min_score=min_score,
        )

    async def ids(self, store: VectorStore, tenant: str) -> list[str]:
        return [hit.record.chunk_id for hit in await self.run(store, tenant)]


def dense(*vector: float) -> Query:
    return Query(SearchMode.DENSE, dense=list(vector))


def lexical(terms: Mapping[int, float]) -> Query:
    return Query(SearchMode.SPARSE, sparse=sparse(terms))


def hybrid(vector: list[float], terms: Mapping[int, float]) -> Query:
    return Query(SearchMode.HYBRID, dense=vector, sparse=sparse(terms))


# -- search ---------------------------------------------------------------------------------


async def test_dense_search_ranks_the_nearest_chunk_first(corpus: VectorStore) -> None:
    hits = await dense(1, 0.1, 0, 0).run(corpus, A)
    assert hits[0].record == RECORDS[point_id(A, "cat", 0)]  # the whole record comes back
    assert hits[0].score == pytest.approx(0.995, abs=1e-3)  # cosine
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert {h.record.chunk_id for h in hits} == IDS_A


async def test_sparse_search_ranks_the_matching_chunk_first(corpus: VectorStore) -> None:
    hits = await lexical({DOG: 1}).run(corpus, A)
    assert [h.record.chunk_id for h in hits] == [point_id(A, "dog", 0)]
    assert hits[0].score > 0


async def test_hybrid_search_fuses_both_rankings(corpus: VectorStore) -> None:
    # Dense alone prefers the cat; the sparse evidence for "dog" tips the fusion.
    assert (await dense(0.6, 0.5, 0, 0).ids(corpus, A))[0] == point_id(A, "cat", 0)
    hits = await hybrid([0.6, 0.5, 0, 0], {DOG: 1}).run(corpus, A)
    assert hits[0].record.chunk_id == point_id(A, "dog", 0)
    # Reciprocal rank fusion with Qdrant's k=2: 1/(2+1) for dense rank 2, 1/2 for sparse rank 1.
    assert hits[0].score == pytest.approx(1 / 3 + 1 / 2)
    assert {h.record.chunk_id for h in hits} == IDS_A


async def test_a_query_without_terms_leaves_hybrid_to_the_dense_side(corpus: VectorStore) -> None:
    # A query of stopwords only encodes to an empty sparse vector.
    assert await lexical({}).ids(corpus, A) == []
    assert (await hybrid([1, 0, 0, 0], {}).ids(corpus, A))[0] == point_id(A, "cat", 0)


# -- tenancy --------------------------------------------------------------------------------

# B's chunks match these at least as well as A's own.
EVERY_MODE = [
    dense(1, 0, 0, 0.2),
    lexical({CAT: 1, PET: 1, BIRD: 1}),
    hybrid([1, 0, 0, 0.2], {CAT: 1, PET: 1, BIRD: 1}),
]


@pytest.mark.parametrize("query", EVERY_MODE, ids=lambda q: q.mode.value)
async def test_a_tenant_sees_only_its_own_chunks(corpus: VectorStore, query: Query) -> None:
    seen_by_a = await query.ids(corpus, A)
    seen_by_b = await query.ids(corpus, B)
    assert seen_by_a and set(seen_by_a) <= IDS_A
    assert seen_by_b and set(seen_by_b) <= IDS_B
    assert await query.ids(corpus, "nobody") == []


async def test_counts_are_per_tenant(corpus: VectorStore) -> None:
    assert await corpus.count(A) == 4
    assert await corpus.count(B) == 2
    assert await corpus.count("nobody") == 0


async def test_delete_points_only_deletes_the_callers_points(store: VectorStore) -> None:
    await store.delete_points(B, sorted(IDS_A))
    assert await store.count(A) == 4
    await store.delete_points(A, [point_id(A, "fish", 1), point_id(B, "cat", 0)])
    assert await store.count(A) == 3
    assert await store.count(B) == 2


async def test_delete_documents_only_deletes_the_callers_documents(store: VectorStore) -> None:
    assert await store.delete_documents(B, ["cat", "dog"]) == (1, 1)  # B has no "dog"
    assert set(await store.stored_documents(A, ["cat", "dog"])) == {"cat", "dog"}
    assert await store.count(A) == 4
    assert await store.count(B) == 1


async def test_stored_documents_are_per_tenant(corpus: VectorStore) -> None:
    assert await corpus.stored_documents(B, ["dog", "fish"]) == {}
    stored = await corpus.stored_documents(B, ["cat"])
    assert stored["cat"].chunk_ids == {0: point_id(B, "cat", 0)}


async def test_an_upsert_cannot_take_over_another_tenants_point(
    stores: Stores, store: VectorStore
) -> None:
    stolen = replace(CORPUS_A[0].record, text="overwritten by B", content_hash="evil")
    await store.upsert(B, [ChunkPoint(stolen, [1, 0, 0, 0], sparse({CAT: 1}))])
    hits = await dense(1, 0, 0, 0).run(store, A, limit=1)
    assert hits[0].record == CORPUS_A[0].record
    assert await store.count(A) == 4
    # With a shard per tenant the id is free in B's shard: B's write lands there, as B's
    # point, and A's stays A's. With one shard for all, the write is refused instead.
    assert await store.count(B) == (3 if stores.tenant_shards else 2)


async def test_sparse_scores_ignore_other_tenants_corpora(store: VectorStore) -> None:
    # IDF is computed over the tenant's own chunks: B's documents cannot move A's scores.
    before = await lexical({CAT: 1}).run(store, A)
    await store.upsert(B, [chunk(B, f"cats-{i}", 0, [1, 0, 0, 0], {CAT: 1}) for i in range(20)])
    after = await lexical({CAT: 1}).run(store, A)
    assert [h.score for h in after] == pytest.approx([h.score for h in before])


# -- filters and thresholds -----------------------------------------------------------------

# Queries that reach every chunk of tenant A, so the filter alone decides what comes back.
MATCH_ALL = [
    dense(1, 1, 1, 1),
    lexical({PET: 1, FISH: 1}),
    hybrid([1, 1, 1, 1], {PET: 1, FISH: 1}),
]


@pytest.mark.parametrize("query", MATCH_ALL, ids=lambda q: q.mode.value)
@pytest.mark.parametrize(
    ("filters", "docs"),
    [
        ((FieldMatch("lang", ("en",)),), {"cat"}),
        ((FieldMatch("lang", ("en", "de")),), {"cat", "dog"}),
        ((FieldMatch("year", (2021,)),), {"dog"}),
        ((FieldMatch("year", (2020, 2022)),), {"cat", "fish"}),
        ((FieldMatch("lang", ("fr",)), FieldMatch("year", (2022,))), {"fish"}),
        ((FieldMatch("lang", ("en",)), FieldMatch("year", (2021,))), set()),
        ((FieldMatch("lang", ("xx",)),), set()),
        ((FieldMatch("missing", ("en",)),), set()),
        # Keys that are not plain names are quoted into the JSON path, never parsed as one.
        ((FieldMatch("source.kind", ("web",)),), {"cat"}),
        ((FieldMatch("source", ("web",)),), set()),
        ((FieldMatch("2020", (1,)),), {"cat"}),
    ],
)
async def test_filters_select_on_metadata(
    corpus: VectorStore, query: Query, filters: tuple[FieldMatch, ...], docs: set[str]
) -> None:
    hits = await query.run(corpus, A, filters=filters)
    assert {h.record.doc_id for h in hits} == docs
    assert {h.record.chunk_id for h in hits} <= IDS_A


@pytest.mark.parametrize(
    "query",
    [dense(1, 0.1, 0, 0), lexical({CAT: 1, PET: 1}), hybrid([1, 0.1, 0, 0], {CAT: 1, PET: 1})],
    ids=lambda q: q.mode.value,
)
async def test_min_score_drops_weaker_hits(corpus: VectorStore, query: Query) -> None:
    hits = await query.run(corpus, A)
    assert len(hits) >= 2 and hits[0].score > hits[1].score
    threshold = (hits[0].score + hits[1].score) / 2  # for hybrid: the fused score
    kept = await query.run(corpus, A, min_score=threshold)
    assert [h.record.chunk_id for h in kept] == [point_id(A, "cat", 0)]


# -- writes ---------------------------------------------------------------------------------


async def test_upserting_the_same_chunks_again_changes_nothing(store: VectorStore) -> None:
    for _ in range(3):
        await store.upsert(A, CORPUS_A)
    assert await store.count(A) == 4
    assert sorted(await dense(1, 1, 1, 1).ids(store, A)) == sorted(IDS_A)


async def test_concurrent_writes_all_land(store: VectorStore) -> None:
    docs = [[chunk(A, f"doc-{i}", 0, [0, 0, 0, 1], {BIRD: 1})] for i in range(16)]
    await asyncio.gather(*(store.upsert(A, points) for points in docs))
    assert await store.count(A) == 4 + 16
    deletions = [store.delete_documents(A, [f"doc-{i}"]) for i in range(16)]
    assert await asyncio.gather(*deletions) == [(1, 1)] * 16
    assert await store.count(A) == 4


async def test_stored_documents_report_hash_and_chunks(store: VectorStore) -> None:
    stored = await store.stored_documents(A, ["fish", "cat", "missing", "fish"])
    assert set(stored) == {"fish", "cat"}
    assert stored["fish"].content_hash == "h1"
    assert stored["fish"].chunk_ids == {0: point_id(A, "fish", 0), 1: point_id(A, "fish", 1)}
    # Chunks that disagree on the hash (a cut-short write) report none, forcing a rewrite.
    await store.upsert(A, [chunk(A, "fish", 1, [0, 0, 1, 0], {FISH: 1}, content_hash="h2")])
    assert (await store.stored_documents(A, ["fish"]))["fish"].content_hash == ""


async def test_delete_documents_counts_documents_and_chunks(store: VectorStore) -> None:
    assert await store.delete_documents(A, ["fish", "cat", "missing"]) == (2, 3)
    assert await store.count(A) == 1
    assert await store.delete_documents(A, ["fish", "cat"]) == (0, 0)


async def test_empty_requests_are_no_ops(store: VectorStore) -> None:
    await store.upsert(A, [])
    await store.delete_points(A, [])
    assert await store.delete_documents(A, []) == (0, 0)
    assert await store.stored_documents(A, []) == {}
    assert await store.count(A) == 4


@pytest.mark.parametrize(
    ("query", "limit", "filters"),
    [
        (dense(1, 0), 5, ()),  # wrong dimension
        (dense(1, 0, 0, 0), 0, ()),
        (Query(SearchMode.SPARSE), 5, ()),
        (Query(SearchMode.HYBRID, sparse=sparse({CAT: 1})), 5, ()),
        (Query(SearchMode.SPARSE, sparse=SparseVector([1], [])), 5, ()),
        (dense(1, 0, 0, 0), 5, (FieldMatch('a"b', ("x",)),)),
        (dense(1, 0, 0, 0), 5, (FieldMatch("lang", ("en", 1)),)),
        (dense(1, 0, 0, 0), 5, (FieldMatch("lang", ()),)),
    ],
)
async def test_bad_searches_are_refused(
    corpus: VectorStore, query: Query, limit: int, filters: tuple[FieldMatch, ...]
) -> None:
    with pytest.raises(ValueError):
        await query.run(corpus, A, limit=limit, filters=filters)


async def test_bad_writes_are_refused(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="dimension"):
        await store.upsert(A, [chunk(A, "x", 0, [1, 0], {CAT: 1})])
    with pytest.raises(ValueError, match="UUID"):
        await store.upsert(
            A, [ChunkPoint(replace(CORPUS_A[0].record, chunk_id="7"), [1, 0, 0, 0], None)]
        )
    with pytest.raises(ValueError, match="UUID"):
        await store.delete_points(A, ["not-an-id"])
    with pytest.raises(ValueError, match="tenant"):
        await store.count("")
    assert await store.count(A) == 4


# -- collection identity --------------------------------------------------------------------


@pytest.mark.parametrize(("embedder_id", "dimension"), [("other/4", 4), ("test/8", 8), ("", 0)])
async def test_another_embedder_is_refused(
    stores: Stores, store: VectorStore, embedder_id: str, dimension: int
) -> None:
    with pytest.raises(EmbedderMismatchError) as caught:
        await stores.reopen(store, embedder_id, dimension)
    assert "'test/4' (dimension 4)" in caught.value.message
    assert "ingest the documents again" in caught.value.message


async def test_the_same_embedder_reopens_the_data(stores: Stores, store: VectorStore) -> None:
    again = await stores.reopen(store)
    await again.ensure_collection(EMBEDDER, 4)  # idempotent
    assert await again.count(A) == 4
    assert await lexical({DOG: 1}).ids(again, A) == [point_id(A, "dog", 0)]


async def test_a_sparse_only_store_needs_no_dense_vectors(stores: Stores) -> None:
    store = await stores.open("", 0, name="sparse-only")
    await store.upsert(A, [replace(p, dense=None) for p in CORPUS_A])
    assert await lexical({DOG: 1}).ids(store, A) == [point_id(A, "dog", 0)]
    for mode in (SearchMode.DENSE, SearchMode.HYBRID):
        with pytest.raises(ValueError, match="sparse-only"):
            await store.search(A, mode=mode, dense=[1, 0, 0, 0], sparse=sparse({DOG: 1}), limit=3)
    with pytest.raises(ValueError, match="sparse-only"):
        await store.upsert(A, CORPUS_A[:1])
    with pytest.raises(EmbedderMismatchError, match="no dense embedder"):
        await stores.reopen(store, EMBEDDER, 4, name="sparse-only")


async def test_using_a_store_before_ensure_collection_is_a_bug(stores: Stores) -> None:
    with pytest.raises(RuntimeError, match="ensure_collection"):
        await stores.new().upsert(A, CORPUS_A)


# -- Qdrant Edge only -----------------------------------------------------------------------


def edge_record(path: Path) -> tuple[object, list[Path]]:
    """The collection record beside the shard, and any temporary file left next to it."""
    return json.loads((path / "groundwire-collection.json").read_text()), list(path.glob("*.tmp"))


async def test_edge_data_survives_close_and_reopen(tmp_path: Path) -> None:
    first = EdgeVectorStore(tmp_path)
    await first.ensure_collection(EMBEDDER, 4)
    await first.upsert(A, CORPUS_A)
    await first.close()
    await first.close()  # idempotent
    assert edge_record(tmp_path) == ({"embedder_id": EMBEDDER, "dimension": 4}, [])

    second = EdgeVectorStore(tmp_path)
    try:
        await second.ensure_collection(EMBEDDER, 4)
        assert await second.count(A) == 4
        stored = await second.stored_documents(A, ["fish"])
        assert stored["fish"].chunk_ids == {0: point_id(A, "fish", 0), 1: point_id(A, "fish", 1)}
        hits = await hybrid([0, 1, 0, 0], {DOG: 1}).ids(second, A)
        assert hits[0] == point_id(A, "dog", 0)
    finally:
        await second.close()


async def test_edge_refuses_a_second_owner_in_this_process(tmp_path: Path) -> None:
    owner = EdgeVectorStore(tmp_path)
    with pytest.raises(VectorStoreUnavailableError, match="owned by another"):
        EdgeVectorStore(tmp_path)
    await owner.close()
    successor = EdgeVectorStore(tmp_path)  # free again once the owner closed
    await successor.close()


async def test_edge_refuses_a_second_owner_in_another_process(tmp_path: Path) -> None:
    owner = EdgeVectorStore(tmp_path)
    try:
        script = (
            "import sys; from pathlib import Path\n"
            "from groundwire.clients.vector_store import EdgeVectorStore\n"
            "EdgeVectorStore(Path(sys.argv[1]))\n"
        )
        other = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, str(tmp_path), stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(other.communicate(), timeout=60)
        assert other.returncode != 0
        assert b"owned by another" in stderr
    finally:
        await owner.close()


async def test_edge_refuses_calls_after_close(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path)
    await store.ensure_collection(EMBEDDER, 4)
    await store.close()
    with pytest.raises(VectorStoreUnavailableError, match="closed"):
        await store.count(A)


async def test_edge_refuses_a_shard_without_its_record(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path)
    await store.ensure_collection(EMBEDDER, 4)
    await store.close()
    os.remove(tmp_path / "groundwire-collection.json")
    again = EdgeVectorStore(tmp_path)
    try:
        with pytest.raises(EmbedderMismatchError, match=r"no groundwire-collection\.json"):
            await again.ensure_collection(EMBEDDER, 4)
    finally:
        await again.close()


async def test_edge_with_hnsw_optimizes_and_still_finds(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path, hnsw=True, optimize_after=1)
    try:
        await store.ensure_collection(EMBEDDER, 4)
        await store.upsert(A, CORPUS_A)  # passes optimize_after: optimizes
        assert await store.optimize() is False  # nothing left to do
        hits = await dense(0, 0, 1, 0).ids(store, A)
        assert hits[0] == point_id(A, "fish", 0)
    finally:
        await store.close()


# -- qdrant-client only ---------------------------------------------------------------------


async def test_qdrant_records_the_embedder_in_collection_metadata() -> None:
    client = AsyncQdrantClient(":memory:")
    store = QdrantVectorStore(client, "chunks")
    await store.ensure_collection(EMBEDDER, 4)
    described = await client.get_collection("chunks")
    assert described.config.metadata == {"groundwire": {"embedder_id": EMBEDDER, "dimension": 4}}
    await store.close()


async def test_qdrant_refuses_a_collection_it_did_not_create() -> None:
    client = AsyncQdrantClient(":memory:")
    await client.create_collection("foreign", vectors_config={})
    store = QdrantVectorStore(client, "foreign")
    with pytest.raises(EmbedderMismatchError, match="no groundwire record"):
        await store.ensure_collection(EMBEDDER, 4)
    await store.close()


@pytest.mark.parametrize("grpc", [True, False])
async def test_qdrant_unreachable_is_unavailable(grpc: bool) -> None:
    port = free_port()
    if grpc:
        nodes = QdrantNodes.of([f"http://127.0.0.1:{port}"], timeouts=Timeouts.uniform(2))
        store = QdrantVectorStore.connect(nodes, "chunks")
    else:
        client = AsyncQdrantClient(
            url=f"http://127.0.0.1:{port}", timeout=2, check_compatibility=False
        )
        store = QdrantVectorStore(client, "chunks", timeout_s=2)
    with pytest.raises(VectorStoreUnavailableError) as caught:
        await store.ensure_collection(EMBEDDER, 4)
    assert caught.value.__cause__ is not None
    await store.close()
