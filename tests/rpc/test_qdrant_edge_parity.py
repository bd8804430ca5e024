"""The same Retrieve results on Edge and on a real Qdrant server for the same corpus, per mode.

Two servers with the real MiniLM, one on Qdrant Edge and one on the 1.18 binary (distributed
mode, a shard per tenant), ingest the same small corpus cut into short chunks (so a top 10
has something to choose from) and answer the same questions. The top-10 overlap per mode is
printed (``-s``) and must stay above a generous floor: both run exact dense search, the same
BM25 statistics over the tenant's chunks and RRF with the same constant, so the lists should
agree but for ties.
"""

from __future__ import annotations

import uuid

import pytest
from qdrant_client import AsyncQdrantClient

from groundwire.clients.vector_store import QdrantVectorStore
from groundwire.v1 import retrieval_pb2
from tests.qdrant_server import QdrantServer
from tests.rpc.conftest import KEY_A, Running, ServerFactory, auth
from tests.rpc.corpus import DOCS, PARAPHRASES, corpus

MODES = {
    "dense": retrieval_pb2.RETRIEVAL_MODE_DENSE,
    "sparse": retrieval_pb2.RETRIEVAL_MODE_SPARSE,
    "hybrid": retrieval_pb2.RETRIEVAL_MODE_HYBRID,
}
QUESTIONS = [*PARAPHRASES.values(), *(title for title, _ in DOCS.values())]
# Short chunks: the five documents become a couple of dozen chunks.
CHUNKING = {"chunk_tokens": 16, "chunk_overlap_tokens": 4}


async def top_ids(running: Running, question: str, mode: int) -> list[str]:
    response = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query=question, top_k=10, mode=mode, bypass_cache=True),
        metadata=auth(KEY_A),
    )
    return [chunk.chunk_id for chunk in response.chunks]


@pytest.mark.model
async def test_edge_and_the_server_return_the_same_top_10(
    make_server: ServerFactory, qdrant_peer: QdrantServer
) -> None:
    client = AsyncQdrantClient(
        url=qdrant_peer.url,
        grpc_port=qdrant_peer.grpc_port,
        prefer_grpc=True,
        check_compatibility=False,
    )
    store = QdrantVectorStore(client, f"parity_{uuid.uuid4().hex[:8]}", url=qdrant_peer.url)
    edge = await make_server(cache=None, **CHUNKING)
    server = await make_server(store=store, cache=None, **CHUNKING)
    for running in (edge, server):
        summary = await running.ingest(corpus())
        assert summary.created == len(DOCS)
    assert await store.count("tenant-a") >= 15

    overlap: dict[str, float] = {}
    for name, mode in MODES.items():
        shared = compared = 0
        for question in QUESTIONS:
            on_edge = await top_ids(edge, question, mode)
            on_server = await top_ids(server, question, mode)
            assert len(on_edge) == len(on_server), (name, question)
            shared += len(set(on_edge) & set(on_server))
            compared += len(on_edge)
        overlap[name] = shared / compared
    print("top-10 overlap, Edge vs Qdrant server:", overlap)
    assert overlap["dense"] >= 0.9
    assert overlap["sparse"] >= 0.9
    assert overlap["hybrid"] >= 0.8
