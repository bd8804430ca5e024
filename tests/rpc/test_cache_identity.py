"""Shared state in Redis belongs to one index: two deployments on one Redis never see each
other's cache entries; replicas of one deployment (one Qdrant collection) share them.

The reproduction of issue 12: two sparse-only servers with their own Edge stores on one
Redis, apples ingested into the first and bananas into the second; the second must answer
bananas, never the first's cached apples. Sparse-only servers (``dense=None``) load no model.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from qdrant_client import AsyncQdrantClient

from groundwire.clients.vector_store import QdrantVectorStore
from groundwire.testing.scripted_llm import ScriptedLLM
from groundwire.v1 import documents_pb2, generation_pb2, retrieval_pb2
from tests.qdrant_server import QdrantServer
from tests.rpc.conftest import KEY_A, Running, ServerFactory, auth
from tests.rpc.generation import collect, passages_request

APPLES = documents_pb2.Document(
    doc_id="fruit", title="Apples", text="Apples are red fruit grown in orchards."
)
BANANAS = documents_pb2.Document(
    doc_id="fruit", title="Bananas", text="Bananas are yellow fruit grown in the tropics."
)
QUESTION = retrieval_pb2.RetrieveRequest(query="fruit grown", top_k=3)


async def retrieve(running: Running) -> retrieval_pb2.RetrieveResponse:
    response = await running.retrieval.Retrieve(QUESTION, metadata=auth(KEY_A))
    await running.settle()  # the entry is written in the background
    return response  # type: ignore[no-any-return]


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_two_edge_stores_on_one_redis_never_see_each_others_entries(
    make_server: ServerFactory, raw_redis: aioredis.Redis
) -> None:
    apples, bananas = await make_server(dense=None), await make_server(dense=None)
    await apples.ingest([APPLES])
    await bananas.ingest([BANANAS])

    first = await retrieve(apples)
    again = await retrieve(apples)
    assert not first.cache_hit and again.cache_hit  # the entry is there to be found
    assert "Apples" in again.chunks[0].text

    answer = await retrieve(bananas)
    assert not answer.cache_hit
    assert [c.text for c in answer.chunks] == ["Bananas are yellow fruit grown in the tropics."]
    assert (await retrieve(bananas)).cache_hit  # its own entry, under its own namespace

    spaces = {r.server.components.namespace for r in (apples, bananas)}
    assert len(spaces) == 2
    keys = [key.decode() async for key in raw_redis.scan_iter("*")]
    assert keys and all(any(key.startswith(f"{ns}:") for ns in spaces) for key in keys)
    # Index versions are per index too: each server bumped only its own.
    for running in (apples, bananas):
        ns = running.server.components.namespace
        assert await raw_redis.get(f"{ns}:idxver:{{tenant-a}}") == b"1"


async def test_answers_cached_by_one_deployment_are_not_replayed_by_another(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    first = await make_server(dense=None, llm_base_url=llm.base_url)
    second = await make_server(dense=None, llm_base_url=llm.base_url)
    await collect(first.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    await first.settle()
    assert len(llm.requests) == 1

    stream = await collect(second.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    await second.settle()
    assert stream.start.route == generation_pb2.ROUTE_PRIMARY and not stream.start.cache_hit
    assert len(llm.requests) == 2
    stream = await collect(second.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    assert stream.start.cache_hit and len(llm.requests) == 2


def qdrant_store(server: QdrantServer, collection: str) -> QdrantVectorStore:
    """A store on the real server, named by its URL as ``QdrantVectorStore.connect`` names
    it (the client needs the server's free gRPC port, which ``connect`` cannot be told)."""
    client = AsyncQdrantClient(
        url=server.url,
        grpc_port=server.grpc_port,
        prefer_grpc=True,
        timeout=5,
        check_compatibility=False,  # the shared binary is one minor version behind the client
    )
    return QdrantVectorStore(client, collection, url=server.url)


async def test_replicas_on_one_qdrant_collection_share_entries_and_invalidations(
    make_server: ServerFactory, qdrant_peer: QdrantServer
) -> None:
    # Sparse-only servers: the 1.18 binary scopes sparse scores to the tenant only in
    # distributed mode (a shard per tenant), so the peer rather than the plain server.
    collection = f"shared_{uuid.uuid4().hex[:8]}"
    one = await make_server(dense=None, store=qdrant_store(qdrant_peer, collection))
    two = await make_server(dense=None, store=qdrant_store(qdrant_peer, collection))
    other = await make_server(dense=None, store=qdrant_store(qdrant_peer, collection + "_x"))
    assert one.server.components.namespace == two.server.components.namespace
    assert other.server.components.namespace != one.server.components.namespace

    await one.ingest([APPLES])
    assert not (await retrieve(one)).cache_hit
    shared = await retrieve(two)
    assert shared.cache_hit and "Apples" in shared.chunks[0].text
    assert not (await retrieve(other)).cache_hit  # another collection: nothing shared

    # An ingest through one replica orphans what every replica cached for the tenant.
    await two.ingest([documents_pb2.Document(doc_id="more", text="Bananas are fruit grown too.")])
    after = await retrieve(one)
    assert not after.cache_hit
    assert {c.doc_id for c in after.chunks} == {"fruit", "more"}
