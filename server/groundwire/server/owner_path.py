"""Where the Edge shard's owner listens: a Unix socket beside the shard.

Its own small module (standard library only): the supervisor computes it before forking,
where nothing that loads gRPC or the metrics may be imported yet, and the owner's listeners
(:mod:`groundwire.server.roles`) use the same rule.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

OWNER_SOCKET_NAME = "owner.sock"
MAX_SOCKET_PATH_BYTES = 107  # sun_path holds 108 bytes with the terminating NUL


def owner_socket_path(data_dir: Path) -> tuple[Path, Path | None]:
    """Where the owner listens: ``<data_dir>/edge/owner.sock`` when that fits a Unix socket
    address, else a fresh private temporary directory; returns (path, the temporary directory
    to remove at exit, or None)."""
    path = (data_dir / "edge" / OWNER_SOCKET_NAME).resolve()
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, None
    directory = Path(tempfile.mkdtemp(prefix="groundwire-"))  # mode 0700
    return directory / OWNER_SOCKET_NAME, directory
