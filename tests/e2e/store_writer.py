"""The child process the store-kill test SIGKILLs: the product's own ingest pipeline (built by
``assemble_components``, sparse only) writing a corpus into a Qdrant Edge store on disk.

Run as ``python -m tests.e2e.store_writer <data_dir> <version>``. Every store write is
announced on stdout (unbuffered) before it starts and after it ends, so the parent can aim
its kill at the inside of a write and tell afterwards where it landed. The announcing
wrapper only prints: the real store does all the work.

The corpus is shared with the test: :func:`corpus` gives each document's text for version 1
and version 2 (some documents grow, some shrink, some stay the same).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from groundwire.clients.models import ChunkPoint, Metadata
from groundwire.clients.vector_store import EdgeVectorStore
from groundwire.server.components import Components, assemble_components
from groundwire.server.pipeline.ingest import DocumentInput
from groundwire.server.settings import Settings, load_settings

TENANT = "tenant-kill"
DOCUMENTS = 48
BATCH_DOCUMENTS = 16
_WORDS = [f"w{i}" for i in range(2000)] + ["aspirin", "fever", "magma", "basalt", "ocean"]


def words(seed: str, count: int) -> str:
    """``count`` pseudo-random words, the same for the same seed."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(count))


def corpus(version: int) -> list[tuple[str, str]]:
    """(doc id, text) of every document at ``version`` (1 or 2). In version 2 a third of
    the documents shrink, a third grow and a third are unchanged."""
    docs = []
    for i in range(DOCUMENTS):
        size = 1500 + 150 * (i % 7)
        if version == 2 and i % 3 == 0:
            text = words(f"doc{i}-v2", size // 3)  # shrinks: stale chunks to delete
        elif version == 2 and i % 3 == 1:
            text = words(f"doc{i}-v2", size * 2)  # grows
        else:
            text = words(f"doc{i}-v1", size)
        docs.append((f"doc-{i:03d}", text))
    return docs


def settings_for(data_dir: Path) -> Settings:
    """The settings child and parent share: sparse only, no Redis, no LLM."""
    return load_settings(
        read_environment=False,
        data_dir=data_dir,
        embedder="none",
        redis_url=None,
        metrics_port=None,
        ingest_batch_documents=BATCH_DOCUMENTS,
    )


def document_inputs(version: int) -> list[DocumentInput]:
    """The corpus as the pipeline takes it."""
    metadata: Metadata = {}
    return [
        DocumentInput(i, doc_id, doc_id.title(), text, f"file:///{doc_id}", metadata)
        for i, (doc_id, text) in enumerate(corpus(version))
    ]


async def build(data_dir: Path, store: Any = None) -> Components:
    """The product's components on the Edge store in ``data_dir`` (or on ``store``)."""
    settings = settings_for(data_dir)
    chosen = store if store is not None else EdgeVectorStore(settings.data_dir / "edge")
    return await assemble_components(settings, store=chosen, dense=None, cache=None)


class AnnouncingStore:
    """The real Edge store; prints ``begin <op> <n>`` / ``end <op> <n>`` around each write."""

    def __init__(self, store: EdgeVectorStore) -> None:
        self._store = store
        self._writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _say(self, line: str) -> None:
        os.write(1, f"{line}\n".encode())

    async def upsert(self, tenant: str, points: Sequence[ChunkPoint]) -> None:
        self._writes += 1
        n = self._writes
        self._say(f"begin upsert {n} {len(points)}")
        await self._store.upsert(tenant, points)
        self._say(f"end upsert {n}")

    async def delete_points(self, tenant: str, chunk_ids: Sequence[str]) -> None:
        self._writes += 1
        n = self._writes
        self._say(f"begin delete {n} {len(chunk_ids)}")
        await self._store.delete_points(tenant, chunk_ids)
        self._say(f"end delete {n}")


async def main(data_dir: Path, version: int) -> None:
    settings = settings_for(data_dir)
    store = AnnouncingStore(EdgeVectorStore(settings.data_dir / "edge"))
    components = await build(data_dir, store)

    async def documents() -> AsyncIterator[DocumentInput]:
        for doc in document_inputs(version):
            yield doc

    summary = await components.ingest.ingest(TENANT, documents())
    os.write(1, f"done {summary.created} {summary.updated} {summary.unchanged}\n".encode())
    await components.store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
