"""Our words only: no status a caller receives carries a vendor's text, an internal host:port
or gRPC's ``debug_error_string``. Each error class the client layer maps from vendor
failures is produced for real (a Qdrant server that goes away, an embeddings endpoint that
fails or is not there, an LLM stream cut with no model left) and the whole status, message
and every detail, is searched for what must not be there; the reason and the correlation id
must be. The vendor's text is in the log, under the same correlation id.

No test here needs the meaning of a text: the ``embedder`` fixture is None, so the session's
MiniLM model is not loaded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import grpc
import pytest
from grpc_status import rpc_status
from qdrant_client import AsyncQdrantClient

from groundwire.clients import errors
from groundwire.clients.embedder import OpenAIEmbedder
from groundwire.clients.vector_store import QdrantVectorStore
from groundwire.testing.scripted_llm import Script, ScriptedLLM
from groundwire.v1 import retrieval_pb2
from tests.qdrant_server import QdrantServer, qdrant_binary
from tests.redis_server import free_port
from tests.rpc.conftest import KEY_A, ServerFactory, auth
from tests.rpc.embeddings_server import FAIL_MARKER, EmbeddingsServer
from tests.rpc.errors import details
from tests.rpc.generation import collect, passages_request

# What must never reach a caller. Vendor exception names stand for "the vendor's text".
FORBIDDEN = re.compile(
    r"127\.0\.0\.1|localhost|:\d{2,5}\b|debug_error_string|grpc_status|"
    r"AioRpcError|_InactiveRpcError|RpcError|UnexpectedResponse|ResponseHandlingException|"
    r"ConnectError|ConnectTimeout|ReadTimeout|RemoteProtocolError|httpx|httpcore|"
    r"qdrant_client|scripted error|Traceback",
    re.IGNORECASE,
)

# The error classes raised from vendor failures, each with the scenario below that makes it.
# A new class in the tree must be placed here or in NOT_FROM_VENDORS, so none is forgotten.
FROM_VENDORS = {
    errors.VectorStoreUnavailableError: "test_a_qdrant_outage",
    errors.EmbedderUnavailableError: "test_an_embeddings_endpoint",
    errors.LLMUnavailableError: "test_an_llm_stream_cut",
    errors.LLMCallError: "test_an_llm_stream_cut",  # routed around; its cause's words above
}
NOT_FROM_VENDORS = {
    errors.GroundwireError,  # the base
    errors.UpstreamUnavailableError,  # abstract: raised only as its subclasses
    errors.InvalidArgumentError,
    errors.MalformedRequestError,
    errors.QuotaExceededError,
    errors.UnauthenticatedError,
    errors.RateLimitedError,
    errors.CacheError,  # never reaches a caller: the cache bypasses itself
    errors.EmbedderMismatchError,  # at start-up only, to the operator (paths, remedies)
    errors.SparseScopeUnavailableError,  # our words: the Qdrant version and the remedy
    errors.DeadlineExceededError,
    errors.NotImplementedRPCError,
    errors.ShuttingDownError,
}


@pytest.fixture
def embedder() -> None:
    """No model: these servers never need the meaning of a text."""
    return None


def subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *subclasses(sub)}
    return out


def test_every_error_class_is_placed() -> None:
    tree = {errors.GroundwireError, *subclasses(errors.GroundwireError)}
    tree = {c for c in tree if c.__module__ == errors.__name__}
    assert tree == set(FROM_VENDORS) | NOT_FROM_VENDORS


def assert_our_words(
    error: grpc.aio.AioRpcError, reason: str, correlation_id: str, *, also: str = ""
) -> None:
    """The status (message and every detail) is ours: reason and correlation id present,
    nothing of the vendor's. ``also``: more text the caller sees (the end frame's detail)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    visible = "\n".join(
        [status.message, error.details() or "", also, *(str(d) for d in status.details)]
    )
    leaked = FORBIDDEN.findall(visible)
    assert not leaked, f"{leaked} in what the caller sees:\n{visible}"
    info, _ = details(error)
    assert info.reason == reason
    assert info.metadata["correlation_id"] == correlation_id
    # A few words of ours, not an empty message.
    assert len(status.message) > 10


def assert_logged(caplog: pytest.LogCaptureFixture, correlation_id: str) -> None:
    """The vendor's words went to the log, at WARNING, under the caller's correlation id."""
    lines = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and getattr(r, "vendor_error", None) is not None
    ]
    assert lines, "the vendor's text was not logged"
    assert any(getattr(r, "correlation_id", None) == correlation_id for r in lines)


@pytest.fixture
def own_qdrant() -> Iterator[QdrantServer]:
    """A Qdrant server of this test's own, to stop without disturbing the session's; one
    distributed-mode peer, where a 1.18 server scopes sparse scores to the tenant (a shard
    each), so the sparse search below reaches the server and meets the outage."""
    binary = qdrant_binary()
    if binary is None:
        pytest.skip("no Qdrant binary")
    server = QdrantServer(binary, cluster_args=())
    with server:
        yield server


@pytest.mark.parametrize("grpc_transport", [True, False], ids=["grpc", "rest"])
async def test_a_qdrant_outage(
    make_server: ServerFactory,
    own_qdrant: QdrantServer,
    caplog: pytest.LogCaptureFixture,
    grpc_transport: bool,
) -> None:
    # As QdrantVectorStore.connect builds it, on this server's own (free) gRPC port.
    client = AsyncQdrantClient(
        url=own_qdrant.url,
        grpc_port=own_qdrant.grpc_port,
        prefer_grpc=grpc_transport,
        timeout=3,
        check_compatibility=False,
    )
    store = QdrantVectorStore(client, "our_words", timeout_s=3.0, url=own_qdrant.url)
    running = await make_server(store=store, dense=None, embedder="none", cache=None)
    own_qdrant.stop()  # the outage
    cid = "cid-qdrant-outage"
    request = retrieval_pb2.RetrieveRequest(
        query="magma", mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE, bypass_cache=True
    )
    with caplog.at_level(logging.WARNING), pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.retrieval.Retrieve(request, metadata=auth(KEY_A, **{"x-correlation-id": cid}))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert_our_words(caught.value, "ERROR_REASON_VECTOR_STORE_UNAVAILABLE", cid)
    assert_logged(caplog, cid)


@pytest.mark.parametrize("down", ["failing", "absent"])
async def test_an_embeddings_endpoint(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture, down: str
) -> None:
    with EmbeddingsServer() as endpoint:
        base_url = endpoint.base_url if down == "failing" else f"http://127.0.0.1:{free_port()}/v1"
        dense = OpenAIEmbedder(base_url=base_url, model="m", dimension=endpoint.dimension)
        running = await make_server(dense=dense, cache=None)
        cid = f"cid-embeddings-{down}"
        request = retrieval_pb2.RetrieveRequest(
            query=f"what is {FAIL_MARKER}",
            mode=retrieval_pb2.RETRIEVAL_MODE_DENSE,
            bypass_cache=True,
        )
        with caplog.at_level(logging.WARNING), pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.retrieval.Retrieve(
                request, metadata=auth(KEY_A, **{"x-correlation-id": cid})
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert_our_words(caught.value, "ERROR_REASON_EMBEDDER_UNAVAILABLE", cid)
    assert_logged(caplog, cid)


async def test_an_llm_stream_cut(
    make_server: ServerFactory, llm: ScriptedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    running = await make_server(llm_base_url=llm.base_url, dense=None, embedder="none")
    llm.set_default(Script(tokens=["one", " two", " three"], cut_after_tokens=2))
    cid = "cid-llm-cut"
    with caplog.at_level(logging.WARNING):
        stream = await collect(
            running.generation.Generate(
                passages_request(model="gpt-4o", bypass_cache=True),
                metadata=auth(KEY_A, **{"x-correlation-id": cid}),
            )
        )
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.UNAVAILABLE
    assert_our_words(stream.error, "ERROR_REASON_LLM_UNAVAILABLE", cid, also=stream.end.detail)
    assert_logged(caplog, cid)
