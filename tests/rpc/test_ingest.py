"""IngestDocuments and DeleteDocuments: idempotence, replacement, bad documents."""

from __future__ import annotations

import grpc
import pytest

from groundwire.clients.embedder import OpenAIEmbedder
from groundwire.v1 import documents_pb2, retrieval_pb2
from tests.rpc.conftest import KEY_A, ServerFactory, auth
from tests.rpc.corpus import corpus
from tests.rpc.embeddings_server import FAIL_MARKER, EmbeddingsServer
from tests.rpc.errors import details

LONG_TEXT = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(400))


async def test_reingesting_three_times_leaves_the_point_count_unchanged(
    make_server: ServerFactory,
) -> None:
    running = await make_server()
    docs = [*corpus(), documents_pb2.Document(doc_id="long", title="Long", text=LONG_TEXT)]
    first = await running.ingest(docs)
    assert first.created == len(docs) and first.chunks_written > len(docs)
    store = running.server.components.store
    count = await store.count("tenant-a")
    assert count == first.chunks_written
    for _ in range(3):
        again = await running.ingest(docs)
        assert again.unchanged == len(docs)
        assert again.created == again.updated == again.chunks_written == 0
        assert await store.count("tenant-a") == count


async def test_a_changed_document_replaces_its_chunks_and_leaves_no_stale_one(
    make_server: ServerFactory,
) -> None:
    running = await make_server()
    await running.ingest([documents_pb2.Document(doc_id="long", title="Long", text=LONG_TEXT)])
    store = running.server.components.store
    long_count = await store.count("tenant-a")
    assert long_count > 3
    short = documents_pb2.Document(doc_id="long", title="Long", text="Now it is one sentence.")
    summary = await running.ingest([short])
    assert summary.updated == 1 and summary.chunks_written == 1
    assert summary.chunks_deleted == long_count - 1
    assert await store.count("tenant-a") == 1
    response = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query="Sentence number 399", top_k=10),
        metadata=auth(KEY_A),
    )
    assert [c.text for c in response.chunks] == ["Now it is one sentence."]


async def test_bad_documents_are_reported_and_the_rest_proceed(
    make_server: ServerFactory,
) -> None:
    running = await make_server(max_document_bytes=4096)
    docs = [
        documents_pb2.Document(doc_id="ok-1", text="A fine document."),
        documents_pb2.Document(doc_id="empty", text="   \n"),
        documents_pb2.Document(doc_id="huge", text="x" * 5000),
        documents_pb2.Document(doc_id="", text="no id"),
        documents_pb2.Document(doc_id="ok-2", text="Another fine document."),
    ]
    summary = await running.ingest(docs)
    assert summary.created == 2 and summary.failed == 3
    assert [(f.doc_id, f.position, f.field) for f in summary.failures] == [
        ("empty", 1, "document.text"),
        ("huge", 2, "document.text"),
        ("", 3, "document.doc_id"),
    ]
    assert "4096" in summary.failures[1].reason
    assert await running.server.components.store.count("tenant-a") == 2


async def test_a_doc_id_repeated_in_one_stream_ends_as_its_last_version(
    make_server: ServerFactory,
) -> None:
    running = await make_server()
    summary = await running.ingest(
        [
            documents_pb2.Document(doc_id="d", text=LONG_TEXT),
            documents_pb2.Document(doc_id="d", text="Short final version."),
        ]
    )
    assert summary.created == 1 and summary.updated == 1
    assert await running.server.components.store.count("tenant-a") == 1


async def test_an_embedder_failure_writes_nothing_of_the_batch(make_server: ServerFactory) -> None:
    with EmbeddingsServer(dimension=8) as remote:
        dense = OpenAIEmbedder(base_url=remote.base_url, model="fake-embed", dimension=8)
        running = await make_server(dense=dense)
        docs = [
            documents_pb2.Document(doc_id="fine", text="A fine document."),
            documents_pb2.Document(doc_id="doomed", text=f"This one has {FAIL_MARKER} in it."),
        ]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.ingest(docs)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert details(caught.value)[0].reason == "ERROR_REASON_EMBEDDER_UNAVAILABLE"
        assert await running.server.components.store.count("tenant-a") == 0
        summary = await running.ingest(docs[:1])
        assert summary.created == 1
        assert await running.server.components.store.count("tenant-a") == 1
