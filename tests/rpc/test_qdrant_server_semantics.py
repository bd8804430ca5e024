"""What only a real Qdrant server shows: the version check, sparse scores kept to the tenant
on a 1.18 server (a shard per tenant in distributed mode, sparse refused without it), the
tenant index and per-tenant HNSW in the collection info, cluster settings applied to an
existing collection or reported as drift, read consistency from the settings on the wire (a
3-peer cluster with a peer down).

The shared binary is Qdrant 1.18.3, which ignores ``SearchParams.idf``: the first test shows
what that would cost, the others that groundwire does not pay it. Sparse-only servers
(``dense=None``) load no model.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from qdrant_client import AsyncQdrantClient, models

from groundwire.clients.errors import SparseScopeUnavailableError
from groundwire.clients.models import ChunkPoint, ChunkRecord, SearchMode, SparseVector, point_id
from groundwire.clients.vector_store import QdrantVectorStore
from groundwire.clients.vector_store import qdrant_tenancy as qt
from groundwire.server.settings import load_settings
from groundwire.v1 import documents_pb2, retrieval_pb2
from tests.qdrant_server import QdrantCluster, QdrantServer, qdrant_binary
from tests.rpc.conftest import KEY_A, KEY_B, Running, ServerFactory, auth

TENANT_KEY = "tenant"  # payload.TENANT_KEY, spelled out: the test reads the server's view


def client_of(server: QdrantServer) -> AsyncQdrantClient:
    return AsyncQdrantClient(
        url=server.url, grpc_port=server.grpc_port, prefer_grpc=True, check_compatibility=False
    )


def store_on(server: QdrantServer, collection: str, **options: object) -> QdrantVectorStore:
    return QdrantVectorStore(client_of(server), collection, url=server.url, **options)  # type: ignore[arg-type]


@pytest.fixture
async def admin(qdrant_peer: QdrantServer) -> AsyncIterator[AsyncQdrantClient]:
    client = client_of(qdrant_peer)
    yield client
    await client.close()


def collection_name() -> str:
    return f"sem_{uuid.uuid4().hex[:10]}"


DOCS_A = [
    documents_pb2.Document(doc_id="lava", text="Lava flows from the volcano after magma rises."),
    documents_pb2.Document(doc_id="ash", text="Volcanic ash falls far from the crater."),
    documents_pb2.Document(doc_id="bread", text="Sourdough bread needs a lively starter."),
]
# Tenant B writes many chunks with the query's words: with IDF over every tenant, A's sparse
# scores for the query would drop (the issue measured 41.50 → 32.45 for the first hit).
DOCS_B = [
    documents_pb2.Document(doc_id=f"b{i}", text=f"Magma and volcano notes, number {i}.")
    for i in range(30)
]
QUESTION = "volcano magma"


async def sparse_scores(running: Running, key: str = KEY_A) -> list[tuple[str, float]]:
    response = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(
            query=QUESTION, top_k=5, mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE, bypass_cache=True
        ),
        metadata=auth(key),
    )
    return [(c.doc_id, c.score) for c in response.chunks]


async def test_one_shard_for_every_tenant_mixes_their_sparse_scores_on_1_18(
    qdrant_server: QdrantServer,
) -> None:
    """Why the store does not rely on ``SearchParams.idf`` before 1.19: the server takes the
    parameter and ignores it."""
    client = client_of(qdrant_server)
    if qt.ServerFacts((await client.info()).version, distributed=False).scopes_idf:
        pytest.skip("this server scopes IDF itself")
    name = collection_name()
    await client.create_collection(
        name,
        vectors_config={},
        sparse_vectors_config={"s": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )

    def point(i: int, tenant: str, terms: list[int]) -> models.PointStruct:
        vector = models.SparseVector(indices=terms, values=[1.0] * len(terms))
        return models.PointStruct(id=i, vector={"s": vector}, payload={TENANT_KEY: tenant})

    tenant_a = models.Filter(
        must=[models.FieldCondition(key=TENANT_KEY, match=models.MatchValue(value="a"))]
    )

    async def scores() -> list[float]:
        found = await client.query_points(
            name,
            query=models.SparseVector(indices=[1, 2], values=[1.0, 1.0]),
            using="s",
            query_filter=tenant_a,
            search_params=models.SearchParams(idf=models.IdfCorpusParams(corpus=tenant_a)),
        )
        return [p.score for p in found.points]

    await client.upsert(name, [point(1, "a", [1, 2]), point(2, "a", [2, 3]), point(3, "a", [3])])
    before = await scores()
    await client.upsert(name, [point(100 + i, "b", [1]) for i in range(20)])
    assert await scores() != pytest.approx(before)  # B's corpus moved A's scores
    await client.delete_collection(name)
    await client.close()


async def test_a_tenants_sparse_scores_stay_put_while_another_tenant_ingests(
    make_server: ServerFactory, qdrant_peer: QdrantServer, admin: AsyncQdrantClient
) -> None:
    name = collection_name()
    running = await make_server(dense=None, store=store_on(qdrant_peer, name))
    await running.ingest(DOCS_A, KEY_A)
    before = await sparse_scores(running)
    assert before and before[0][0] == "lava"

    await running.ingest(DOCS_B, KEY_B)
    after = await sparse_scores(running)
    assert [doc for doc, _ in after] == [doc for doc, _ in before]
    assert [score for _, score in after] == pytest.approx([score for _, score in before])
    assert {doc for doc, _ in await sparse_scores(running, KEY_B)} <= {d.doc_id for d in DOCS_B}
    # One shard per tenant, created on each tenant's first write.
    info = await admin.collection_cluster_info(name)
    keys = {s.shard_key for s in [*info.local_shards, *info.remote_shards]}
    assert keys == {"tenant-a", "tenant-b"}


async def test_the_collection_has_a_tenant_index_and_per_tenant_hnsw(
    make_server: ServerFactory, qdrant_peer: QdrantServer, admin: AsyncQdrantClient
) -> None:
    name = collection_name()
    running = await make_server(dense=None, store=store_on(qdrant_peer, name))
    await running.ingest(DOCS_A[:1], KEY_A)
    described = await admin.get_collection(name)
    tenant_index = described.payload_schema[TENANT_KEY]
    assert tenant_index.data_type == models.PayloadSchemaType.KEYWORD
    assert isinstance(tenant_index.params, models.KeywordIndexParams)
    assert tenant_index.params.is_tenant is True
    # No global graph (every query filters by tenant), one graph per tenant value instead.
    assert described.config.hnsw_config.m == 0
    assert described.config.hnsw_config.payload_m == 16
    assert described.config.params.sharding_method == models.ShardingMethod.CUSTOM


async def test_without_distributed_mode_sparse_and_hybrid_are_refused_by_name(
    make_server: ServerFactory, qdrant_server: QdrantServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_on(qdrant_server, collection_name())
    with caplog.at_level(logging.INFO, logger="groundwire.clients.vector_store"):
        running = await make_server(dense=None, store=store)
    facts = store._facts  # what the store learnt at start
    assert facts is not None and not facts.distributed
    if facts.scopes_idf:
        pytest.skip("this server scopes IDF itself")
    versions = [getattr(r, "qdrant_version", None) for r in caplog.records]
    assert facts.version in versions  # logged at start
    assert any(r.levelno == logging.WARNING and "sparse" in r.getMessage() for r in caplog.records)

    await running.ingest(DOCS_A, KEY_A)  # writes work; only the scoring is refused
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sparse_scores(running)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"Qdrant {facts.version}" in (caught.value.details() or "")
    with pytest.raises(SparseScopeUnavailableError, match=r"1\.19 or later"):
        await store.search(
            "tenant-a", mode=SearchMode.SPARSE, dense=None, sparse=SparseVector([1], [1.0]), limit=3
        )


async def test_cluster_settings_are_applied_to_an_existing_collection_or_reported(
    qdrant_peer: QdrantServer, admin: AsyncQdrantClient, caplog: pytest.LogCaptureFixture
) -> None:
    name = collection_name()
    first = store_on(qdrant_peer, name)
    await first.ensure_collection("", 0)
    await first.upsert("tenant-a", [sparse_chunk("tenant-a")])  # the tenant's shard: 1 replica
    await first.close()
    params = (await admin.get_collection(name)).config.params
    assert (params.replication_factor, params.write_consistency_factor) == (1, 1)

    # Later the deployment asks for more: both parameters change on the collection, and the
    # replicas Qdrant does not add by itself are reported (one peer holds one replica).
    again = store_on(qdrant_peer, name, replication_factor=2, write_consistency_factor=2)
    with caplog.at_level(logging.WARNING, logger="groundwire.clients.vector_store"):
        await again.ensure_collection("", 0)
    params = (await admin.get_collection(name)).config.params
    assert (params.replication_factor, params.write_consistency_factor) == (2, 2)
    drift = [r for r in caplog.records if "drift" in r.getMessage()]
    assert len(drift) == 1
    fields = drift[0].__dict__  # the record's structured fields
    assert fields["setting"] == "GROUNDWIRE_QDRANT_REPLICATION_FACTOR"
    assert fields["wanted"] == 2
    assert list(fields["actual"].values()) == [1]
    await again.close()


def sparse_chunk(tenant: str) -> ChunkPoint:
    record = ChunkRecord(
        chunk_id=point_id(tenant, "doc", 0),
        doc_id="doc",
        chunk_index=0,
        text="Magma rises.",
        title="",
        source_uri="",
        metadata={},
        content_hash="h",
    )
    return ChunkPoint(record, None, SparseVector([1, 2], [1.0, 1.0]))


@pytest.mark.parametrize(
    ("consistency", "ordering"), [("all", "strong"), ("majority", "medium"), ("1", "weak")]
)
async def test_read_consistency_and_write_ordering_come_from_settings(
    make_server: ServerFactory, qdrant_peer: QdrantServer, consistency: str, ordering: str
) -> None:
    settings = load_settings(
        qdrant_read_consistency=consistency, qdrant_write_ordering=ordering, redis_url=None
    )
    store = store_on(
        qdrant_peer,
        collection_name(),
        read_consistency=qt.read_consistency(settings.qdrant_read_consistency),
        write_ordering=qt.write_ordering(settings.qdrant_write_ordering),
    )
    running = await make_server(dense=None, store=store)
    await running.ingest(DOCS_A, KEY_A)
    assert (await sparse_scores(running))[0][0] == "lava"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("qdrant_read_consistency", "most"),
        ("qdrant_read_consistency", "0"),
        ("qdrant_write_ordering", "eventual"),
    ],
)
def test_bad_consistency_settings_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(Exception, match=variable.upper()):
        load_settings(**{variable: value})


def test_versions_parse_and_choose_the_scope() -> None:
    assert qt.parse_version("1.18.3") == (1, 18, 3)
    assert qt.parse_version("v1.19") == (1, 19, 0)
    assert qt.parse_version("dev") is None
    old, new = qt.ServerFacts("1.18.3", distributed=True), qt.ServerFacts("1.19.0", False)
    custom = models.ShardingMethod.CUSTOM
    assert qt.choose_scope(new, None) is qt.SparseScope.CORPUS_FILTER
    assert qt.choose_scope(new, custom) is qt.SparseScope.TENANT_SHARDS
    assert qt.choose_scope(old, None) is qt.SparseScope.TENANT_SHARDS
    assert qt.choose_scope(old, models.ShardingMethod.AUTO) is qt.SparseScope.UNSCOPED
    plain = qt.ServerFacts("1.18.3", distributed=False)
    assert qt.choose_scope(plain, None) is qt.SparseScope.UNSCOPED


async def test_read_consistency_reaches_the_search_on_a_cluster(
    make_server: ServerFactory,
) -> None:
    """Three peers, every tenant shard on all three: with one peer down a search that needs
    every replica (``all``) fails while one with Qdrant's default still answers, so the
    setting is on the wire, not only in the settings object."""
    binary = qdrant_binary()
    if binary is None:
        pytest.skip("no Qdrant binary: set GROUNDWIRE_TEST_QDRANT_BIN")
    with QdrantCluster(binary, peers=3) as cluster:
        entry, name = cluster.peers[0], collection_name()
        settings = load_settings(qdrant_read_consistency="all", redis_url=None)
        strict = store_on(
            entry,
            name,
            replication_factor=3,
            read_consistency=qt.read_consistency(settings.qdrant_read_consistency),
        )
        relaxed = store_on(entry, name, replication_factor=3)
        on_all = await make_server(dense=None, store=strict)
        on_one = await make_server(dense=None, store=relaxed)
        await on_one.ingest(DOCS_A, KEY_A)
        assert (await sparse_scores(on_all))[0][0] == "lava"  # every replica up: both answer

        cluster.peers[2].kill()
        assert (await sparse_scores(on_one))[0][0] == "lava"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sparse_scores(on_all)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
