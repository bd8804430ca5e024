"""groundwire on real Qdrant servers through its connection settings: gRPC on a port of its
own, REST only, a 3-peer cluster losing a peer (and then the node groundwire enters by) under
a bounded Retrieve load, and reads near / writes home over two servers standing for two
regions. Run with ``-s`` to see the peer-kill table; the tests skip without a Qdrant binary.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from groundwire.clients.vector_store import QdrantVectorStore
from groundwire.clients.vector_store.qdrant_connection import (
    QdrantConnection,
    QdrantNode,
    QdrantNodes,
    Timeouts,
)
from groundwire.server.components import build_store
from groundwire.server.settings import load_settings
from groundwire.v1 import documents_pb2, retrieval_pb2
from tests.qdrant_server import (
    SKIP_REASON,
    ExternalQdrant,
    QdrantCluster,
    QdrantServer,
    qdrant_binary,
)
from tests.redis_server import free_port
from tests.rpc.conftest import KEY_A, Running, ServerFactory, auth

DOCS = [
    documents_pb2.Document(doc_id="basalt", text="Basalt forms when magma cools quickly."),
    documents_pb2.Document(doc_id="granite", text="Granite forms when magma cools slowly."),
    documents_pb2.Document(doc_id="apples", text="Apples grow on trees in orchards."),
]
QUERY = retrieval_pb2.RetrieveRequest(
    query="magma", mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE, bypass_cache=True, top_k=3
)


def node(server: QdrantServer | ExternalQdrant) -> QdrantNode:
    return QdrantNode(server.url, server.grpc_port)


async def sparse_server(make_server: ServerFactory, store: QdrantVectorStore) -> Running:
    """A sparse-only groundwire (no model) on ``store``, no cache: every call reaches Qdrant."""
    return await make_server(store=store, dense=None, embedder="none", cache=None)


async def doc_ids(running: Running) -> set[str]:
    response = await running.retrieval.Retrieve(QUERY, metadata=auth(KEY_A))
    return {chunk.doc_id for chunk in response.chunks}


@pytest.mark.parametrize("prefer_grpc", [True, False], ids=["grpc-own-port", "rest-only"])
async def test_grpc_on_a_port_of_its_own_and_rest_only(
    make_server: ServerFactory, qdrant_server: QdrantServer, prefer_grpc: bool
) -> None:
    # Through the settings, as a deployment configures it. The session's server has its gRPC
    # on a free port, never 6334; REST-only gets a gRPC port nothing listens on, unused.
    settings = load_settings(
        read_environment=False,
        vector_store="qdrant",
        qdrant_url=qdrant_server.url,
        qdrant_grpc_port=qdrant_server.grpc_port if prefer_grpc else free_port(),
        qdrant_prefer_grpc=prefer_grpc,
        qdrant_collection=f"port_{uuid.uuid4().hex[:8]}",
    )
    store = await build_store(settings)
    assert isinstance(store, QdrantVectorStore)
    # Dense: a single 1.18 server refuses sparse search (its IDF spans every tenant).
    running = await make_server(store=store, cache=None)
    await running.ingest(DOCS)
    dense = retrieval_pb2.RetrieveRequest(
        query="magma", mode=retrieval_pb2.RETRIEVAL_MODE_DENSE, bypass_cache=True, top_k=2
    )
    response = await running.retrieval.Retrieve(dense, metadata=auth(KEY_A))
    assert {chunk.doc_id for chunk in response.chunks} == {"basalt", "granite"}


# -- a 3-peer cluster losing peers under load ----------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[QdrantCluster]:
    binary = qdrant_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    with QdrantCluster(binary, peers=3) as started:
        yield started


@dataclass
class Row:
    """One line of the peer-kill table."""

    replication: int
    killed: str
    calls: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    ingest: Counter[str] = field(default_factory=Counter)
    failovers: int = 0
    # From the restart: our calls answered by the node again; its replicas Active again in
    # a surviving peer's view (Qdrant reports ready once they are, so both include start-up).
    served_again_s: float | None = None
    replicas_active_s: float | None = None

    @property
    def failed(self) -> int:
        return self.calls - self.statuses["OK"]

    def __str__(self) -> str:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        return (
            f"| {self.replication} | {self.killed:9} | {self.calls} | {self.failed} | "
            f"{dict(self.statuses)} | {dict(self.ingest)} | {self.failovers} | "
            f"{seconds(self.served_again_s)} | {seconds(self.replicas_active_s)} |"
        )


HEADER = (
    "| replication | killed | calls | failed | Retrieve statuses | ingest (calls) | failovers "
    "| served again s | replicas active s |"
)


async def retrieve_load(
    running: Running, row: Row, calls: int, concurrency: int, kill_at: int, kill: asyncio.Event
) -> None:
    """``calls`` Retrieve calls, ``concurrency`` at a time; ``kill`` is set after ``kill_at``."""
    remaining = iter(range(calls))

    async def worker() -> None:
        for _ in remaining:
            try:
                await running.retrieval.Retrieve(QUERY, metadata=auth(KEY_A), timeout=30)
                row.statuses["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                row.statuses[exc.code().name] += 1
            row.calls += 1
            if row.calls == kill_at:
                kill.set()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def ingest_while(running: Running, row: Row, done: asyncio.Event) -> None:
    """One document at a time until ``done``, counting statuses."""
    number = 0
    while not done.is_set():
        number += 1
        doc = documents_pb2.Document(doc_id=f"live-{row.killed}-{number}", text="magma flows")
        try:
            await running.ingest([doc])
            row.ingest["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            row.ingest[exc.code().name] += 1


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=1) as response:
        return json.load(response)["result"]


def replicas_active(peer: QdrantServer, witness: QdrantServer, collection: str) -> bool:
    """Whether ``witness`` (a peer that stayed up) sees every replica ``peer`` holds Active:
    the cluster's view, not the restarted peer's own (it starts believing its old state)."""
    try:
        peer_id = get(f"{peer.url}/cluster")["peer_id"]
        shards = get(f"{witness.url}/collections/{collection}/cluster")["remote_shards"]
    except (OSError, ValueError, KeyError):
        return False
    return all(shard["state"] == "Active" for shard in shards if shard["peer_id"] == peer_id)


async def kill_under_load(
    running: Running,
    conn: QdrantConnection,
    peer: QdrantServer,
    witness: QdrantServer,
    collection: str,
    row: Row,
    calls: int,
) -> None:
    """Kill ``peer`` a third into the load (ingest going on meanwhile), then restart it and
    time its recovery."""
    kill, done = asyncio.Event(), asyncio.Event()
    failovers = conn.failovers

    async def killer() -> None:
        await kill.wait()
        await asyncio.to_thread(peer.kill)

    async def load() -> None:
        await retrieve_load(running, row, calls, 8, calls // 3, kill)
        done.set()

    await asyncio.gather(load(), killer(), ingest_while(running, row, done))
    row.failovers = conn.failovers - failovers
    started = time.monotonic()  # recovery counts from the restart, the process's start-up in
    await asyncio.to_thread(peer.start)
    served = conn.stats[peer.url]
    served_before = served.attempts - served.failures
    while time.monotonic() - started < 30:
        if row.replicas_active_s is None and replicas_active(peer, witness, collection):
            row.replicas_active_s = time.monotonic() - started
        await running.retrieval.Retrieve(QUERY, metadata=auth(KEY_A))
        if row.served_again_s is None and served.attempts - served.failures > served_before:
            row.served_again_s = time.monotonic() - started
        if row.replicas_active_s is not None and (row.served_again_s or not served.attempts):
            return
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def table() -> Iterator[list[Row]]:
    rows: list[Row] = []
    yield rows
    print("\n" + HEADER + "\n" + "\n".join(str(r) for r in rows))


def points_on(peer: QdrantServer, collection: str) -> int:
    """How many points ``peer`` holds of ``collection`` (in its own replicas)."""
    shards = get(f"{peer.url}/collections/{collection}/cluster")["local_shards"]
    return sum(int(shard.get("points_count") or 0) for shard in shards)


def cluster_nodes(peers: list[QdrantServer]) -> QdrantNodes:
    return QdrantNodes(write=tuple(node(p) for p in peers), timeouts=Timeouts(2.0, 5.0, 30.0))


@pytest.fixture
async def restore_peers(cluster: QdrantCluster) -> AsyncIterator[None]:
    yield
    for peer in cluster.peers:  # a failed test leaves no peer down for the next one
        if peer.process is None:
            await asyncio.to_thread(peer.start)
    await asyncio.to_thread(cluster.wait_for_peers, len(cluster.peers))


@pytest.mark.usefixtures("restore_peers")
@pytest.mark.parametrize("replication", [2, 1])
async def test_a_peer_and_then_the_entry_node_killed_under_load(
    make_server: ServerFactory, cluster: QdrantCluster, table: list[Row], replication: int
) -> None:
    collection = f"r{replication}_{uuid.uuid4().hex[:6]}"
    setup = QdrantVectorStore(
        QdrantConnection(cluster_nodes(cluster.peers)), collection, replication_factor=replication
    )
    await (await sparse_server(make_server, setup)).ingest(DOCS)
    # Which peers hold the tenant's data decides what a kill does: groundwire enters by one
    # of them, and the peer killed first holds the other replica (replication 2) or none
    # (replication 1), so every run kills the same roles.
    holders = [p for p in cluster.peers if points_on(p, collection)]
    assert len(holders) == replication
    entry = holders[0]
    others = [p for p in cluster.peers if p is not entry]
    first = holders[1] if replication == 2 else others[0]
    conn = QdrantConnection(cluster_nodes([entry, *others]))
    store = QdrantVectorStore(conn, collection, replication_factor=replication)
    running = await sparse_server(make_server, store)
    assert await doc_ids(running) == {"basalt", "granite"}

    calls = 300 if replication == 2 else 120
    for peer, name in ((first, "a peer"), (entry, "the entry")):
        role = "replica" if peer in holders else "no replica"
        row = Row(replication, f"{name} ({role})")
        table.append(row)
        witness = next(p for p in cluster.peers if p is not peer)
        await kill_under_load(running, conn, peer, witness, collection, row, calls)
        assert row.calls == calls  # every call finished: none hung past its deadline
        # Failures are the vector store's UNAVAILABLE, in our words; nothing else.
        assert set(row.statuses) <= {"OK", "UNAVAILABLE"}
        assert set(row.ingest) <= {"OK", "UNAVAILABLE"}
        if peer is entry:
            # The others took over, and the entry serves again once back.
            assert row.failovers > 0 and row.served_again_s is not None
            # Generous: gRPC's defaults took 10-15 s; keepalive and short backoff ~1-2 s.
            assert row.served_again_s < 10, str(row)
        if replication == 2:
            # One replica of every shard survives: no Retrieve fails, not even with the
            # entry node down (the other peers serve through the node list).
            assert row.failed == 0, str(row)
        elif peer in holders:
            # The only replica is gone until the peer is back: that is what replication 1
            # means; calls fail fast with UNAVAILABLE and work again after the restart.
            assert row.failed > 0
        else:
            assert row.failed == 0, str(row)  # a peer without the tenant's data
        await asyncio.to_thread(cluster.wait_for_peers, len(cluster.peers))


# -- reads near, writes home -----------------------------------------------------------------


@pytest.fixture
def two_regions() -> Iterator[tuple[QdrantServer, QdrantServer]]:
    binary = qdrant_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    # Each a one-peer cluster of its own: where Qdrant 1.18 gives each tenant a shard, which
    # sparse search needs.
    with (
        QdrantServer(binary, cluster_args=()) as home,
        QdrantServer(binary, cluster_args=()) as near,
    ):
        yield home, near


async def test_reads_go_near_writes_go_home_and_reads_fail_over(
    make_server: ServerFactory, two_regions: tuple[QdrantServer, QdrantServer]
) -> None:
    """Two independent servers stand for two regions. They do not replicate, which makes
    visible where each call went: a document ingested through the service lands at home
    only, and searches answer from the near server (seeded with a document of its own) until
    it dies, then from home. In a real deployment both are peers of one cluster and the near
    one holds the same data, behind home by the replication delay."""
    home, near = two_regions
    collection = "regions"
    # The near region's copy, seeded directly (no replication between these two).
    seed = QdrantVectorStore(QdrantConnection(QdrantNodes(write=(node(near),))), collection)
    seeder = await sparse_server(make_server, seed)
    await seeder.ingest([documents_pb2.Document(doc_id="near-copy", text="Magma, near copy.")])

    nodes = QdrantNodes(write=(node(home),), read=(node(near), node(home)))
    conn = QdrantConnection(nodes)
    running = await sparse_server(make_server, QdrantVectorStore(conn, collection))
    await running.ingest(DOCS)
    assert conn.stats[near.url].attempts == 0  # collection set-up and writes: home only

    assert await doc_ids(running) == {"near-copy"}  # read near: home's writes not there
    assert conn.stats[near.url].attempts == 1

    near.kill()
    assert await doc_ids(running) == {"basalt", "granite"}  # failed over to the next URL
    assert conn.failovers == 1
