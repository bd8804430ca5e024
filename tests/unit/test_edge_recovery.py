"""Recovery of a real Qdrant Edge store after an unclean stop: a document whose replacement
was cut short between its upsert and its stale-chunk delete is made whole when the store is
next opened; a clean close leaves the marker that skips the scan. (The SIGKILL version of
this, with a real kill inside real writes, is ``tests/e2e/test_store_kill.py``.)"""

from __future__ import annotations

from pathlib import Path

from groundwire.clients.models import ChunkPoint, ChunkRecord, SparseVector, point_id
from groundwire.clients.vector_store import EdgeVectorStore
from groundwire.clients.vector_store.edge_recovery import CLEAN_STOP_FILE

TENANT = "tenant-r"


def chunks(doc_id: str, count: int, digest: str, tenant: str = TENANT) -> list[ChunkPoint]:
    return [
        ChunkPoint(
            ChunkRecord(
                chunk_id=point_id(tenant, doc_id, i),
                doc_id=doc_id,
                chunk_index=i,
                text=f"{doc_id} {digest} part {i}",
                content_hash=digest,
            ),
            dense=None,
            sparse=SparseVector([i + 1], [1.0]),
        )
        for i in range(count)
    ]


async def open_store(path: Path) -> EdgeVectorStore:
    store = EdgeVectorStore(path)
    await store.ensure_collection("", 0)
    return store


async def test_a_clean_close_leaves_the_marker_and_an_open_store_has_none(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    assert not (tmp_path / CLEAN_STOP_FILE).exists()  # while open, a stop would be unclean
    await store.close()
    assert (tmp_path / CLEAN_STOP_FILE).exists()
    store = await open_store(tmp_path)
    assert not (tmp_path / CLEAN_STOP_FILE).exists()
    await store.close()


async def test_an_unclean_stop_between_upsert_and_delete_is_repaired_on_open(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path)
    await store.upsert(TENANT, chunks("shrinks", 4, "old"))
    await store.upsert(TENANT, chunks("whole", 3, "same"))
    await store.upsert("tenant-other", chunks("shrinks", 4, "old", tenant="tenant-other"))
    # The replacement's upsert lands; its delete of chunks 2 and 3 never runs.
    await store.upsert(TENANT, chunks("shrinks", 2, "new"))
    await store.close()
    (tmp_path / CLEAN_STOP_FILE).unlink()  # as a SIGKILL would have left it

    store = await open_store(tmp_path)
    stored = await store.stored_documents(TENANT, ["shrinks", "whole"])
    assert stored["shrinks"].content_hash == "new"
    assert sorted(stored["shrinks"].chunk_ids) == [0, 1]
    assert stored["whole"].content_hash == "same" and len(stored["whole"].chunk_ids) == 3
    assert await store.count(TENANT) == 5
    # The other tenant's document of the same name was whole and is untouched.
    other = await store.stored_documents("tenant-other", ["shrinks"])
    assert other["shrinks"].content_hash == "old" and len(other["shrinks"].chunk_ids) == 4
    await store.close()


async def test_after_a_clean_close_nothing_is_scanned_or_changed(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.upsert(TENANT, chunks("shrinks", 4, "old"))
    await store.upsert(TENANT, chunks("shrinks", 2, "new"))  # mid-replacement, in-process
    await store.close()  # a clean close: the pipeline would have deleted the tail itself

    store = await open_store(tmp_path)
    # Not scanned: the mixed document is left for ingest, which sees the hashes disagree.
    assert (await store.stored_documents(TENANT, ["shrinks"]))["shrinks"].content_hash == ""
    await store.close()
