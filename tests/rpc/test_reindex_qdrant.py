"""``groundwire reindex`` on a real Qdrant server (distributed mode, one peer: a shard per
tenant, so hybrid search works on the shared 1.18 binary).

The old generation is embedded by the real MiniLM; the new one by an OpenAI-compatible
endpoint (``tests/rpc/embeddings_server.py``, 8 dimensions, a vector per exact text), so a
query equal to a document's text finds that document only through the new generation.
Servers are built as ``groundwire serve`` builds them (``app.build_store`` pins the alias).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import grpc
import pytest

from groundwire.clients.embedder import OpenAIEmbedder
from groundwire.clients.ports import DenseEmbedder
from groundwire.clients.redis_link import key_namespace
from groundwire.clients.vector_store import QdrantVectorStore
from groundwire.server.components import build_store
from groundwire.server.reindex import command as reindex
from groundwire.server.reindex.deployments import ReindexError
from groundwire.server.settings import Settings, load_settings
from groundwire.v1 import documents_pb2, retrieval_pb2
from tests.qdrant_server import QdrantServer
from tests.rpc.conftest import KEY_A, KEY_B, Running, ServerFactory, auth
from tests.rpc.corpus import PARAPHRASES, corpus
from tests.rpc.embeddings_server import EmbeddingsServer

# Untitled one-chunk documents: the embedded text is the document's text, so the endpoint's
# vector for a query equal to it is the document's own vector.
TEXTS = {
    f"n{i}": f"note {i} about {topic} and nothing else"
    for i, topic in enumerate(["glaciers", "comets", "ferns", "bridges", "owls", "tea"])
}


def note(doc_id: str, text: str | None = None) -> documents_pb2.Document:
    return documents_pb2.Document(doc_id=doc_id, text=text or TEXTS[doc_id])


@pytest.fixture
def endpoint() -> Iterator[EmbeddingsServer]:
    with EmbeddingsServer(dimension=8) as server:
        yield server


def new_embedder(endpoint: EmbeddingsServer) -> OpenAIEmbedder:
    return OpenAIEmbedder(base_url=endpoint.base_url, model="hash-8", dimension=8)


@pytest.fixture
def settings(qdrant_peer: QdrantServer, redis_url: str, tmp_path: object) -> Settings:
    return load_settings(
        read_environment=False,
        vector_store="qdrant",
        qdrant_url=qdrant_peer.url,
        qdrant_grpc_port=qdrant_peer.grpc_port,
        qdrant_collection=f"rx_{uuid.uuid4().hex[:8]}",
        redis_url=redis_url,
        metrics_port=None,
    )


async def serve(
    make_server: ServerFactory, settings: Settings, dense: DenseEmbedder | str | None
) -> Running:
    """A server as ``groundwire serve`` builds it: its store pins the alias at start."""
    store = await build_store(settings)
    return await make_server(
        store=store,
        dense=dense,
        vector_store="qdrant",
        qdrant_url=settings.qdrant_url,
        qdrant_grpc_port=settings.qdrant_grpc_port,
        qdrant_collection=settings.qdrant_collection,
    )


def collection_of(running: Running) -> str:
    store = running.server.components.store
    assert isinstance(store, QdrantVectorStore)
    return store.collection


async def retrieve(
    running: Running, query: str, *, key: str = KEY_A, cache: bool = False
) -> retrieval_pb2.RetrieveResponse:
    return await running.retrieval.Retrieve(  # type: ignore[no-any-return]
        retrieval_pb2.RetrieveRequest(query=query, top_k=3, bypass_cache=not cache),
        metadata=auth(key),
        timeout=30,
    )


async def doc_ids(running: Running, query: str, key: str = KEY_A) -> list[str]:
    return [c.doc_id for c in (await retrieve(running, query, key=key)).chunks]


class Load:
    """Retrieve calls in a loop on each server given, counting outcomes by status."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str]] = []  # (status, embedder id)
        self._stop = asyncio.Event()
        self._progress = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def drive(self, running: Running, query: str) -> None:
        self._tasks.append(asyncio.create_task(self._loop(running, query)))

    async def _loop(self, running: Running, query: str) -> None:
        while not self._stop.is_set():
            try:
                response = await retrieve(running, query)
                self.outcomes.append(("OK", response.embedder_id))
            except grpc.aio.AioRpcError as error:
                self.outcomes.append((error.code().name, ""))
            self._progress.set()

    async def calls_after(self, count: int) -> None:
        """Wait until ``count`` more calls finished."""
        target = len(self.outcomes) + count
        while len(self.outcomes) < target:
            self._progress.clear()
            await self._progress.wait()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


@pytest.mark.model
async def test_build_switch_rollback_under_load_with_ingest_during_the_build(
    make_server: ServerFactory,
    settings: Settings,
    endpoint: EmbeddingsServer,
    embedder: DenseEmbedder,
) -> None:
    alias = settings.qdrant_collection
    old = await serve(make_server, settings, "local")
    assert collection_of(old) == f"{alias}__1"  # a new deployment starts as an alias
    await old.ingest([note(d) for d in TEXTS] + corpus())
    await old.ingest([note("n0")], key=KEY_B)

    # Ingest on the live generation while the build runs: nothing of it may be lost.
    build = asyncio.create_task(reindex.build(settings, new_embedder(endpoint)))
    during = [note(f"late{i}", f"late note {i} written during the build") for i in range(8)]
    for doc in during:
        await old.ingest([doc])
    result = await build
    assert result.target == f"{alias}__2"
    assert result.report.source_documents >= len(TEXTS) + len(corpus()) + 1
    # After the build, before the switch: an update and a delete on the live generation.
    await old.ingest([note("n1", "note 1 rewritten about meteors")])
    await old.documents.DeleteDocuments(
        documents_pb2.DeleteDocumentsRequest(doc_ids=["n2"]), metadata=auth(KEY_A)
    )

    load = Load()
    try:
        load.drive(old, PARAPHRASES["volcano"])
        await load.calls_after(5)
        switched_at = len(load.outcomes)
        # The catch-up before the switch copies what the build missed (the update at least).
        switch = await reindex.switch(settings, new_embedder(endpoint))
        assert switch is not None and switch.report.copied_documents >= 1
        assert switch.report.deleted_documents == 1
        new = await serve(make_server, settings, new_embedder(endpoint))  # a restarted replica
        load.drive(new, TEXTS["n3"])
        await load.calls_after(30)
    finally:
        await load.stop()
    during_switch = load.outcomes[switched_at:]
    assert [o for o in during_switch if o[0] != "OK"] == []
    # Each server answers from the generation its embedder was built for.
    assert {e for _, e in during_switch} == {embedder.embedder_id, "hash-8/8"}

    assert collection_of(new) == f"{alias}__2"
    assert new.server.components.namespace != old.server.components.namespace
    for doc in during:
        assert (await doc_ids(new, doc.text))[0] == doc.doc_id
    assert (await doc_ids(new, "note 1 rewritten about meteors"))[0] == "n1"
    assert "n2" not in await doc_ids(new, TEXTS["n2"])
    assert (await doc_ids(new, TEXTS["n0"], key=KEY_B)) == ["n0"]  # tenants stay apart

    # A server still on the old generation writes during the rollout; catch-up copies it.
    await old.ingest([note("rollout", "written on the old generation after the switch")])
    caught = await reindex.catch_up(settings, new_embedder(endpoint))
    assert caught.report.copied_documents == 1
    assert (await doc_ids(new, "written on the old generation after the switch"))[0] == "rollout"

    back = await reindex.rollback(settings)
    assert back.name == f"{alias}__1"
    restarted = await serve(make_server, settings, "local")
    assert collection_of(restarted) == f"{alias}__1"
    answer = await retrieve(restarted, PARAPHRASES["volcano"])
    assert answer.embedder_id == embedder.embedder_id
    assert answer.chunks[0].doc_id == "volcano"


@pytest.mark.model
async def test_a_switch_never_serves_an_entry_cached_from_the_other_generation(
    make_server: ServerFactory, settings: Settings, embedder: DenseEmbedder
) -> None:
    """Same embedder on both generations, so cache keys differ only by namespace: the new
    generation's server deletes a document, the old one then caches an answer holding it;
    the new server must not be served that entry."""
    old = await serve(make_server, settings, "local")
    await old.ingest(corpus())
    await reindex.build(settings, embedder)
    await reindex.switch(settings, embedder)
    new = await serve(make_server, settings, "local")
    assert old.server.components.namespace == key_namespace(
        settings.redis_key_prefix, old.server.components.store.identity
    )
    assert old.server.components.store.identity.endswith(f"/{settings.qdrant_collection}__1")
    assert new.server.components.store.identity.endswith(f"/{settings.qdrant_collection}__2")

    await new.documents.DeleteDocuments(
        documents_pb2.DeleteDocumentsRequest(doc_ids=["volcano"]), metadata=auth(KEY_A)
    )
    cached = await retrieve(old, PARAPHRASES["volcano"], cache=True)
    assert cached.chunks[0].doc_id == "volcano"
    await old.settle()
    assert (await retrieve(old, PARAPHRASES["volcano"], cache=True)).cache_hit

    fresh = await retrieve(new, PARAPHRASES["volcano"], cache=True)
    assert not fresh.cache_hit
    assert "volcano" not in [c.doc_id for c in fresh.chunks]


async def test_switch_without_a_build_and_rollback_without_a_switch_are_refused(
    make_server: ServerFactory, settings: Settings
) -> None:
    running = await serve(make_server, settings, None)
    assert collection_of(running) == f"{settings.qdrant_collection}__1"
    with pytest.raises(ReindexError, match="reindex build first"):
        await reindex.switch(settings, None)
    with pytest.raises(ReindexError, match="no switch was made"):
        await reindex.rollback(settings)
    lines: list[str] = []
    await reindex.status(settings, say=lines.append)
    assert lines[0].startswith(f"qdrant: live {settings.qdrant_collection}__1")
