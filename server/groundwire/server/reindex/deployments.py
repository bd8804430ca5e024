"""Where the generations of an index live and how the live one is switched: a Qdrant alias
(``qdrant_alias``) or an Edge pointer file (``edge_pointer``), behind one small interface.

Generations are numbered. ``build`` writes the newest generation above the live one (a new
one when there is none), ``switch`` makes it live, ``rollback`` makes the one live before
the last switch live again. The live generation's data is only read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from groundwire.clients.errors import VectorStoreUnavailableError
from groundwire.clients.models import CollectionInfo
from groundwire.clients.vector_store import EdgeVectorStore, QdrantVectorStore
from groundwire.clients.vector_store import collection_record as cr
from groundwire.clients.vector_store import edge_pointer as ep
from groundwire.clients.vector_store import qdrant_alias as qa
from groundwire.clients.vector_store.edge import RECORD_FILE
from groundwire.clients.vector_store.qdrant_connection import (
    QdrantConnection,
)
from groundwire.clients.vector_store.scan import ScannedChunk, ScanOffset
from groundwire.server.components import qdrant_nodes, qdrant_store
from groundwire.server.reindex.sync import Scannable, Target
from groundwire.server.settings import Settings, VectorStoreKind


class ReindexError(Exception):
    """A reindex step that cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Generation:
    """One generation: its name, number, embedder (None: not built yet) and size."""

    name: str
    number: int
    embedder: CollectionInfo | None
    points: int | None


class Deployment(Protocol):
    """The generations of one index."""

    kind: str

    async def live(self) -> Generation:
        """The generation servers starting now use."""
        ...

    async def previous(self) -> Generation | None:
        """The generation live before the last switch."""
        ...

    async def generations(self) -> list[Generation]:
        """Every generation, oldest first."""
        ...

    async def open_source(self, generation: Generation) -> Scannable:
        """The generation, opened to be read whole."""
        ...

    async def open_target(self, name: str, embedder_id: str, dimension: int) -> Target:
        """The generation ``name``, created for the embedder if new (EmbedderMismatchError
        if it was built for another)."""
        ...

    def new_name(self, generations: Sequence[Generation]) -> str:
        """The name of a new generation after ``generations``."""
        ...

    async def make_live(self, target: Generation, previous: Generation) -> None:
        """Switch atomically: ``target`` live, ``previous`` remembered for a rollback."""
        ...

    async def release(self) -> None:
        """Close the generations opened (an Edge generation's lock goes with it)."""
        ...

    async def close(self) -> None:
        """Release the generations and every connection."""
        ...


class _Empty:
    """The source when the live generation holds nothing yet."""

    async def scan(
        self, offset: ScanOffset | None, limit: int, *, full: bool
    ) -> tuple[list[ScannedChunk], ScanOffset | None]:
        return [], None


class QdrantDeployment:
    """Generations ``<name>__<n>`` under the alias ``GROUNDWIRE_QDRANT_COLLECTION``."""

    kind = "qdrant"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._alias = settings.qdrant_collection
        self._admin = QdrantConnection(qdrant_nodes(settings))
        self._stores: list[QdrantVectorStore] = []

    async def _layout(self) -> qa.Layout:
        return await qa.layout(self._admin.run, self._alias)

    async def _describe(self, name: str, number: int) -> Generation:
        info = await self._admin.run("get_collection", lambda c, _: c.get_collection(name))
        metadata = info.config.metadata or {}
        embedder = cr.collection_info(metadata.get(cr.COLLECTION_METADATA_KEY))
        return Generation(name, number, embedder, info.points_count)

    async def live(self) -> Generation:
        found = await self._layout()
        serving = found.serving
        if serving is None:
            raise ReindexError(
                f"nothing to reindex: no collection or alias {self._alias!r} exists yet on the "
                "Qdrant server (start a server and ingest first)"
            )
        number = qa.generation_number(self._alias, serving) or 1
        return await self._describe(serving, number)

    async def previous(self) -> Generation | None:
        found = await self._layout()
        if found.previous is None:
            return None
        number = qa.generation_number(self._alias, found.previous) or 1
        return await self._describe(found.previous, number)

    async def generations(self) -> list[Generation]:
        found = await self._layout()
        listed = [(1, self._alias)] if found.plain else []
        listed += sorted(found.generations.items())
        return [await self._describe(name, number) for number, name in listed]

    def _store(self, name: str) -> QdrantVectorStore:
        store = qdrant_store(self._settings, name)
        self._stores.append(store)
        return store

    async def open_source(self, generation: Generation) -> Scannable:
        return self._store(generation.name)

    async def open_target(self, name: str, embedder_id: str, dimension: int) -> Target:
        store = self._store(name)
        await store.ensure_collection(embedder_id, dimension)
        return store

    def new_name(self, generations: Sequence[Generation]) -> str:
        return qa.generation_name(self._alias, max((g.number for g in generations), default=1) + 1)

    async def make_live(self, target: Generation, previous: Generation) -> None:
        if (await self._layout()).plain:
            raise ReindexError(
                f"{self._alias!r} is a plain collection, not an alias, and Qdrant cannot put an "
                "alias over an existing collection's name. Migrate once (README, \"Changing "
                f'embedders: reindex"): point the servers at {target.name!r} directly '
                f"(GROUNDWIRE_QDRANT_COLLECTION={target.name}), restart them, then delete "
                f"{self._alias!r} and create the alias"
            )
        await qa.switch(self._admin.run, self._alias, target.name, previous.name)

    async def release(self) -> None:
        stores, self._stores = self._stores, []
        for store in stores:
            await store.close()

    async def close(self) -> None:
        await self.release()
        await self._admin.close()


class EdgeDeployment:
    """Generations ``.`` and ``gen-<n>`` under ``<data_dir>/edge``, a pointer file naming the
    live one. The Edge store has one owning process: the command opens the generations
    itself while no server runs; a running server does the steps inside (``serving``: the
    store it serves, used as it is and never closed here; see :mod:`.owner`)."""

    kind = "edge"

    def __init__(self, settings: Settings, serving: EdgeVectorStore | None = None) -> None:
        self._settings = settings
        self._root = settings.data_dir / "edge"
        self._serving = serving
        self._stores: list[EdgeVectorStore] = []

    def serving_name(self) -> str | None:
        """The generation the owning server serves (None: no server here)."""
        if self._serving is None:
            return None
        where = self._serving.path.resolve()
        for name in ep.generation_names(self._root).values():
            if ep.generation_dir(self._root, name).resolve() == where:
                return name
        return None

    def _describe(self, name: str, number: int) -> Generation:
        record = cr.read_record(ep.generation_dir(self._root, name) / RECORD_FILE)
        return Generation(name, number, record, None)

    def _number(self, name: str) -> int:
        return 1 if name == ep.FIRST else int(name.removeprefix("gen-"))

    async def live(self) -> Generation:
        name = ep.read_pointer(self._root).live
        return self._describe(name, self._number(name))

    async def previous(self) -> Generation | None:
        name = ep.read_pointer(self._root).previous
        return None if name is None else self._describe(name, self._number(name))

    async def generations(self) -> list[Generation]:
        return [self._describe(n, i) for i, n in sorted(ep.generation_names(self._root).items())]

    def _open(self, directory: Path) -> EdgeVectorStore:
        if self._serving is not None and self._serving.path.resolve() == directory.resolve():
            return self._serving
        try:
            store = EdgeVectorStore(directory, hnsw=self._settings.edge_hnsw)
        except VectorStoreUnavailableError as exc:
            if self._serving is not None:
                raise ReindexError(f"{exc.message} (another reindex holds it?)") from exc
            raise ReindexError(
                f"{exc.message} A running groundwire server does the reindex itself, over its "
                "owner socket, but none answered: if a server is starting, wait until it "
                "serves; else stop the process that holds the store."
            ) from exc
        self._stores.append(store)
        return store

    async def open_source(self, generation: Generation) -> Scannable:
        if generation.embedder is None:
            return _Empty()
        store = self._open(ep.generation_dir(self._root, generation.name))
        await store.ensure_collection(
            generation.embedder.embedder_id, generation.embedder.dimension
        )
        return store

    async def open_target(self, name: str, embedder_id: str, dimension: int) -> Target:
        store = self._open(ep.generation_dir(self._root, name))
        await store.ensure_collection(embedder_id, dimension)
        return store

    def new_name(self, generations: Sequence[Generation]) -> str:
        return f"gen-{max((g.number for g in generations), default=1) + 1}"

    async def make_live(self, target: Generation, previous: Generation) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        ep.write_pointer(self._root, ep.Pointer(live=target.name, previous=previous.name))

    async def release(self) -> None:
        stores, self._stores = self._stores, []
        for store in stores:
            await store.close()

    async def close(self) -> None:
        await self.release()


def deployment_for(settings: Settings) -> Deployment:
    """The deployment the settings describe."""
    if settings.vector_store is VectorStoreKind.QDRANT:
        return QdrantDeployment(settings)
    return EdgeDeployment(settings)
