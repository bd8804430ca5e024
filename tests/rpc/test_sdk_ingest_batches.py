"""The SDK's ingest_batches against a real server: one call per batch, a running total whose
failure positions count from the first document, the same for the sync and asyncio clients."""

from __future__ import annotations

import asyncio

import pytest

from groundwire.sdk import AsyncClient, Client, Document
from tests.rpc.conftest import KEY_A, ServerFactory


def _corpus() -> list[Document]:
    texts = ["Tides follow the Moon.", "Bread rises.", "", "Volcanoes erupt.", "Rain falls."]
    return [Document(doc_id=f"doc-{i}", title=f"t{i}", text=t) for i, t in enumerate(texts)]


async def test_async_ingest_batches_acknowledge_each_batch(make_server: ServerFactory) -> None:
    running = await make_server()
    address = f"127.0.0.1:{running.server.port}"
    async with AsyncClient(address, api_key=KEY_A) as client:
        steps = [
            step
            async for step in client.ingest_batches(_corpus(), batch_size=2, correlation_id="b")
        ]
        assert [s.documents for s in steps] == [2, 4, 5]
        assert [s.batch.created + s.batch.failed for s in steps] == [2, 2, 1]
        total = steps[-1].total
        assert (total.created, total.failed) == (4, 1)
        # doc-2 (empty text) was the first of the second batch: position 2 of the whole ingest.
        assert [(f.doc_id, f.position) for f in total.failures] == [("doc-2", 2)]
        assert total.chunks_written >= 4
        again = [step async for step in client.ingest_batches(_corpus()[:2], batch_size=5)]
        assert len(again) == 1 and again[0].total.unchanged == 2
        with pytest.raises(ValueError, match="batch_size must be at least 1"):
            client.ingest_batches(_corpus(), batch_size=0)


async def test_sync_ingest_batches_match_the_async_ones(make_server: ServerFactory) -> None:
    running = await make_server()
    address = f"127.0.0.1:{running.server.port}"

    def ingest() -> list[tuple[int, int, int]]:
        with Client(address, api_key=KEY_A) as client:
            return [
                (step.documents, step.total.created, step.total.failed)
                for step in client.ingest_batches(iter(_corpus()), batch_size=3)
            ]

    assert await asyncio.to_thread(ingest) == [(3, 2, 1), (5, 4, 1)]
