"""The one port generation and capabilities see retrieval through, in-process or not.

:class:`~groundwire.server.pipeline.retrieval.RetrievalPipeline` implements it over the
process's own store and embedder; :class:`~groundwire.server.pipeline.remote_retrieval.
RemoteRetriever` over the ``groundwire.v1`` contract, to the Edge shard's owner (a Unix socket)
or to a retrieval deployment (the network). Whoever holds a ``Retriever`` cannot tell which.
"""

from __future__ import annotations

from typing import Protocol

from groundwire.clients.models import SearchMode
from groundwire.server.pipeline.retrieval import RetrievalQuery, RetrievalResult


class Retriever(Protocol):
    """Finds a tenant's best chunks for a validated query."""

    @property
    def default_mode(self) -> SearchMode:
        """The mode a request that names none gets."""
        ...

    @property
    def supported_modes(self) -> tuple[SearchMode, ...]:
        """The modes this retrieval can serve."""
        ...

    @property
    def embedder_id(self) -> str:
        """The dense embedder's id, or empty when there is none."""
        ...

    async def retrieve(self, tenant: str, query: RetrievalQuery) -> RetrievalResult:
        """The top chunks for ``query`` in ``tenant``'s corpus."""
        ...

    async def drain(self) -> None:
        """Wait for background work in flight (at shutdown)."""
        ...
