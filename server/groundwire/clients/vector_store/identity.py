"""What index a store is, as one string: the name its shared state in Redis is kept under.

Two servers see each other's cache entries and counters exactly when their identities are
equal, so an identity must name the data itself, not the process or the machine:

- an Edge shard is known by a random id generated once, when its directory is first used,
  and kept in the directory (``edge:<id>``). Copies of a directory keep the id (they start
  with the same data); a new directory, or one whose collection record was removed (the store
  starts empty), gets a new one.
- a Qdrant collection is known by where it lives: ``qdrant:<scheme>://<host>:<port>/<name>``
  with the host lowercased and the port explicit, so spellings of one URL agree. Replicas of a
  deployment must name the server the same way (one service address, not each a node of
  their own) to share entries.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

SHARD_ID_FILE = "groundwire-shard-id"
# qdrant-client's default REST port, used when the URL names none.
QDRANT_DEFAULT_PORT = 6333


def edge_shard_id(directory: Path, *, fresh: bool) -> str:
    """The shard id kept in ``directory`` (the caller holds the directory's ownership lock).

    A missing or unreadable id, or ``fresh=True`` (the store holds no data yet), writes a new
    one, whole or not at all.
    """
    path = directory / SHARD_ID_FILE
    if not fresh:
        try:
            stored = path.read_text(encoding="ascii").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            stored = ""
        if _valid(stored):
            return stored
    shard_id = secrets.token_hex(16)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="ascii") as handle:
        handle.write(shard_id + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return shard_id


def _valid(shard_id: str) -> bool:
    return len(shard_id) == 32 and all(c in "0123456789abcdef" for c in shard_id)


def qdrant_identity(url: str, collection: str) -> str:
    """``qdrant:<normalised url>/<collection>``; ``url`` as qdrant-client reads it (a bare
    ``host:port`` or host means ``http``)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = (parts.scheme or "http").lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port or QDRANT_DEFAULT_PORT
    prefix = parts.path.rstrip("/")
    return f"qdrant:{scheme}://{host}:{port}{prefix}/{collection}"


def unshared_qdrant_identity(collection: str) -> str:
    """The identity of a store whose server is unknown (a client handed in without its URL,
    e.g. qdrant-client's in-process mode): unique to this store object, so it shares nothing."""
    return f"qdrant:unnamed-{secrets.token_hex(8)}/{collection}"
