"""The record of the embedder a collection is built with: in the collection's metadata on a
Qdrant server, in a JSON file beside an Edge shard (written whole or not at all), and the
check that the configured embedder is the one the vectors were made with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from groundwire.clients.errors import EmbedderMismatchError
from groundwire.clients.models import CollectionInfo

# Key under which the qdrant-client adapter keeps its record in the collection metadata.
COLLECTION_METADATA_KEY = "groundwire"


def check_embedder(
    stored: CollectionInfo, embedder_id: str, dimension: int, *, where: str, remedy: str
) -> None:
    """Raise EmbedderMismatchError unless the collection was built with this embedder."""
    if stored.embedder_id == embedder_id and stored.dimension == dimension:
        return

    def describe(eid: str, dim: int) -> str:
        return f"embedder {eid!r} (dimension {dim})" if eid else "no dense embedder (sparse only)"

    raise EmbedderMismatchError(
        f"{where} was built with {describe(stored.embedder_id, stored.dimension)}, but the "
        f"configured one is {describe(embedder_id, dimension)}. Vectors of different "
        f"embedders cannot be compared: configure "
        f"{describe(stored.embedder_id, stored.dimension)} again, or {remedy} and ingest the "
        "documents again. After `groundwire reindex switch`, start with the new embedder's "
        "configuration, or `groundwire reindex rollback`."
    )


def collection_metadata(info: CollectionInfo) -> dict[str, Any]:
    """The record of the embedder a collection is built with (JSON-ready)."""
    return {"embedder_id": info.embedder_id, "dimension": info.dimension}


def collection_info(data: Mapping[str, Any] | None) -> CollectionInfo | None:
    """Read a record written by :func:`collection_metadata`; None if absent or malformed."""
    if not isinstance(data, Mapping):
        return None
    embedder_id = data.get("embedder_id")
    dimension = data.get("dimension")
    if not isinstance(embedder_id, str) or not isinstance(dimension, int):
        return None
    return CollectionInfo(embedder_id=embedder_id, dimension=dimension)


def read_record(path: Path) -> CollectionInfo | None:
    """The collection record kept in a JSON file (Qdrant Edge has no collection metadata)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EmbedderMismatchError(f"{path} cannot be read: {exc}") from exc
    info = collection_info(data)
    if info is None:
        raise EmbedderMismatchError(f"{path} is not a groundwire collection record")
    return info


def write_record(path: Path, info: CollectionInfo) -> None:
    """Write the record whole or not at all: a crash leaves no record or the old one."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(collection_metadata(info), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
