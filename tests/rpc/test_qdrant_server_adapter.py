"""The production adapter (qdrant-client) behind the real server, on qdrant-client's local
mode, which speaks the same API as a Qdrant server."""

from __future__ import annotations

import pytest
from qdrant_client import AsyncQdrantClient

from groundwire.clients.vector_store import QdrantVectorStore
from groundwire.v1 import documents_pb2, retrieval_pb2
from tests.rpc.conftest import KEY_A, KEY_B, ServerFactory, auth
from tests.rpc.corpus import PARAPHRASES, corpus


@pytest.mark.model
async def test_ingest_and_retrieve_in_every_mode_through_qdrant_client(
    make_server: ServerFactory,
) -> None:
    store = QdrantVectorStore(AsyncQdrantClient(location=":memory:"), "groundwire_test")
    running = await make_server(store=store)
    summary = await running.ingest(corpus())
    assert summary.created == len(corpus())
    again = await running.ingest(corpus())
    assert again.unchanged == len(corpus())
    assert await store.count("tenant-a") == len(corpus())
    for mode in (
        retrieval_pb2.RETRIEVAL_MODE_DENSE,
        retrieval_pb2.RETRIEVAL_MODE_SPARSE,
        retrieval_pb2.RETRIEVAL_MODE_HYBRID,
    ):
        question = (
            PARAPHRASES["volcano"] if mode != retrieval_pb2.RETRIEVAL_MODE_SPARSE else "magma"
        )
        response = await running.retrieval.Retrieve(
            retrieval_pb2.RetrieveRequest(query=question, top_k=3, mode=mode, bypass_cache=True),
            metadata=auth(KEY_A),
        )
        assert response.chunks[0].doc_id == "volcano", mode
        other = await running.retrieval.Retrieve(
            retrieval_pb2.RetrieveRequest(query=question, top_k=3, mode=mode),
            metadata=auth(KEY_B),
        )
        assert list(other.chunks) == []
    deleted = await running.documents.DeleteDocuments(
        documents_pb2.DeleteDocumentsRequest(doc_ids=["volcano"]), metadata=auth(KEY_A)
    )
    assert deleted.documents_deleted == 1
