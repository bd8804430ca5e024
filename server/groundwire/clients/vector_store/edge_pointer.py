"""Which Edge store directory is live: a pointer file, switched atomically by a reindex.

Layout under ``<data_dir>/edge`` (the root)::

    <root>/                        generation 1: the store as it always was (lock, record, shard)
    <root>/gen-2/, gen-3/, …       later generations, each a whole store directory of its own
    <root>/groundwire-live.json    {"live": "gen-2", "previous": "."}; absent means "."

Every generation has its own lock, collection record and shard id, so its entries in Redis
are its own (the identity names the shard that answers). The pointer file is written whole
or not at all (temporary file, fsync, rename, fsync of the directory): a crash leaves the old
pointer or the new one. A server reads it once, at start; a switch takes effect when the
server restarts.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from groundwire.clients.errors import VectorStoreUnavailableError

POINTER_FILE = "groundwire-live.json"
#: In each generation's directory: its owner's exclusive flock (one owning process at a time).
LOCK_FILE = "groundwire.lock"
FIRST = "."
_GENERATION = re.compile(r"gen-(\d+)")


@dataclass(frozen=True)
class Pointer:
    """The live generation and the one live before the last switch (None: none yet)."""

    live: str = FIRST
    previous: str | None = None


def generation_dir(root: Path, name: str) -> Path:
    """The store directory of generation ``name`` ("." or ``gen-<n>``)."""
    if not _is_generation(name):
        raise ValueError(f"{name!r} is not an Edge generation (expected '.' or 'gen-<n>')")
    return root if name == FIRST else root / name


def generation_names(root: Path) -> dict[int, str]:
    """Every generation under ``root`` by number ("." is 1)."""
    found = {1: FIRST}
    if root.is_dir():
        for child in root.iterdir():
            match = _GENERATION.fullmatch(child.name)
            if match and child.is_dir():
                found[int(match[1])] = child.name
    return found


def next_generation(root: Path) -> str:
    """The name of a new generation after every existing one."""
    return f"gen-{max(generation_names(root)) + 1}"


def read_pointer(root: Path) -> Pointer:
    """The pointer kept under ``root`` (the first generation when there is none)."""
    path = root / POINTER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Pointer()
    except (OSError, ValueError) as exc:
        raise VectorStoreUnavailableError(f"{path} cannot be read: {exc}") from exc
    live = data.get("live") if isinstance(data, dict) else None
    previous = data.get("previous") if isinstance(data, dict) else None
    valid = [name for name in (live, previous) if isinstance(name, str) and _is_generation(name)]
    if live not in valid or not (previous is None or previous in valid):
        raise VectorStoreUnavailableError(
            f'{path} is not a groundwire pointer file (expected {{"live": "gen-<n>" or '
            '".", "previous": …}); restore it or remove it to serve the first generation'
        )
    assert isinstance(live, str)
    return Pointer(live=live, previous=previous)


def _is_generation(name: str) -> bool:
    return name == FIRST or _GENERATION.fullmatch(name) is not None


def write_pointer(root: Path, pointer: Pointer) -> None:
    """Replace the pointer whole: a reader sees the old one or the new one."""
    path = root / POINTER_FILE
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump({"live": pointer.live, "previous": pointer.previous}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(root, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def live_dir(root: Path) -> Path:
    """The store directory a server opens: the live generation's."""
    return generation_dir(root, read_pointer(root).live)
