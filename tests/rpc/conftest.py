"""An in-process groundwire server on port 0, built from real parts, called through the
generated stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from groundwire.clients.onnx_embedder import OnnxEmbedder
from groundwire.clients.ports import Cache, DenseEmbedder, VectorStore
from groundwire.clients.vector_store import EdgeVectorStore
from groundwire.server.app import GroundwireServer
from groundwire.server.components import assemble_components, build_cache, build_routes
from groundwire.server.settings import Settings, load_settings
from groundwire.testing.scripted_llm import ScriptedLLM
from groundwire.v1 import (
    capabilities_pb2_grpc,
    documents_pb2,
    documents_pb2_grpc,
    generation_pb2_grpc,
    retrieval_pb2_grpc,
)

KEY_A = "key-tenant-a-0123456789"
KEY_B = "key-tenant-b-0123456789"


@pytest.fixture(scope="session")
async def embedder() -> AsyncIterator[OnnxEmbedder]:
    """The default local embedder (all-MiniLM-L6-v2, int8 ONNX), loaded once for the session."""
    model = await OnnxEmbedder.load()
    yield model
    await model.close()


@dataclass
class Running:
    """A started server and a channel to it."""

    server: GroundwireServer
    channel: grpc.aio.Channel
    settings: Settings

    @property
    def retrieval(self) -> retrieval_pb2_grpc.RetrievalServiceStub:
        return retrieval_pb2_grpc.RetrievalServiceStub(self.channel)

    @property
    def documents(self) -> documents_pb2_grpc.DocumentServiceStub:
        return documents_pb2_grpc.DocumentServiceStub(self.channel)

    @property
    def generation(self) -> generation_pb2_grpc.GenerationServiceStub:
        return generation_pb2_grpc.GenerationServiceStub(self.channel)

    @property
    def capabilities(self) -> capabilities_pb2_grpc.CapabilitiesServiceStub:
        return capabilities_pb2_grpc.CapabilitiesServiceStub(self.channel)

    async def settle(self) -> None:
        """Wait for the cache writes the server does after answering."""
        await self.server.components.retrieval.drain()

    @property
    def breakers(self) -> Any:
        """The server's circuit breakers by model name."""
        return self.server.components.generation.routes.breakers

    async def ingest(
        self, docs: list[documents_pb2.Document], key: str = KEY_A
    ) -> documents_pb2.IngestDocumentsResponse:
        async def stream() -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
            for doc in docs:
                yield documents_pb2.IngestDocumentsRequest(document=doc)

        return await self.documents.IngestDocuments(stream(), metadata=auth(key))  # type: ignore[no-any-return]


def auth(key: str, **extra: str) -> list[tuple[str, str]]:
    """Call metadata with an API key (and any extra headers)."""
    return [("authorization", f"Bearer {key}"), *extra.items()]


ServerFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    """The scripted OpenAI-compatible upstream, fresh for each test."""
    async with ScriptedLLM() as upstream:
        yield upstream


@pytest.fixture
async def make_server(
    tmp_path: Path, embedder: OnnxEmbedder, redis_url: str
) -> AsyncIterator[ServerFactory]:
    """Build and start servers; all are stopped at the end of the test."""
    started: list[Running] = []

    async def factory(
        *,
        store: VectorStore | None = None,
        dense: DenseEmbedder | str | None = "local",
        cache: Cache | str | None = "redis",
        clock: Callable[[], float] | None = None,
        **overrides: Any,
    ) -> Running:
        settings = load_settings(
            **{
                "listen": "127.0.0.1:0",
                "auth_mode": "api_key",
                "api_keys": {"tenant-a": KEY_A, "tenant-b": KEY_B},
                "data_dir": tmp_path / f"data{len(started)}",
                "metrics_port": None,
                "redis_url": redis_url,
                "grace_period_s": 5.0,
                # The test's client shares the server's loop, on a machine that may be busy:
                # only the tests about our own lag (test_overload.py) let it take the blame
                # for an upstream timeout.
                "lag_blame_share": 1.0,
                **overrides,
            }
        )
        chosen_store = store or EdgeVectorStore(settings.data_dir / "edge")
        chosen_dense = embedder if dense == "local" else dense
        # As in production: on its own link, namespaced by the store's identity.
        chosen_cache = await build_cache(settings, chosen_store) if cache == "redis" else cache
        components = await assemble_components(
            settings,
            store=chosen_store,
            dense=chosen_dense,  # type: ignore[arg-type]
            cache=chosen_cache,  # type: ignore[arg-type]
            routes=build_routes(settings, clock) if clock is not None else None,
        )
        components.owns_dense = chosen_dense is not embedder
        server = GroundwireServer(settings, components)
        port = await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        running = Running(server, channel, settings)
        started.append(running)
        return running

    yield factory
    for running in started:
        await running.channel.close()
        if not running.server.state.draining:
            await running.server.stop(grace_s=0)
