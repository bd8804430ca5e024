"""What ``groundwire serve`` checks before the slow part of its start.

Loading the composition root (gRPC, qdrant-client, onnxruntime: seconds of imports) and the
embedder (seconds more, tens on a busy machine) used to come before the errors a person most
often makes: a catalog file that does not parse, a second server on a data directory or a
port another one already holds. They now come first, from light modules only, so such a start
fails in well under a second with the same words as before.

The checks look without holding anything: the Edge lock is tried and released again (it has
to be, since worker 0, forked later, takes it for good), the port is bound and closed. A
second server that slips into the gap still fails later, where it always did.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from groundwire.clients.errors import VectorStoreUnavailableError
from groundwire.clients.vector_store.edge_pointer import LOCK_FILE, live_dir
from groundwire.server.pipeline.generation.catalog import CatalogError, load_catalog
from groundwire.server.settings import (
    Settings,
    VectorStoreKind,
    environment_secret,
    unknown_variables,
)

log = logging.getLogger(__name__)

# Exit statuses of `groundwire serve`, as workers.run_server has them: 2 a bad setting,
# 3 a refusal to start (the store or the port is another process's, a mismatched embedder).
EXIT_CONFIGURATION = 2
EXIT_CANNOT_START = 3


@dataclass(frozen=True)
class Refusal:
    """Why the server does not start (one line, our words) and the exit status."""

    message: str
    exit_code: int


def check_before_start(settings: Settings) -> Refusal | None:
    """The first reason the server given ``settings`` cannot start that is found without
    loading the server: the model catalog, the Edge store's owner, the listening port."""
    try:
        load_catalog(
            settings.llm_catalog,
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            secret=environment_secret,
        )
    except CatalogError as exc:
        return Refusal(f"GROUNDWIRE_LLM_CATALOG: {exc}", EXIT_CONFIGURATION)
    if settings.vector_store is VectorStoreKind.EDGE and settings.serves_retrieval:
        try:
            owner = edge_owner(live_dir(settings.data_dir / "edge"))
        except VectorStoreUnavailableError as exc:
            return Refusal(exc.message, EXIT_CANNOT_START)
        if owner is not None:
            return Refusal(owner, EXIT_CANNOT_START)
    return port_taken(settings.listen)


def warn_unknown_variables(settings: Settings) -> None:
    """Log a warning per ``GROUNDWIRE_`` variable nothing reads (a misspelt setting is
    otherwise silently ignored), naming the closest setting; the variables the model catalog
    names for API keys are known too."""
    for variable in unknown_variables(also_known=catalog_key_variables(settings)):
        log.warning(str(variable), extra={"variable": variable.name, "closest": variable.closest})


def catalog_key_variables(settings: Settings) -> frozenset[str]:
    """The environment variables the catalog names for its models' API keys (none when it
    does not load: :func:`check_before_start` says why)."""
    try:
        catalog = load_catalog(
            settings.llm_catalog,
            base_url=settings.llm_base_url or "http://catalog.invalid",  # every model listed
            api_key=None,
            secret=lambda _name: "listed",
        )
    except CatalogError:
        return frozenset()
    return frozenset(m.api_key_env for m in catalog.models.values() if m.api_key_env)


def edge_owner(store_dir: Path) -> str | None:
    """Who holds the Edge store in ``store_dir`` (a sentence naming its pid), or None when
    no process does; the lock is released again at once."""
    try:
        fd = os.open(store_dir / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return None  # never opened: nobody owns it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            return (
                f"the Edge store at {store_dir} is owned by another process (pid {pid}); only "
                "one may own an Edge shard. Stop the other owner, or give this one its own "
                "data directory (GROUNDWIRE_DATA_DIR)."
            )
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def port_taken(listen: str) -> Refusal | None:
    """A refusal when another process listens on ``listen``'s port (bound without
    SO_REUSEPORT, so a server whose workers share their port is found too); None when it is
    free, or port 0, or the address does not resolve here (the server's bind reports that)."""
    host, _, port = listen.rpartition(":")
    if int(port) == 0:
        return None
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]"), int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return None
    for family, kind, protocol, _, address in addresses:
        with contextlib.closing(socket.socket(family, kind, protocol)) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return Refusal(
                        f"GROUNDWIRE_LISTEN: {listen} is in use by another process (another "
                        "groundwire server?); stop it or choose another port",
                        EXIT_CANNOT_START,
                    )
    return None
