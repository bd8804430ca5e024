"""The SDK's mode and tier names and its ingest batching, without a server (the batches
against a real one are in tests/rpc/test_sdk_ingest_batches.py)."""

from __future__ import annotations

import pytest

from groundwire.sdk import RETRIEVAL_MODES, TIERS, retrieval_mode, tier
from groundwire.sdk._ingest import advance, async_batches, batches
from groundwire.v1 import documents_pb2, generation_pb2, retrieval_pb2


def test_mode_and_tier_names_come_from_the_contract() -> None:
    assert dict(RETRIEVAL_MODES) == {
        "dense": retrieval_pb2.RETRIEVAL_MODE_DENSE,
        "sparse": retrieval_pb2.RETRIEVAL_MODE_SPARSE,
        "hybrid": retrieval_pb2.RETRIEVAL_MODE_HYBRID,
    }
    assert dict(TIERS) == {
        "standard": generation_pb2.TIER_STANDARD,
        "economy": generation_pb2.TIER_ECONOMY,
        "long-context": generation_pb2.TIER_LONG_CONTEXT,
    }
    for name, value in RETRIEVAL_MODES.items():
        assert retrieval_mode(name) == value
    for spelling in ("long-context", "long_context", "LONG-CONTEXT", "TIER_LONG_CONTEXT"):
        assert tier(spelling) == generation_pb2.TIER_LONG_CONTEXT
    assert tier(generation_pb2.TIER_ECONOMY) == generation_pb2.TIER_ECONOMY
    with pytest.raises(ValueError, match="unknown tier 'premium'; known: standard, economy"):
        tier("premium")
    with pytest.raises(ValueError, match="unknown retrieval mode 'fuzzy'; known: dense"):
        retrieval_mode("fuzzy")
    with pytest.raises(TypeError):
        RETRIEVAL_MODES["fuzzy"] = 9  # type: ignore[index]


def _docs(n: int) -> list[documents_pb2.Document]:
    return [documents_pb2.Document(doc_id=f"d{i}") for i in range(n)]


async def test_batches_split_sync_and_async_iterables_alike() -> None:
    assert [len(b) for b in batches(_docs(5), 2)] == [2, 2, 1]
    assert list(batches([], 2)) == []

    async def stream() -> object:
        for document in _docs(5):
            yield document

    async_sizes = [len(b) async for b in async_batches(stream(), 2)]  # type: ignore[arg-type]
    assert async_sizes == [2, 2, 1]
    assert [len(b) async for b in async_batches(_docs(4), 2)] == [2, 2]


def test_advance_sums_batches_and_counts_failure_positions_from_the_start() -> None:
    first = documents_pb2.IngestDocumentsResponse(
        created=1,
        failed=1,
        chunks_written=3,
        failures=[documents_pb2.DocumentFailure(doc_id="x", position=1)],
    )
    second = documents_pb2.IngestDocumentsResponse(
        updated=1,
        failed=1,
        chunks_written=2,
        chunks_deleted=1,
        failures=[documents_pb2.DocumentFailure(doc_id="y", position=0)],
    )
    one = advance(None, first, 2)
    two = advance(one, second, 2)
    assert one.documents == 2 and two.documents == 4
    assert [f.position for f in two.batch.failures] == [2]
    assert [(f.doc_id, f.position) for f in two.total.failures] == [("x", 1), ("y", 2)]
    assert (two.total.created, two.total.updated, two.total.failed) == (1, 1, 2)
    assert (two.total.chunks_written, two.total.chunks_deleted) == (5, 1)
    assert second.failures[0].position == 0  # the server's answer is not changed
    assert one.total.failed == 1  # an earlier progress keeps its own total
