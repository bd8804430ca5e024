"""Recovery of an Edge shard after an unclean stop (SIGKILL, OOM kill, power cut).

Each Edge update is one WAL record and survives a kill whole or not at all (the store-kill
test kills inside upserts and deletes to show it). Replacing a document that shrank takes
two: the upsert of its new chunks ``0..n-1``, then the delete of its stale chunks ``n..``.
A kill between the two leaves a document whose head is the new version and whose tail is
the old one: not a document anyone wrote. Ingest would notice (the chunks disagree on the
content hash) and rewrite it, but only when that document is ingested again; until then a
search could return a stale chunk as part of it.

So a shard that was not closed cleanly is checked when it is opened: every document whose
chunks disagree on the hash keeps the chunks that agree with its chunk 0 (the head is
always the newer version, since the upsert that wrote it is atomic and starts at 0) and
loses the rest, in one delete. A clean close leaves a marker file, so the scan (a scroll of
every point's payload) only runs after a crash.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import qdrant_edge as edge

from groundwire.clients.vector_store import payload as pl

log = logging.getLogger(__name__)

CLEAN_STOP_FILE = "groundwire-clean-stop"
_FIELDS = [pl.TENANT_KEY, *pl.STORED_DOCUMENT_FIELDS]


def stopped_cleanly(path: Path) -> bool:
    """Whether the last owner of the store at ``path`` closed it (consumes the marker: from
    now on, until :func:`mark_clean_stop`, a stop is unclean)."""
    marker = path / CLEAN_STOP_FILE
    try:
        marker.unlink()
    except FileNotFoundError:
        return False
    return True


def mark_clean_stop(path: Path) -> None:
    """Record that the shard in ``path`` was flushed and closed."""
    marker = path / CLEAN_STOP_FILE
    with marker.open("w") as out:
        out.write("closed cleanly\n")
        out.flush()
        os.fsync(out.fileno())


def cut_short_chunks(shard: edge.EdgeShard) -> tuple[list[edge.PointId], int]:
    """The stale chunks of documents whose replacement was cut short, and how many
    documents have them."""
    # (tenant, doc id) -> chunk index -> (point id, content hash)
    documents: dict[tuple[str, str], dict[int, tuple[edge.PointId, str]]] = {}
    offset: edge.PointId | None = None
    while True:
        page, offset = shard.scroll(
            edge.ScrollRequest(offset=offset, limit=pl.SCROLL_PAGE, with_payload=_FIELDS)
        )
        for record in page:
            data = record.payload or {}
            key = (str(data.get(pl.TENANT_KEY, "")), str(data.get(pl.DOC_ID_KEY, "")))
            index = int(data.get(pl.CHUNK_INDEX_KEY, 0))
            documents.setdefault(key, {})[index] = (
                record.id,
                str(data.get(pl.CONTENT_HASH_KEY, "")),
            )
        if offset is None:
            break
    stale: list[edge.PointId] = []
    cut = 0
    for chunks in documents.values():
        hashes = {digest for _, digest in chunks.values()}
        head = chunks.get(0)
        if len(hashes) < 2 or head is None:
            continue  # whole (or without a head, which no write of ours leaves behind)
        cut += 1
        stale += [point for point, digest in chunks.values() if digest != head[1]]
    return stale, cut


def recover(shard: edge.EdgeShard, path: Path) -> int:
    """Delete the stale tails an unclean stop left in ``shard`` (one update, flushed);
    returns the number of documents repaired. Runs on a worker thread, at open."""
    stale, cut = cut_short_chunks(shard)
    if stale:
        shard.update(edge.UpdateOperation.delete_points(stale))
        shard.flush()
        log.warning(
            "repaired documents whose replacement an unclean stop cut short",
            extra={"store": path.name, "documents": cut, "stale_chunks": len(stale)},
        )
    return cut
