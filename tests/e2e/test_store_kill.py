"""SIGKILL inside a store write, then a restart: every document is whole or absent, and
ingesting again converges.

A child process (``tests.e2e.store_writer``: the product's ingest pipeline on a Qdrant Edge
store, sparse only) ingests a corpus in batches of a few hundred chunks; the parent kills it
with SIGKILL while a write is in Edge's hands (the child announces each write before and
after it, so the parent aims at the inside and then knows where the kill landed). Then the
parent opens the same store, as a restarted server would, and checks each document:

- new documents (version 1 into an empty store): whole version 1, or absent;
- changed documents (version 2 over version 1; some shrink, some grow): whole version 1 or
  whole version 2, never a mix and never with chunks of the other version left over.

"Whole" is structural: the stored content hash is that version's, the chunk indices are
exactly ``0..n-1`` for that version's chunk count, and the tenant's point count is the sum
over the documents present (nothing orphaned, nothing duplicated). Then the same corpus is
ingested again in-process and must converge: every document whole at that version, the
count exact, and a third ingest finds everything unchanged.

This test found that a kill between a shrinking document's upsert and the delete of its
stale chunks left the new head with the old tail; the Edge store now repairs that when it
is opened after an unclean stop (``groundwire.clients.vector_store.edge_recovery``).
"""

from __future__ import annotations

import asyncio
import functools
import random
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from groundwire.clients.tokenization import default_remote_tokenizer
from groundwire.server.pipeline.chunking import Chunker
from groundwire.server.pipeline.ingest import DocumentInput
from tests.e2e.store_writer import TENANT, build, corpus, document_inputs, settings_for

REPOSITORY = Path(__file__).resolve().parents[2]


async def kill_inside(data_dir: Path, version: int, target: int, op: str, where: str) -> str:
    """Run the writer; SIGKILL it inside (or just after) its ``target``-th ``op`` write.
    Returns where the kill landed: ``inside`` (the write had begun, not ended),
    ``outside`` or ``finished`` (the child ended first: the round proves nothing)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.e2e.store_writer",
        str(data_dir),
        str(version),
        cwd=REPOSITORY,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    seen = 0
    begun: str | None = None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            while line := (await child.stdout.readline()).decode():
                lines.append(line.strip())
                word, _, rest = line.partition(" ")
                name = rest.split()[0] if rest else ""
                if word == "begin" and name == op:
                    seen += 1
                    if seen == target:
                        begun = rest.split()[1]
                        if where == "inside":
                            # Upserts take ~50-300 ms here: land somewhere in their first
                            # part. Deletes take ~10 ms: at once.
                            await asyncio.sleep(random.uniform(0, 0.03) if op == "upsert" else 0)
                            child.send_signal(signal.SIGKILL)
                            break
                if word == "end" and where == "after" and begun == rest.split()[1]:
                    child.send_signal(signal.SIGKILL)
                    break
            rest_of_output = (await child.stdout.read()).decode()
            await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    lines += rest_of_output.split("\n")
    if any(line.startswith("done") for line in lines):
        return "finished"
    assert child.returncode == -signal.SIGKILL, lines
    ended = f"end {op} {begun}" in lines
    return "outside" if ended or begun is None else "inside"


@functools.cache
def chunk_count(text: str) -> int:
    """How many chunks the pipeline makes of ``text`` (the same chunker it is built with)."""
    return len(_chunker().split(text))


@functools.cache
def _chunker() -> Chunker:
    settings = settings_for(Path("."))
    return Chunker(default_remote_tokenizer(), settings.chunk_tokens, settings.chunk_overlap_tokens)


async def check_whole(data_dir: Path, versions: tuple[int, ...]) -> dict[str, str]:
    """Open the store as a restart would; each document's state (``v1``, ``v2``, ``absent``);
    fail on any document that is neither whole nor absent, or on any extra point."""
    components = await build(data_dir)
    try:
        expected: dict[int, dict[str, tuple[str, int]]] = {}
        for version in (1, 2):
            docs: list[DocumentInput] = document_inputs(version)
            expected[version] = {
                d.doc_id: (components.ingest.content_hash(d), chunk_count(d.text)) for d in docs
            }
        ids = [doc_id for doc_id, _ in corpus(1)]
        stored = await components.store.stored_documents(TENANT, ids)
        states: dict[str, str] = {}
        present_chunks = 0
        for doc_id in ids:
            found = stored.get(doc_id)
            if found is None:
                states[doc_id] = "absent"
                continue
            for version in versions:
                digest, count = expected[version][doc_id]
                if found.content_hash == digest and sorted(found.chunk_ids) == list(range(count)):
                    states[doc_id] = f"v{version}"
                    present_chunks += count
                    break
            else:
                pytest.fail(
                    f"{doc_id} is not whole: hash {found.content_hash!r} (empty: the chunks "
                    f"disagree), chunk indices {sorted(found.chunk_ids)}; whole would be "
                    + ", ".join(f"v{v}: {expected[v][doc_id][1]} chunks" for v in versions)
                )
        assert await components.store.count(TENANT) == present_chunks
        return states
    finally:
        await components.store.close()


async def converge(data_dir: Path, version: int) -> None:
    """Ingest ``version`` again in-process: everything whole at it, then nothing to do."""
    for attempt in range(2):
        components = await build(data_dir)
        try:

            async def documents() -> AsyncIterator[DocumentInput]:
                for doc in document_inputs(version):
                    yield doc

            summary = await components.ingest.ingest(TENANT, documents())
        finally:
            await components.store.close()
        if attempt == 1:
            assert summary.unchanged == len(corpus(version))
            assert summary.created == summary.updated == 0
    states = await check_whole(data_dir, (version,))
    assert set(states.values()) == {f"v{version}"}


async def kill_and_check(
    data_dir: Path,
    version: int,
    aim: tuple[int, str, str],
    versions: tuple[int, ...],
    restore: Callable[[], Awaitable[None]],
) -> dict[str, str]:
    """Kill the writer as ``aim`` says and check the store; a kill that missed the inside of
    its write (the machine was busy) is tried again from the same starting state."""
    target, op, where = aim
    for _ in range(3):
        landed = await kill_inside(data_dir, version, target, op, where)
        states = await check_whole(data_dir, versions)  # holds wherever the kill landed
        if landed == "inside" or (where == "after" and landed == "outside"):
            return states
        await restore()
    if op == "delete":
        # A delete takes ~10 ms: a busy machine may keep missing it. Each miss was still a
        # kill at some point of the ingest, checked above; the state a cut delete leaves is
        # also built by hand in tests/unit/test_edge_recovery.py.
        return states
    pytest.fail(f"three kills aimed inside {op} {target} all missed it")


async def test_sigkill_inside_a_store_write_leaves_documents_whole_or_absent(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"

    async def empty() -> None:
        shutil.rmtree(data_dir)

    async def nothing() -> None:
        pass

    # New documents: killed inside the second upsert of version 1.
    states = await kill_and_check(data_dir, 1, (2, "upsert", "inside"), (1,), empty)
    assert "absent" in states.values()  # the kill cut the ingest short...
    assert "v1" in states.values()  # ...after the batch before it
    await converge(data_dir, 1)

    # Changed documents, version 2 over version 1 (a third shrink, a third grow), killed
    # again and again, each time resuming from what the last kill left: inside an upsert,
    # between a batch's upsert and its delete of stale chunks, inside that delete.
    for aim in ((1, "upsert", "inside"), (1, "upsert", "after"), (1, "delete", "inside")):
        states = await kill_and_check(data_dir, 2, aim, (1, 2), nothing)
        assert "absent" not in states.values()  # a changed document never vanishes
    await converge(data_dir, 2)
