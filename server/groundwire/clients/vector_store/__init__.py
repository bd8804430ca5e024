"""The two VectorStore implementations: Qdrant Edge in-process (the embedded default) and a
Qdrant server or cluster through ``qdrant-client`` (production). Both store the same payload
and scope every read and write to the tenant inside the store.

The two classes load on first use, not with the package: qdrant-client alone takes a second
and more to import, and light modules of this package (``edge_pointer``: where the live Edge
generation is and its lock file) serve the server's start checks before anything heavy loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from groundwire.clients.vector_store.edge import EdgeVectorStore
    from groundwire.clients.vector_store.qdrant import QdrantVectorStore

__all__ = ["EdgeVectorStore", "QdrantVectorStore"]

_MODULES = {"EdgeVectorStore": "edge", "QdrantVectorStore": "qdrant"}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    return getattr(module, name)
