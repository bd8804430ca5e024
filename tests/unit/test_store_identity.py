"""What index a store is: an Edge shard's id lives in its directory and survives reopening;
a Qdrant collection is named by its normalised URL."""

from __future__ import annotations

from pathlib import Path

from qdrant_client import AsyncQdrantClient

from groundwire.clients.vector_store import EdgeVectorStore, QdrantVectorStore
from groundwire.clients.vector_store.identity import SHARD_ID_FILE, qdrant_identity


async def opened(path: Path) -> EdgeVectorStore:
    store = EdgeVectorStore(path)
    await store.ensure_collection("", 0)
    return store


async def test_an_edge_shard_keeps_its_id_across_reopens(tmp_path: Path) -> None:
    store = await opened(tmp_path / "edge")
    identity = store.identity
    await store.close()

    reopened = await opened(tmp_path / "edge")
    try:
        assert reopened.identity == identity
        assert identity == f"edge:{(tmp_path / 'edge' / SHARD_ID_FILE).read_text().strip()}"
    finally:
        await reopened.close()


async def test_two_edge_shards_have_different_ids(tmp_path: Path) -> None:
    first, second = await opened(tmp_path / "a"), await opened(tmp_path / "b")
    try:
        assert first.identity.startswith("edge:")
        assert first.identity != second.identity
    finally:
        await first.close()
        await second.close()


async def test_a_store_that_starts_empty_gets_a_new_id(tmp_path: Path) -> None:
    """A directory whose collection record is gone holds no data we know of (the store
    refuses a shard without one): what was cached for the old id must not apply to it."""
    store = await opened(tmp_path / "edge")
    old = store.identity
    await store.close()
    (tmp_path / "edge" / "groundwire-collection.json").unlink()
    (tmp_path / "edge" / SHARD_ID_FILE).write_text("not an id\n")  # nor is a damaged id kept

    store = EdgeVectorStore(tmp_path / "edge")
    try:
        assert store.identity != old and store.identity.startswith("edge:")
    finally:
        await store.close()


def test_spellings_of_one_qdrant_url_name_one_collection() -> None:
    expected = "qdrant:http://qdrant.internal:6333/docs"
    for url in (
        "http://qdrant.internal:6333",
        "HTTP://Qdrant.Internal:6333/",
        "http://qdrant.internal",
        "qdrant.internal:6333",
    ):
        assert qdrant_identity(url, "docs") == expected, url
    assert qdrant_identity("https://qdrant.internal", "docs") == (
        "qdrant:https://qdrant.internal:6333/docs"
    )
    assert qdrant_identity("http://qdrant.internal:6333", "other") != expected
    assert qdrant_identity("http://qdrant-2.internal:6333", "docs") != expected


async def test_a_qdrant_store_is_named_by_its_url_or_by_nothing_shared() -> None:
    client = AsyncQdrantClient(location=":memory:")
    named = QdrantVectorStore(client, "c", url="http://LOCALHOST:6333")
    anonymous = [QdrantVectorStore(AsyncQdrantClient(location=":memory:"), "c") for _ in "ab"]
    try:
        assert named.identity == "qdrant:http://localhost:6333/c"
        assert anonymous[0].identity != anonymous[1].identity  # unknown location: unshared
    finally:
        for store in (named, *anonymous):
            await store.close()
