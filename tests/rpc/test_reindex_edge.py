"""``groundwire reindex`` on Qdrant Edge: generations under ``<data_dir>/edge``, a pointer
file switched atomically, the reindex run while the server is stopped (the Edge shard has
one owner); the owner socket's ReindexService refusing what it cannot run; and the sync
rules on two real Edge stores. (The online reindex under load: tests/e2e.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from groundwire.clients.embedder import OpenAIEmbedder
from groundwire.clients.models import ChunkRecord
from groundwire.clients.sparse import Bm25Encoder
from groundwire.clients.tokenization import default_remote_tokenizer
from groundwire.clients.vector_store import EdgeVectorStore
from groundwire.clients.vector_store import edge_pointer as ep
from groundwire.internal.v1 import reindex_pb2
from groundwire.server.pipeline.chunking import Chunker
from groundwire.server.pipeline.ingest import DocumentInput, IngestPipeline
from groundwire.server.reindex import command as reindex
from groundwire.server.reindex import job, remote
from groundwire.server.reindex.deployments import ReindexError
from groundwire.server.reindex.sync import COPIED, Reembedder, summarize, sync
from groundwire.server.roles import reindex_listener
from groundwire.server.settings import Settings, load_settings
from groundwire.v1 import documents_pb2
from tests.rpc.conftest import Running, ServerFactory
from tests.rpc.corpus import PARAPHRASES, corpus
from tests.rpc.embeddings_server import EmbeddingsServer
from tests.rpc.test_reindex_qdrant import doc_ids, retrieve

TEXT = "a note about lichens on granite"


@pytest.fixture
def endpoint() -> Iterator[EmbeddingsServer]:
    with EmbeddingsServer(dimension=8) as server:
        yield server


def new_embedder(endpoint: EmbeddingsServer) -> OpenAIEmbedder:
    return OpenAIEmbedder(base_url=endpoint.base_url, model="hash-8", dimension=8)


async def serve(make_server: ServerFactory, settings: Settings, dense: object) -> Running:
    """A server on the live generation, as ``groundwire serve`` opens it."""
    store = EdgeVectorStore(ep.live_dir(settings.data_dir / "edge"))
    return await make_server(store=store, dense=dense, data_dir=settings.data_dir)


@pytest.mark.model
async def test_offline_build_switch_and_rollback_through_the_pointer_file(
    make_server: ServerFactory, tmp_path: Path, redis_url: str, endpoint: EmbeddingsServer
) -> None:
    settings = load_settings(
        read_environment=False, data_dir=tmp_path / "gw", redis_url=redis_url, metrics_port=None
    )
    old = await serve(make_server, settings, "local")
    await old.ingest([*corpus(), documents_pb2.Document(doc_id="lichen", text=TEXT)])
    old_identity = old.server.components.store.identity

    # A server without its owner socket (this one is in-process) holds the store: the
    # offline step says so.
    with pytest.raises(ReindexError, match="owner socket, but none answered"):
        await reindex.build(settings, new_embedder(endpoint))
    await old.server.stop(grace_s=0)

    built = await reindex.build(settings, new_embedder(endpoint))
    assert (built.source, built.target) == (".", "gen-2")
    assert built.report.copied_documents == len(corpus()) + 1
    assert ep.read_pointer(settings.data_dir / "edge").live == "."  # not switched yet
    await reindex.switch(settings, new_embedder(endpoint))
    assert ep.read_pointer(settings.data_dir / "edge") == ep.Pointer("gen-2", ".")

    new = await serve(make_server, settings, new_embedder(endpoint))
    assert new.server.components.store.identity != old_identity
    answer = await retrieve(new, TEXT)
    assert answer.embedder_id == "hash-8/8"
    assert answer.chunks[0].doc_id == "lichen"
    await new.server.stop(grace_s=0)

    back = await reindex.rollback(settings)
    assert back.name == "."
    again = await serve(make_server, settings, "local")
    assert again.server.components.store.identity == old_identity
    assert (await doc_ids(again, PARAPHRASES["volcano"]))[0] == "volcano"


def test_a_damaged_pointer_file_is_refused_in_our_words(tmp_path: Path) -> None:
    (tmp_path / ep.POINTER_FILE).write_text('{"live": "../elsewhere"}')
    with pytest.raises(Exception, match="not a groundwire pointer file"):
        ep.live_dir(tmp_path)


# -- the sync rules, on two Edge stores (sparse only: no model) -----------------------------


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[EdgeVectorStore, EdgeVectorStore]]:
    source, target = EdgeVectorStore(tmp_path / "old"), EdgeVectorStore(tmp_path / "new")
    for store in (source, target):
        await store.ensure_collection("", 0)
    yield source, target
    for store in (source, target):
        await store.close()


def pipeline(store: EdgeVectorStore, chunk_tokens: int = 16) -> IngestPipeline:
    return IngestPipeline(
        store=store,
        chunker=Chunker(default_remote_tokenizer(), chunk_tokens, 0),
        sparse=Bm25Encoder(),
        dense=None,
        cache=None,
        index_signature="test",
        max_document_bytes=1 << 20,
    )


async def ingest(store: EdgeVectorStore, tenant: str, docs: dict[str, str]) -> None:
    async def stream() -> AsyncIterator[DocumentInput]:
        for position, (doc_id, text) in enumerate(docs.items()):
            yield DocumentInput(position, doc_id, "", text, "", {})

    await pipeline(store).ingest(tenant, stream())


async def hashes(store: EdgeVectorStore) -> dict[tuple[str, str], str]:
    return {key: state.content_hash for key, state in (await summarize(store)).items()}


async def test_sync_copies_changes_deletes_removals_and_keeps_the_new_generations_writes(
    stores: tuple[EdgeVectorStore, EdgeVectorStore],
) -> None:
    source, target = stores
    reembed = Reembedder(None, Bm25Encoder(), batch_chunks=3)
    long_text = " ".join(f"word{i}" for i in range(60))  # several chunks
    await ingest(source, "a", {"keep": "stays the same", "grow": "short", "gone": "to delete"})
    await ingest(source, "a", {"long": long_text})
    await ingest(source, "b", {"keep": "tenant b's own"})

    first = await sync(source, target, reembed)
    assert first.copied_documents == 5 and first.unchanged_documents == 0
    copied = await hashes(target)
    assert all(h.startswith(COPIED) for h in copied.values())
    assert await target.count("b") == 1

    # The live generation changes: an update, a shrink, a delete. The new one gets a
    # document of its own (a server already on it).
    await ingest(source, "a", {"grow": "now a longer text than before", "long": "short now"})
    await source.delete_documents("a", ["gone"])
    await ingest(target, "a", {"own": "written on the new generation"})

    second = await sync(source, target, reembed)
    assert second.copied_documents == 2  # grow, long
    assert second.unchanged_documents == 2  # keep (a), keep (b)
    assert second.deleted_documents == 1  # gone
    assert second.stale_chunks >= 1  # long's tail
    assert second.kept_documents == 1  # own
    after = await hashes(target)
    assert set(after) == {("a", "keep"), ("a", "grow"), ("a", "long"), ("a", "own"), ("b", "keep")}
    assert not after[("a", "own")].startswith(COPIED)
    source_now = await hashes(source)
    for key in [("a", "keep"), ("a", "grow"), ("a", "long")]:
        assert after[key] == COPIED + source_now[key]
    texts = await target.scan(None, 100, full=True)
    long_chunks = [c.record for c in texts[0] if c.record.doc_id == "long"]
    assert [r.text for r in long_chunks] == ["short now"]

    third = await sync(source, target, reembed)  # nothing left to do
    assert (third.copied_documents, third.deleted_documents, third.stale_chunks) == (0, 0, 0)
    assert isinstance(long_chunks[0], ChunkRecord)


async def test_the_owner_socket_refuses_bad_steps_in_our_words(
    make_server: ServerFactory, tmp_path: Path, redis_url: str
) -> None:
    settings = load_settings(
        read_environment=False, data_dir=tmp_path / "gw", redis_url=redis_url, metrics_port=None
    )
    running = await serve(make_server, settings, None)
    await running.ingest(corpus())
    listener = reindex_listener(running.server.settings, running.server.components)
    assert listener is not None
    await listener.start()
    try:
        owner = await remote.find_owner(running.server.settings)
        assert owner is not None
        assert owner.description.serving_generation == "."
        assert owner.description.serving_embedder_id == ""  # sparse only
        stub = owner.stub

        async def refusal(request: reindex_pb2.RunStepRequest) -> grpc.aio.AioRpcError:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                async for _ in stub.RunStep(request, timeout=30):
                    pass
            return error.value

        unknown = await refusal(
            reindex_pb2.RunStepRequest(step=reindex_pb2.STEP_BUILD, settings={"data_dir": '"/"'})
        )
        assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "settings: not taken from a reindex command: data_dir" in (unknown.details() or "")
        no_step = await refusal(reindex_pb2.RunStepRequest())
        assert no_step.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "step" in (no_step.details() or "")
        nothing = await refusal(
            reindex_pb2.RunStepRequest(
                step=reindex_pb2.STEP_SWITCH, settings=job.encode(running.server.settings)
            )
        )
        assert nothing.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "run groundwire reindex build first" in (nothing.details() or "")

        # A build through the owner, printed as the command prints it.
        lines: list[str] = []
        result = await remote.run_step(owner, "build", running.server.settings, say=lines.append)
        assert (result.source, result.target, result.live_generation) == (".", "gen-2", ".")
        assert result.copied_documents == len(corpus())
        assert any("chunks embedded" in line for line in lines)
        assert lines[-1].startswith("built gen-2; live is still .")
        await owner.close()
    finally:
        await listener.stop(0)
    assert remote_owner_gone(running.server.settings)


def remote_owner_gone(settings: Settings) -> bool:
    """After the listener stopped, no advertisement is left behind."""
    from groundwire.server.owner_socket import find

    return find(settings.data_dir / "edge") is None
