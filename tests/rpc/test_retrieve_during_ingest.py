"""A Retrieve during a large ingest is answered ahead of the ingest's embedding batches.

The local model has one thread. Queries used to queue behind every document batch already
waiting for it, so a Retrieve waited for the whole backlog of several concurrent ingests;
now it waits at most for the batch in progress.
"""

from __future__ import annotations

import asyncio

import pytest

from groundwire.clients.model_worker import Priority
from groundwire.clients.onnx_embedder import OnnxEmbedder
from groundwire.v1 import documents_pb2, retrieval_pb2
from tests.rpc.conftest import KEY_A, ServerFactory, auth
from tests.rpc.corpus import PARAPHRASES, corpus

STREAMS = 3
DOCS_PER_STREAM = 32  # one ingest batch, so one model batch per stream (the fixture's 32)


def _filler(stream: int, n: int) -> documents_pb2.Document:
    words = " ".join(f"measurement{(stream * 7 + n + i) % 97} of sample {i}" for i in range(40))
    return documents_pb2.Document(
        doc_id=f"bulk-{stream}-{n}", title=f"Lab notebook {stream}.{n}", text=words
    )


@pytest.mark.model
async def test_a_retrieve_is_answered_before_concurrent_ingests_end(
    make_server: ServerFactory, embedder: OnnxEmbedder
) -> None:
    running = await make_server()
    await running.ingest(corpus())
    ingests = [
        asyncio.create_task(running.ingest([_filler(s, n) for n in range(DOCS_PER_STREAM)]))
        for s in range(STREAMS)
    ]
    # Time for the streams to send their documents and for their batches to queue for the
    # model (if the Retrieve came earlier, it would go first all the more).
    await asyncio.sleep(0.3)

    batches_before = embedder.jobs_run[Priority.DOCUMENTS]
    response = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(
            query=PARAPHRASES["volcano"],
            top_k=3,
            mode=retrieval_pb2.RETRIEVAL_MODE_DENSE,
            bypass_cache=True,
        ),
        metadata=auth(KEY_A),
    )
    ended_before_the_answer = sum(task.done() for task in ingests)
    batches_before_the_answer = embedder.jobs_run[Priority.DOCUMENTS] - batches_before
    summaries = await asyncio.gather(*ingests)

    assert response.chunks[0].doc_id == "volcano"
    assert [s.created for s in summaries] == [DOCS_PER_STREAM] * STREAMS
    assert ended_before_the_answer < STREAMS
    assert batches_before_the_answer <= 1
