"""The Qdrant connection without a Qdrant binary: failover from nodes that refuse connections
(real closed ports, over gRPC and REST) to a live one (qdrant-client's in-process mode),
bounded retries, our words only, the identity of a node list, and the settings that build it.
The same against real servers and a cluster: tests/rpc/test_qdrant_cluster.py."""

from __future__ import annotations

import socket
import time

import pytest
from qdrant_client import AsyncQdrantClient

from groundwire.clients.errors import VectorStoreUnavailableError
from groundwire.clients.vector_store import QdrantVectorStore
from groundwire.clients.vector_store.identity import qdrant_identity
from groundwire.clients.vector_store.qdrant_connection import (
    SCHEMA_CHANGE,
    QdrantConnection,
    QdrantNode,
    QdrantNodes,
    Timeouts,
    policy_for,
)
from groundwire.server.settings import SettingsError, load_settings
from tests.redis_server import free_port


def dead_node() -> QdrantNode:
    """A node nothing listens on (REST and gRPC ports both closed)."""
    return QdrantNode(f"http://127.0.0.1:{free_port()}", free_port())


def connection(
    write: list[QdrantNode],
    read: tuple[QdrantNode, ...] = (),
    *,
    grpc: bool = True,
    retries: int = 2,
) -> tuple[QdrantConnection, QdrantNode]:
    """A connection over ``write``/``read`` plus one live in-process node, last in both."""
    live = QdrantNode("http://live.invalid:6333")
    nodes = QdrantNodes(
        write=(*write, live),
        read=tuple(read),
        prefer_grpc=grpc,
        timeouts=Timeouts.uniform(10.0),
        retries=retries,
    )
    return QdrantConnection(nodes, clients={live: AsyncQdrantClient(location=":memory:")}), live


async def exists(conn: QdrantConnection, op: str = "collection_exists") -> bool:
    return await conn.run(op, lambda client, _: client.collection_exists("c"))


@pytest.mark.parametrize("grpc", [True, False], ids=["grpc", "rest"])
async def test_a_refused_node_fails_over_and_is_tried_last_while_it_cools_down(grpc: bool) -> None:
    dead = dead_node()
    conn, live = connection([dead], grpc=grpc)
    try:
        assert await exists(conn) is False
        assert conn.stats[dead.url].failures == 1 and conn.stats[live.url].attempts == 1
        assert conn.failovers == 1
        for _ in range(5):  # the dead node is not asked again during its cool-down
            await exists(conn)
        assert conn.stats[dead.url].attempts == 1 and conn.stats[live.url].attempts == 6
    finally:
        await conn.close()


async def test_reads_go_near_first_and_writes_home() -> None:
    near = dead_node()
    conn, live = connection([], read=(near,))
    try:
        await exists(conn, "collection_exists")  # metadata: home only
        assert conn.stats[near.url].attempts == 0
        # A search goes near first, then falls back home.
        await conn.run("search", lambda client, _: client.collection_exists("c"))
        assert conn.stats[near.url].attempts == 1 and conn.stats[live.url].attempts == 2
    finally:
        await conn.close()


async def test_a_schema_change_is_retried_when_its_request_never_left() -> None:
    dead = dead_node()
    conn, live = connection([dead])
    try:
        assert policy_for("create_collection") is SCHEMA_CHANGE
        await conn.run(
            "create_collection",
            lambda client, timeout: client.create_collection(
                "c", vectors_config={}, timeout=timeout
            ),
        )
        assert conn.stats[live.url].attempts == 1 and await exists(conn)
    finally:
        await conn.close()


@pytest.mark.parametrize("grpc", [True, False], ids=["grpc", "rest"])
async def test_retries_are_bounded_and_the_caller_gets_our_words(grpc: bool) -> None:
    dead = [dead_node() for _ in range(4)]
    nodes = QdrantNodes(write=tuple(dead), prefer_grpc=grpc, retries=2)
    conn = QdrantConnection(nodes)
    try:
        with pytest.raises(VectorStoreUnavailableError) as caught:
            await exists(conn)
        assert str(caught.value) == "vector store unavailable: collection_exists failed"
        assert sum(s.attempts for s in conn.stats.values()) == 3  # 1 + retries, not 4 nodes
        assert "127.0.0.1" not in str(caught.value)
    finally:
        await conn.close()


async def test_a_call_made_on_the_home_client_runs_once_there() -> None:
    conn, live = connection([])
    try:
        made = conn.home.create_collection("once", vectors_config={})
        assert await conn.run("create_collection", made) is True
        assert conn.stats[live.url].attempts == 1
    finally:
        await conn.close()


def test_identity_of_a_node_list_is_its_sorted_write_urls() -> None:
    one = QdrantConnection.of_client(AsyncQdrantClient(location=":memory:"), url="http://Q:6333")
    assert one.identity("c") == qdrant_identity("http://Q:6333", "c")  # as before lists
    a, b = "http://b.internal:6333", "http://A.internal"
    first = QdrantConnection(QdrantNodes.of([a, b], read_urls=["http://near:6333"]))
    second = QdrantConnection(QdrantNodes.of([b, a]))
    assert first.identity("c") == second.identity("c")
    assert first.identity("c") == "qdrant:http://a.internal:6333,http://b.internal:6333/c"


def test_grpc_options_keep_reconnects_short() -> None:
    options = QdrantNodes.of(["http://q:6333"]).grpc_options()
    assert options["grpc.max_reconnect_backoff_ms"] <= 1000
    assert options["grpc.keepalive_time_ms"] > 0


def test_settings_read_url_lists_ports_and_timeouts() -> None:
    settings = load_settings(
        read_environment=False,
        vector_store="qdrant",
        qdrant_url=" http://a:6333, http://b:6333 ",
        qdrant_read_urls="http://near:6333,http://a:6333",
        qdrant_grpc_port=7334,
        qdrant_prefer_grpc=False,
    )
    assert settings.qdrant_urls == ("http://a:6333", "http://b:6333")
    assert settings.qdrant_read_urls == ("http://near:6333", "http://a:6333")
    assert settings.qdrant_timeouts == (5.0, 15.0, 60.0)
    assert settings.qdrant_grpc_port == 7334 and not settings.qdrant_prefer_grpc
    # GROUNDWIRE_QDRANT_TIMEOUT_S stays the default of all three.
    uniform = load_settings(read_environment=False, qdrant_timeout_s=3, qdrant_index_timeout_s=90)
    assert uniform.qdrant_timeouts == (3.0, 3.0, 90.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("qdrant_url", "http://a:6333,,http://b"),
        ("qdrant_read_urls", "ftp://a"),
        ("qdrant_retries", 99),
    ],
)
def test_bad_qdrant_settings_name_the_variable(field: str, value: object) -> None:
    with pytest.raises(SettingsError, match=f"GROUNDWIRE_{field.upper()}"):
        load_settings(read_environment=False, **{field: value})


async def test_the_store_built_from_nodes_runs_through_the_connection() -> None:
    conn, live = connection([dead_node()])
    store = QdrantVectorStore(conn, "docs")
    try:
        await store.ensure_collection("", 0)
        assert conn.stats[live.url].attempts > 0
        assert store.identity == conn.identity("docs")
    finally:
        await store.close()


@pytest.mark.parametrize("grpc", [True, False], ids=["grpc", "rest"])
async def test_a_node_that_never_answers_costs_the_calls_timeout_not_more(grpc: bool) -> None:
    # A listening socket that accepts and never answers: the call hangs, the bound holds, and
    # no retry starts once the budget is spent.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        hung = QdrantNode(f"http://127.0.0.1:{port}", port)
        nodes = QdrantNodes(
            write=(hung, dead_node()), prefer_grpc=grpc, timeouts=Timeouts.uniform(0.5)
        )
        conn = QdrantConnection(nodes)
        started = time.monotonic()
        with pytest.raises(VectorStoreUnavailableError, match=r"timed out after 0\.5 s"):
            await exists(conn)
        assert time.monotonic() - started < 5  # generous: the bound is 0.5 s
        assert sum(s.attempts for s in conn.stats.values()) == 1
        await conn.close()
