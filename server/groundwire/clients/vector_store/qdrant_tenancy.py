"""What the Qdrant server behind a store can do for tenancy, and the settings it runs with.

Sparse scores use IDF (``Modifier.IDF``), and IDF counts documents: if it counts every
tenant's documents, one tenant's ingest moves another tenant's scores (and tells it something
about the other corpus). Qdrant computes IDF per shard, over everything in the shard. Three
ways to keep it to the tenant, chosen once per store at start (:func:`choose_scope`):

- ``CORPUS_FILTER``: Qdrant 1.19 and later take ``SearchParams.idf`` (a filter naming the
  corpus IDF is computed over); we pass the tenant filter. One shard for all tenants, the
  ``is_tenant`` index and per-tenant HNSW graphs, as Qdrant's multitenancy guide says.
- ``TENANT_SHARDS``: before 1.19 that parameter is silently ignored, so a collection created
  there uses custom sharding with one shard key (one shard) per tenant, created on the
  tenant's first write. IDF per shard is then IDF per tenant; measured on 1.18.3: a tenant's
  scores stay put while another tenant's shard fills, with or without a shard selector on the
  search. Custom sharding needs Qdrant's distributed mode (a cluster, or one peer started
  with ``cluster.enabled``). It costs a shard per tenant, which suits tens to thousands of
  tenants, not millions; upgrading the server to 1.19 is the way out for those.
- ``UNSCOPED``: a 1.18 server without distributed mode, or a collection created with one
  shard for everyone on such a server: sparse and hybrid searches are refused with
  :class:`SparseScopeUnavailableError` naming the version and the remedies, rather than
  mixing corpora silently. Dense search is unaffected (cosine needs no corpus statistics).

The scope was chosen over refusing sparse everywhere before 1.19 because it keeps sparse and
hybrid working on 1.18 clusters, which is where the production deployments are.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from qdrant_client import AsyncQdrantClient, models

from groundwire.clients.errors import GroundwireError

T = TypeVar("T")

log = logging.getLogger("groundwire.clients.vector_store")

# The first Qdrant release whose searches take ``SearchParams.idf``.
IDF_SCOPE_VERSION = (1, 19, 0)


class SparseScope(enum.Enum):
    """How a store keeps IDF to the tenant's own chunks."""

    CORPUS_FILTER = "corpus_filter"
    TENANT_SHARDS = "tenant_shards"
    UNSCOPED = "unscoped"


class Caller(Protocol):
    """The store's call wrapper: ``call(client, timeout)`` on the nodes ``op`` goes to,
    within its timeout, vendor errors in our words."""

    def __call__(
        self, op: str, call: Callable[[AsyncQdrantClient, int], Awaitable[T]]
    ) -> Awaitable[T]: ...


@dataclass(frozen=True)
class ServerFacts:
    """What the server said about itself at start."""

    version: str
    distributed: bool

    @property
    def scopes_idf(self) -> bool:
        """Whether searches on this server take ``SearchParams.idf``."""
        parsed = parse_version(self.version)
        # An unparseable version (a development build) is taken to be recent.
        return parsed is None or parsed >= IDF_SCOPE_VERSION


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``"1.18.3"`` → (1, 18, 3); ``"v1.19.0-rc1"`` → (1, 19, 0); None if not a version."""
    found = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if found is None:
        return None
    return int(found[1]), int(found[2]), int(found[3] or 0)


async def server_facts(call: Caller) -> ServerFacts:
    """The server's version, and whether it runs in distributed mode (asked only when the
    version needs a shard per tenant; qdrant-client's local mode has no cluster)."""
    info = await call("info", lambda client, _: client.info())
    facts = ServerFacts(version=info.version, distributed=False)
    if not facts.scopes_idf:
        status = await call("cluster_status", lambda client, _: client.cluster_status())
        facts = ServerFacts(version=info.version, distributed=status.status == "enabled")
    return facts


def choose_scope(facts: ServerFacts, sharding: models.ShardingMethod | None) -> SparseScope:
    """The scope for a collection sharded by ``sharding`` (None: not created yet)."""
    if sharding == models.ShardingMethod.CUSTOM:
        return SparseScope.TENANT_SHARDS  # created that way: keep writing a shard per tenant
    if facts.scopes_idf:
        return SparseScope.CORPUS_FILTER
    if sharding is None and facts.distributed:
        return SparseScope.TENANT_SHARDS
    return SparseScope.UNSCOPED


def refusal(facts: ServerFacts, collection: str) -> str:
    """Why sparse and hybrid searches are refused, and what an operator can do."""
    return (
        f"sparse and hybrid search are unavailable: Qdrant {facts.version} cannot keep sparse "
        f"scores to one tenant's documents in collection {collection!r} (IDF over every "
        "tenant's corpus). Upgrade Qdrant to 1.19 or later, or run it in distributed mode "
        "(cluster.enabled) and point GROUNDWIRE_QDRANT_COLLECTION at a new collection, which "
        "groundwire then creates with a shard per tenant; dense search works meanwhile"
    )


class TenantShards:
    """The shard keys (one per tenant) of a custom-sharded collection, created on a tenant's
    first write. Keys are never dropped, so a key once seen exists; another replica may have
    created one this process has not seen, which :meth:`ensure` finds out by asking."""

    def __init__(self, collection: str, call: Caller, *, replication_factor: int | None) -> None:
        self._collection = collection
        self._call = call
        self._replication_factor = replication_factor
        self._known: set[str] = set()
        # One creation at a time in this process: two first writes of a tenant make one key.
        self._creating = asyncio.Lock()

    def knows(self, tenant: str) -> bool:
        """Whether the tenant's shard is known to exist."""
        return tenant in self._known

    async def load(self) -> None:
        """Learn the keys that exist now."""
        self._known |= await self._existing()

    async def exists(self, tenant: str) -> bool:
        """Whether the tenant has its shard (asking the server unless it is known)."""
        if tenant not in self._known and tenant in await self._existing():
            self._known.add(tenant)
        return tenant in self._known

    async def ensure(self, tenant: str) -> None:
        """Make sure the tenant has its shard before it is written to."""
        if tenant in self._known:
            return
        async with self._creating:
            await self._create(tenant)
        self._known.add(tenant)

    async def _create(self, tenant: str) -> None:
        if tenant in self._known:
            return  # created while this call waited for the lock
        if tenant not in await self._existing():
            try:
                await self._call(
                    "create_shard_key",
                    lambda client, timeout: client.create_shard_key(
                        self._collection,
                        tenant,
                        shards_number=1,  # one shard per tenant: its IDF is the tenant's
                        replication_factor=self._replication_factor,
                        timeout=timeout,
                    ),
                )
            except GroundwireError:
                # Another replica may have created it meanwhile; then it is there now.
                if tenant not in await self._existing():
                    raise
        self._known.add(tenant)

    async def _existing(self) -> set[str]:
        info = await self._call(
            "collection_cluster_info",
            lambda client, _: client.collection_cluster_info(self._collection),
        )
        shards: Iterable[models.LocalShardInfo | models.RemoteShardInfo] = [
            *info.local_shards,
            *info.remote_shards,
        ]
        return {str(s.shard_key) for s in shards if s.shard_key is not None}


async def reconcile_cluster_settings(
    collection: str,
    call: Caller,
    described: models.CollectionInfo,
    *,
    replication_factor: int | None,
    write_consistency_factor: int | None,
) -> None:
    """Apply the replication factor and write consistency the settings ask for to an existing
    collection, and warn about what an update cannot change.

    ``update_collection`` changes both parameters, but Qdrant does not add or remove replicas
    of shards that exist: those keep their count until an operator replicates or drops them.
    So after the update every shard's replica count is compared with the wanted factor and a
    WARNING names the setting, the value wanted and the value found.
    """
    params = described.config.params
    diff = models.CollectionParamsDiff(
        replication_factor=_changed(replication_factor, params.replication_factor),
        write_consistency_factor=_changed(
            write_consistency_factor, params.write_consistency_factor
        ),
    )
    if diff.replication_factor is not None or diff.write_consistency_factor is not None:
        await call(
            "update_collection",
            lambda client, timeout: client.update_collection(
                collection, collection_params=diff, timeout=timeout
            ),
        )
        log.info(
            "qdrant collection parameters updated",
            extra={
                "collection": collection,
                "replication_factor": replication_factor,
                "write_consistency_factor": write_consistency_factor,
            },
        )
    if replication_factor is None:
        return
    info = await call(
        "collection_cluster_info", lambda client, _: client.collection_cluster_info(collection)
    )
    replicas: dict[int, int] = {}
    shards: list[models.LocalShardInfo | models.RemoteShardInfo] = [
        *info.local_shards,
        *info.remote_shards,
    ]
    for shard in shards:
        if shard.state == models.ReplicaState.ACTIVE:
            replicas[shard.shard_id] = replicas.get(shard.shard_id, 0) + 1
    short = {shard: n for shard, n in sorted(replicas.items()) if n != replication_factor}
    if short:
        log.warning(
            "qdrant replication drift: setting GROUNDWIRE_QDRANT_REPLICATION_FACTOR wants "
            "%d active replicas per shard, found %s; Qdrant does not re-replicate existing "
            "shards on its own (replicate or drop replicas with its cluster API)",
            replication_factor,
            ", ".join(f"shard {shard}: {n}" for shard, n in short.items()),
            extra={
                "collection": collection,
                "setting": "GROUNDWIRE_QDRANT_REPLICATION_FACTOR",
                "wanted": replication_factor,
                "actual": short,
            },
        )


def _changed(wanted: int | None, actual: int | None) -> int | None:
    return wanted if wanted is not None and wanted != actual else None


def read_consistency(value: str | None) -> models.ReadConsistency | None:
    """``all``, ``majority``, ``quorum`` or a number of replicas, as Qdrant's type."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    return models.ReadConsistencyType(value)


def write_ordering(value: str | None) -> models.WriteOrdering | None:
    """``weak``, ``medium`` or ``strong``, as Qdrant's type."""
    return None if value is None else models.WriteOrdering(value)
