"""Server plumbing: correlation ids, spans, health, reflection, capabilities, INTERNAL."""

from __future__ import annotations

from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from groundwire.clients.embedder import OpenAIEmbedder
from groundwire.server.auth import Authenticator
from groundwire.server.interceptors import CallInterceptor, ServerState
from groundwire.server.settings import load_settings
from groundwire.v1 import capabilities_pb2, generation_pb2, retrieval_pb2, retrieval_pb2_grpc
from tests.rpc.conftest import KEY_A, ServerFactory, auth
from tests.rpc.corpus import corpus
from tests.rpc.embeddings_server import EmbeddingsServer
from tests.rpc.errors import details


async def _retrieve_with(running, metadata):  # type: ignore[no-untyped-def]
    call = running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query="tides"), metadata=metadata
    )
    await call
    initial = dict(await call.initial_metadata())
    trailing = dict(await call.trailing_metadata())
    return initial, trailing


async def test_correlation_id_is_echoed_and_on_every_span(
    make_server: ServerFactory, spans: InMemorySpanExporter
) -> None:
    running = await make_server()
    await running.ingest(corpus())
    spans.clear()
    initial, trailing = await _retrieve_with(
        running, auth(KEY_A, **{"x-correlation-id": "corr-123"})
    )
    assert initial["x-correlation-id"] == "corr-123" == trailing["x-correlation-id"]
    finished = spans.get_finished_spans()
    server_spans = [s for s in finished if s.name.endswith("RetrievalService/Retrieve")]
    assert len(server_spans) == 1
    server_span = server_spans[0]
    assert server_span.attributes["groundwire.correlation_id"] == "corr-123"
    assert server_span.attributes["groundwire.tenant"] == "tenant-a"
    children = [
        s
        for s in finished
        if s.parent is not None and s.parent.span_id == server_span.context.span_id
    ]
    names = {s.name for s in children}
    assert {"embedder.embed", "vector_store.search"} <= names, names
    assert all(s.attributes.get("groundwire.correlation_id") == "corr-123" for s in children)


async def test_mesh_request_id_is_the_fallback_and_absent_ids_are_generated(
    make_server: ServerFactory,
) -> None:
    running = await make_server()
    initial, trailing = await _retrieve_with(running, auth(KEY_A, **{"x-request-id": "mesh-9"}))
    assert initial["x-correlation-id"] == "mesh-9" == trailing["x-correlation-id"]
    initial, trailing = await _retrieve_with(running, auth(KEY_A))
    generated = initial["x-correlation-id"]
    assert len(generated) == 32 and trailing["x-correlation-id"] == generated
    # Errors carry it too, in trailing metadata and in ErrorInfo.
    call = running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query=""),
        metadata=auth(KEY_A, **{"x-correlation-id": "bad-1"}),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert dict(caught.value.trailing_metadata())["x-correlation-id"] == "bad-1"
    assert details(caught.value)[0].metadata["correlation_id"] == "bad-1"


async def test_a_call_failing_before_any_wait_still_echoes_its_id_in_initial_metadata(
    make_server: ServerFactory,
) -> None:
    # The echo is sent while the handler starts, not before it: a handler that fails before
    # its first await must still see it out ahead of the status, which would otherwise carry
    # gRPC's own, empty, initial metadata.
    running = await make_server()
    retrieve = running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query=""),
        metadata=auth(KEY_A, **{"x-correlation-id": "early-1"}),
    )
    generate = running.generation.Generate(
        generation_pb2.GenerateRequest(query=""),
        metadata=auth(KEY_A, **{"x-correlation-id": "early-2"}),
    )
    for call, correlation_id in ((retrieve, "early-1"), (generate, "early-2")):
        assert await call.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert dict(await call.initial_metadata())["x-correlation-id"] == correlation_id
        assert dict(await call.trailing_metadata())["x-correlation-id"] == correlation_id


async def test_traceparent_is_honoured(
    make_server: ServerFactory, spans: InMemorySpanExporter
) -> None:
    running = await make_server()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await _retrieve_with(running, auth(KEY_A, traceparent=f"00-{trace_id}-00f067aa0ba902b7-01"))
    server_span = next(
        s for s in spans.get_finished_spans() if s.name.endswith("RetrievalService/Retrieve")
    )
    assert f"{server_span.context.trace_id:032x}" == trace_id


async def test_outbound_calls_carry_the_correlation_id_and_traceparent(
    make_server: ServerFactory,
) -> None:
    with EmbeddingsServer(dimension=8) as remote:
        dense = OpenAIEmbedder(base_url=remote.base_url, model="fake-embed", dimension=8)
        running = await make_server(dense=dense)
        await running.ingest(corpus()[:2], key=KEY_A)
        remote.headers.clear()
        await _retrieve_with(running, auth(KEY_A, **{"x-correlation-id": "out-7"}))
        assert remote.headers, "the embedder was not called"
        assert remote.headers[-1]["x-correlation-id"] == "out-7"
        assert remote.headers[-1]["traceparent"].startswith("00-")


async def test_health_reflection_and_capabilities(make_server: ServerFactory) -> None:
    running = await make_server()
    health = health_pb2_grpc.HealthStub(running.channel)
    for service in ("", "groundwire.v1.RetrievalService", "groundwire.v1.DocumentService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING

    # Reflection v1alpha through its stub, and v1 by its method path: the two versions'
    # messages are the same on the wire, so v1alpha's classes read and write both.
    v1alpha = reflection_pb2_grpc.ServerReflectionStub(running.channel).ServerReflectionInfo
    v1 = running.channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def ask(
        method: Any, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        async for response in method(iter([request])):
            return cast(reflection_pb2.ServerReflectionResponse, response)
        raise AssertionError("no reflection response")

    for method in (v1alpha, v1):
        listing = await ask(method, reflection_pb2.ServerReflectionRequest(list_services=""))
        assert {
            "groundwire.v1.RetrievalService",
            "groundwire.v1.GenerationService",
            "groundwire.v1.DocumentService",
            "groundwire.v1.CapabilitiesService",
            "grpc.health.v1.Health",
        } <= {s.name for s in listing.list_services_response.service}
        # The error details' types resolve, so a reflecting client can decode a status.
        details = await ask(
            method,
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="google.rpc.ErrorInfo"),
        )
        assert details.file_descriptor_response.file_descriptor_proto

    caps = await running.capabilities.GetCapabilities(
        capabilities_pb2.GetCapabilitiesRequest(), metadata=auth(KEY_A)
    )
    assert caps.embedder_id == "all-MiniLM-L6-v2-int8/384"
    assert set(caps.retrieval_modes) == {
        retrieval_pb2.RETRIEVAL_MODE_DENSE,
        retrieval_pb2.RETRIEVAL_MODE_SPARSE,
        retrieval_pb2.RETRIEVAL_MODE_HYBRID,
    }
    assert caps.limits.max_top_k == 100 and caps.features["retrieval_cache"]
    # No LLM configured: generation works, degraded; the catalog lists nothing callable.
    assert caps.features["generation"] and not caps.features["llm"]
    assert not caps.models and not caps.features["answer_cache"]


class _Exploding(retrieval_pb2_grpc.RetrievalServiceServicer):
    """A servicer with a bug, to see what a caller gets from an unexpected exception."""

    async def Retrieve(self, request, context):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internals: /etc/passwd line 3")


async def test_internal_errors_do_not_leak_and_carry_the_correlation_id() -> None:
    settings = load_settings(auth_mode="off", metrics_port=None)
    server = grpc.aio.server(
        interceptors=[
            CallInterceptor(Authenticator(settings), ServerState()),
        ]
    )
    retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(_Exploding(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Retrieve(
                    retrieval_pb2.RetrieveRequest(query="q"),
                    metadata=[("x-correlation-id", "boom-1")],
                )
    finally:
        await server.stop(0)
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (error.details() or "") and "Traceback" not in (error.details() or "")
    assert "boom-1" in (error.details() or "")
    info, _ = details(error)
    assert info.reason == "ERROR_REASON_INTERNAL" and info.metadata["correlation_id"] == "boom-1"
