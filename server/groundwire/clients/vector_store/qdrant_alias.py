"""The live collection name as a Qdrant alias over numbered physical collections.

``GROUNDWIRE_QDRANT_COLLECTION`` (say ``docs``) is an alias for one of its generations,
``docs__1``, ``docs__2``, …: physical collections, each built for one embedder. A reindex
builds the next generation beside the live one and switches the alias in one atomic
``update_collection_aliases`` request; ``docs__previous`` is switched in the same request to
the generation that was live, so a rollback knows where to go.

A server resolves the alias once, at start, and pins the physical collection: its identity
(which names its entries in Redis) is the physical collection, so entries cached from one
generation are never read by a server on another. A switch therefore takes effect server by
server as they restart (a rolling restart), and calls on running servers never notice it;
each server answers from the generation its embedder was built for.

A plain collection named ``docs`` (created before aliases) is used as it is; a reindex can
build from it, but the name cannot become an alias while the collection exists (Qdrant
refuses): see the README's "Changing embedders: reindex".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qdrant_client import models

from groundwire.clients.errors import VectorStoreUnavailableError
from groundwire.clients.vector_store.qdrant_tenancy import Caller

PREVIOUS_SUFFIX = "__previous"


def generation_name(alias: str, number: int) -> str:
    """The physical collection of generation ``number`` of ``alias``."""
    return f"{alias}__{number}"


def generation_number(alias: str, collection: str) -> int | None:
    """``n`` when ``collection`` is ``<alias>__<n>``; else None."""
    found = re.fullmatch(re.escape(alias) + r"__(\d+)", collection)
    return int(found[1]) if found else None


def previous_alias(alias: str) -> str:
    """The alias that names the generation live before the last switch."""
    return alias + PREVIOUS_SUFFIX


@dataclass(frozen=True)
class Layout:
    """What exists for one live name: its alias target (None when it is no alias), whether a
    plain collection has the name, the generation live before the last switch, and every
    generation by number."""

    alias: str
    live: str | None
    plain: bool
    previous: str | None
    generations: dict[int, str]

    @property
    def serving(self) -> str | None:
        """The physical collection a server starting now would use (None: none yet)."""
        return self.live if self.live is not None else (self.alias if self.plain else None)

    @property
    def next_number(self) -> int:
        """The number the next new generation gets."""
        return max(self.generations, default=1) + 1


async def layout(call: Caller, alias: str) -> Layout:
    """Ask the server what exists under ``alias``."""
    described = await call("get_aliases", lambda client, _: client.get_aliases())
    targets = {a.alias_name: a.collection_name for a in described.aliases}
    listed = await call("get_collections", lambda client, _: client.get_collections())
    names = {c.name for c in listed.collections}
    generations = {
        number: name for name in names if (number := generation_number(alias, name)) is not None
    }
    return Layout(
        alias=alias,
        live=targets.get(alias),
        plain=alias in names,
        previous=targets.get(previous_alias(alias)),
        generations=generations,
    )


async def resolve(call: Caller, alias: str) -> tuple[str, bool]:
    """The physical collection to pin for ``alias``, and whether the alias must still be
    created (nothing exists yet: generation 1 is created with the alias over it)."""
    found = await layout(call, alias)
    serving = found.serving
    if serving is not None:
        return serving, False
    return generation_name(alias, 1), True


async def create_alias(call: Caller, alias: str, collection: str) -> None:
    """Point the new alias ``alias`` at ``collection``; an alias another replica created
    meanwhile is fine when it points there too."""
    operation = models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)
    )
    try:
        await call(
            "update_collection_aliases",
            lambda client, timeout: client.update_collection_aliases([operation], timeout=timeout),
        )
    except VectorStoreUnavailableError:
        if (await layout(call, alias)).live != collection:
            raise


async def switch(call: Caller, alias: str, target: str, previous: str | None) -> None:
    """Point ``alias`` at ``target`` and ``<alias>__previous`` at ``previous``, in one atomic
    request: a reader of the alias sees the old collection or the new one, never neither."""
    found = await layout(call, alias)
    operations: list[models.DeleteAliasOperation | models.CreateAliasOperation] = []
    for name, collection in ((alias, target), (previous_alias(alias), previous)):
        if (found.live if name == alias else found.previous) is not None:
            operations.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=name))
            )
        if collection is not None:
            operations.append(
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=collection, alias_name=name)
                )
            )
    await call(
        "update_collection_aliases",
        lambda client, timeout: client.update_collection_aliases(operations, timeout=timeout),
    )
