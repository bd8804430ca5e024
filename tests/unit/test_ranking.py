"""Search results come back in one fixed order, ties included."""

from __future__ import annotations

from groundwire.clients.models import ChunkRecord, ScoredChunk
from groundwire.clients.vector_store.search_plan import ranked


def _hit(chunk_id: str, score: float) -> ScoredChunk:
    return ScoredChunk(ChunkRecord(chunk_id=chunk_id, doc_id="d", chunk_index=0, text=""), score)


def test_ties_are_broken_by_chunk_id_whatever_the_engine_order() -> None:
    hits = [_hit("c", 0.5), _hit("a", 0.5), _hit("z", 0.9), _hit("b", 0.5)]
    expected = ["z", "a", "b", "c"]
    assert [h.record.chunk_id for h in ranked(hits)] == expected
    assert [h.record.chunk_id for h in ranked(list(reversed(hits)))] == expected
