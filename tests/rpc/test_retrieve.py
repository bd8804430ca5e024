"""Retrieve through the generated stubs: meaning, modes, filters, tenancy, cache."""

from __future__ import annotations

import pytest

from groundwire.v1 import retrieval_pb2
from tests.redis_server import RedisServer
from tests.rpc.conftest import KEY_A, KEY_B, ServerFactory, auth
from tests.rpc.corpus import DOCS, PARAPHRASES, corpus, document

MODES = [
    retrieval_pb2.RETRIEVAL_MODE_DENSE,
    retrieval_pb2.RETRIEVAL_MODE_SPARSE,
    retrieval_pb2.RETRIEVAL_MODE_HYBRID,
]


@pytest.mark.model
@pytest.mark.parametrize(
    "mode", [retrieval_pb2.RETRIEVAL_MODE_DENSE, retrieval_pb2.RETRIEVAL_MODE_HYBRID]
)
async def test_a_paraphrased_question_finds_its_document(
    make_server: ServerFactory, mode: int
) -> None:
    running = await make_server()
    summary = await running.ingest(corpus())
    assert summary.created == len(corpus()) and summary.failed == 0
    for doc_id, question in PARAPHRASES.items():
        response = await running.retrieval.Retrieve(
            retrieval_pb2.RetrieveRequest(query=question, top_k=3, mode=mode), metadata=auth(KEY_A)
        )
        assert response.chunks[0].doc_id == doc_id, (question, [c.doc_id for c in response.chunks])
        assert response.embedder_id == "all-MiniLM-L6-v2-int8/384"
        assert response.mode == mode


async def test_response_carries_sources_scores_and_timings(make_server: ServerFactory) -> None:
    running = await make_server()
    await running.ingest(corpus())
    response = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query="congestion window slow start", top_k=2),
        metadata=auth(KEY_A),
    )
    assert response.mode == retrieval_pb2.RETRIEVAL_MODE_HYBRID  # the default with an embedder
    top = response.chunks[0]
    assert top.doc_id == "tcp" and top.title == "TCP congestion control"
    assert top.source_uri == "https://example.test/tcp" and top.chunk_index == 0
    assert top.metadata["topic"].string_value == "network"
    assert top.metadata["year"].int_value == 2023
    assert len(top.chunk_id) == 36
    assert [c.score for c in response.chunks] == sorted(
        [c.score for c in response.chunks], reverse=True
    )
    assert response.timings.total.ToNanoseconds() > 0
    assert response.timings.search.ToNanoseconds() > 0


@pytest.mark.parametrize("mode", MODES)
async def test_tenant_b_never_sees_tenant_a(make_server: ServerFactory, mode: int) -> None:
    running = await make_server()
    await running.ingest(corpus(), key=KEY_A)
    await running.ingest([document("tides", topic="earth")], key=KEY_B)
    # B asks A's questions in A's own words: only B's single document may come back.
    for doc_id in PARAPHRASES:
        response = await running.retrieval.Retrieve(
            retrieval_pb2.RetrieveRequest(query=DOCS[doc_id][1], top_k=10, mode=mode),
            metadata=auth(KEY_B),
        )
        assert {c.doc_id for c in response.chunks} <= {"tides"}
        chunk_ids_b = {c.chunk_id for c in response.chunks}
        response_a = await running.retrieval.Retrieve(
            retrieval_pb2.RetrieveRequest(query=DOCS[doc_id][1], top_k=10, mode=mode),
            metadata=auth(KEY_A),
        )
        # The same doc id in two tenants gets two different point ids.
        assert not chunk_ids_b & {c.chunk_id for c in response_a.chunks}


async def test_deletes_are_scoped_to_the_tenant(make_server: ServerFactory) -> None:
    from groundwire.v1 import documents_pb2

    running = await make_server()
    await running.ingest(corpus(), key=KEY_A)
    deleted = await running.documents.DeleteDocuments(
        documents_pb2.DeleteDocumentsRequest(doc_ids=["volcano", "tcp"]), metadata=auth(KEY_B)
    )
    assert deleted.documents_deleted == 0 and deleted.chunks_deleted == 0
    assert await running.server.components.store.count("tenant-a") == len(corpus())
    deleted = await running.documents.DeleteDocuments(
        documents_pb2.DeleteDocumentsRequest(doc_ids=["volcano", "tcp", "nope"]),
        metadata=auth(KEY_A),
    )
    assert deleted.documents_deleted == 2 and deleted.chunks_deleted == 2
    response = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query="magma volcano erupts", top_k=10),
        metadata=auth(KEY_A),
    )
    assert "volcano" not in {c.doc_id for c in response.chunks}


async def test_filters_and_min_score(make_server: ServerFactory) -> None:
    running = await make_server()
    await running.ingest(corpus())
    earth = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(
            query="bread",
            top_k=10,
            filter=retrieval_pb2.MetadataFilter(
                must=[retrieval_pb2.FieldFilter(field="topic", string_equals="earth")]
            ),
        ),
        metadata=auth(KEY_A),
    )
    assert {c.doc_id for c in earth.chunks} == {"volcano", "tides"}
    years = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(
            query="anything",
            top_k=10,
            mode=retrieval_pb2.RETRIEVAL_MODE_DENSE,
            filter=retrieval_pb2.MetadataFilter(
                must=[
                    retrieval_pb2.FieldFilter(
                        field="year", int_any=retrieval_pb2.IntList(values=[2021, 2023])
                    )
                ]
            ),
        ),
        metadata=auth(KEY_A),
    )
    assert {c.doc_id for c in years.chunks} == {"sourdough", "tcp"}
    strict = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(
            query="slow start congestion window",
            top_k=10,
            mode=retrieval_pb2.RETRIEVAL_MODE_DENSE,
            min_score=0.4,
        ),
        metadata=auth(KEY_A),
    )
    assert strict.chunks and all(c.score >= 0.4 for c in strict.chunks)
    assert len(strict.chunks) < len(corpus())


async def test_cache_hits_on_repeat_and_misses_after_ingest(make_server: ServerFactory) -> None:
    running = await make_server()
    await running.ingest(corpus())
    request = retrieval_pb2.RetrieveRequest(query="why do volcanoes erupt", top_k=3)
    first = await running.retrieval.Retrieve(request, metadata=auth(KEY_A))
    await running.settle()  # the entry is written after the answer
    second = await running.retrieval.Retrieve(request, metadata=auth(KEY_A))
    assert not first.cache_hit and second.cache_hit
    assert list(second.chunks) == list(first.chunks)
    # White space and Unicode form do not change the key; tenant B does.
    spaced = retrieval_pb2.RetrieveRequest(query="  why do   volcanoes erupt ", top_k=3)
    assert (await running.retrieval.Retrieve(spaced, metadata=auth(KEY_A))).cache_hit
    assert not (await running.retrieval.Retrieve(request, metadata=auth(KEY_B))).cache_hit
    # Another top_k is another answer.
    other = retrieval_pb2.RetrieveRequest(query="why do volcanoes erupt", top_k=4)
    assert not (await running.retrieval.Retrieve(other, metadata=auth(KEY_A))).cache_hit
    await running.settle()
    # Ingest bumps the index version: the next call misses and sees the new document.
    await running.ingest(corpus()[:2])  # unchanged documents: no bump
    assert (await running.retrieval.Retrieve(request, metadata=auth(KEY_A))).cache_hit
    from groundwire.v1 import documents_pb2

    await running.ingest(
        [documents_pb2.Document(doc_id="etna", title="Etna", text="Etna erupts often.")]
    )
    after = await running.retrieval.Retrieve(request, metadata=auth(KEY_A))
    assert not after.cache_hit
    assert "etna" in {c.doc_id for c in after.chunks}
    bypass = retrieval_pb2.RetrieveRequest(
        query="why do volcanoes erupt", top_k=3, bypass_cache=True
    )
    assert not (await running.retrieval.Retrieve(bypass, metadata=auth(KEY_A))).cache_hit


async def test_calls_succeed_when_redis_dies(
    make_server: ServerFactory, redis_server: RedisServer
) -> None:
    running = await make_server()
    await running.ingest(corpus())
    request = retrieval_pb2.RetrieveRequest(query="ocean tides moon", top_k=2)
    await running.retrieval.Retrieve(request, metadata=auth(KEY_A))
    redis_server.stop()
    try:
        for _ in range(3):
            response = await running.retrieval.Retrieve(request, metadata=auth(KEY_A))
            assert response.chunks[0].doc_id == "tides" and not response.cache_hit
        summary = await running.ingest([document("tcp", extra="changed")])
        assert summary.updated == 1
    finally:
        redis_server.start()
    # Redis back: the cache works again.
    await running.retrieval.Retrieve(request, metadata=auth(KEY_A))
    await running.settle()
    assert (await running.retrieval.Retrieve(request, metadata=auth(KEY_A))).cache_hit


async def test_without_redis_the_cache_is_off(make_server: ServerFactory) -> None:
    running = await make_server(cache=None, redis_url=None)
    await running.ingest(corpus())
    request = retrieval_pb2.RetrieveRequest(query="ocean tides moon", top_k=2)
    for _ in range(2):
        response = await running.retrieval.Retrieve(request, metadata=auth(KEY_A))
        assert not response.cache_hit and response.timings.cache.ToNanoseconds() == 0
