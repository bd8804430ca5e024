"""Request bodies that do not decode: INVALID_ARGUMENT with reason MALFORMED_REQUEST and the
correlation id, before authentication, one WARNING access line and no traceback.

The calls go through raw channel methods with identity serializers, so the server receives
exactly the bytes a broken or hostile client would send (client streams through the
synchronous client: see :mod:`tests.rpc.raw_calls`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest

from groundwire.v1 import common_pb2, documents_pb2, generation_pb2
from tests.rpc import raw_calls
from tests.rpc.conftest import KEY_A, Running, ServerFactory, auth
from tests.rpc.errors import details
from tests.rpc.raw_calls import same

RETRIEVE = "/groundwire.v1.RetrievalService/Retrieve"
GENERATE = "/groundwire.v1.GenerationService/Generate"
INGEST = "/groundwire.v1.DocumentService/IngestDocuments"
MALFORMED = "ERROR_REASON_MALFORMED_REQUEST"


def _document(doc_id: str, **metadata: str) -> bytes:
    """One serialized IngestDocumentsRequest."""
    return documents_pb2.IngestDocumentsRequest(
        document=documents_pb2.Document(
            doc_id=doc_id,
            text=f"{doc_id} is a plain document about rivers.",
            metadata={k: common_pb2.MetadataValue(string_value=v) for k, v in metadata.items()},
        )
    ).SerializeToString()


def _with_invalid_utf8(message: bytes, placeholder: bytes) -> bytes:
    """``message`` with ``placeholder`` swapped for as many bytes that are not UTF-8 (the
    length prefixes stay right, so only the string's content is wrong)."""
    assert message.count(placeholder) == 1 and len(placeholder) % 2 == 0
    return message.replace(placeholder, b"\xc3\x28" * (len(placeholder) // 2))


async def _access_lines(
    caplog: pytest.LogCaptureFixture, method: str, count: int = 1
) -> list[logging.LogRecord]:
    """The access lines of ``method`` (waiting briefly: the line is written as the call
    ends on the server, which may be just after the caller sees the status)."""
    for _ in range(200):
        lines = [
            r
            for r in caplog.records
            if r.name == "groundwire.access" and getattr(r, "method", None) == method
        ]
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.01)
    return lines


def _target(running: Running) -> str:
    return f"127.0.0.1:{running.server.port}"


def _assert_malformed(error: Any, correlation_id: str, caplog: pytest.LogCaptureFixture) -> None:
    """``error`` (a grpc.aio or a synchronous call's error) is MALFORMED_REQUEST."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed request message" in (error.details() or "")
    info, fields = details(error)
    assert info.reason == MALFORMED and fields == []
    assert info.metadata["correlation_id"] == correlation_id
    assert dict(error.trailing_metadata() or ())["x-correlation-id"] == correlation_id
    # Nothing at ERROR: no grpc "Unexpected ..." traceback, no groundwire.errors line.
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not any(r.exc_info for r in caplog.records)


@pytest.fixture
async def running(make_server: ServerFactory) -> Running:
    return await make_server(dense=None, embedder="none", cache=None)


@pytest.mark.parametrize(
    ("body", "credentials"),
    [
        (b"\xff\xff\xff", True),
        # query (field 1) holding the two bytes C3 28: not UTF-8.
        (bytes.fromhex("0a02c328"), True),
        # Refused before authentication: an anonymous caller learns nothing else.
        (b"\xff\xff\xff", False),
    ],
    ids=["not protobuf", "query not UTF-8", "not protobuf, no credentials"],
)
async def test_a_unary_body_that_does_not_decode_is_malformed(
    running: Running, caplog: pytest.LogCaptureFixture, body: bytes, credentials: bool
) -> None:
    retrieve = running.channel.unary_unary(
        RETRIEVE, request_serializer=same, response_deserializer=same
    )
    metadata = [*(auth(KEY_A) if credentials else []), ("x-correlation-id", "malformed-1")]
    with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as caught:
        await retrieve(body, metadata=metadata)
    _assert_malformed(caught.value, "malformed-1", caplog)
    (line,) = await _access_lines(caplog, RETRIEVE)
    assert line.levelno == logging.WARNING
    assert (line.code, line.reason, line.tenant) == ("INVALID_ARGUMENT", MALFORMED, None)  # type: ignore[attr-defined]


async def test_the_unauthenticated_health_service_refuses_garbage_the_same_way(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    check = running.channel.unary_unary(
        "/grpc.health.v1.Health/Check", request_serializer=same, response_deserializer=same
    )
    with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(b"\xff\xff", metadata=[("x-correlation-id", "malformed-h")])
    _assert_malformed(caught.value, "malformed-h", caplog)


async def test_a_server_streaming_body_that_does_not_decode_is_malformed(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    generate = running.channel.unary_stream(
        GENERATE, request_serializer=same, response_deserializer=same
    )
    with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in generate(
            b"\xff\xff\xff", metadata=[*auth(KEY_A), ("x-correlation-id", "malformed-2")]
        ):
            pytest.fail("a frame was sent for a malformed request")
    _assert_malformed(caught.value, "malformed-2", caplog)
    (line,) = await _access_lines(caplog, GENERATE)
    assert line.levelno == logging.WARNING


async def test_a_bad_message_in_a_client_stream_ends_it_where_it_is_reached(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A metadata key that is not UTF-8 in the second message: the stream fails there as
    any failing ingest stream does (nothing half-written, nothing after it read)."""
    bad = _with_invalid_utf8(_document("middle", keyX="v"), b"keyX")
    messages = [_document("before"), bad, _document("after")]

    metadata = [*auth(KEY_A), ("x-correlation-id", "malformed-3")]
    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as caught:
        await raw_calls.stream_unary(_target(running), INGEST, messages, metadata, 30.0)
    _assert_malformed(caught.value, "malformed-3", caplog)
    assert "message 1 of the stream" in (caught.value.details() or "")
    (line,) = await _access_lines(caplog, INGEST)
    assert line.levelno == logging.WARNING and line.tenant == "tenant-a"  # type: ignore[attr-defined]
    store = running.server.components.store
    assert await store.stored_documents("tenant-a", ["middle", "after"]) == {}
    # The server is unharmed: the same documents without the bad one go in.
    response = await running.documents.IngestDocuments(
        _requests(_document("before"), _document("after")), metadata=auth(KEY_A)
    )
    assert (response.created, response.failed) == (2, 0)


async def _requests(*messages: bytes) -> AsyncIterator[documents_pb2.IngestDocumentsRequest]:
    for message in messages:
        yield documents_pb2.IngestDocumentsRequest.FromString(message)


async def test_a_message_over_the_size_limit_is_resource_exhausted_without_a_traceback(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """gRPC itself refuses it before any handler runs (so no access line and no correlation
    id): RESOURCE_EXHAUSTED, mid-stream too, and nothing logged at ERROR."""
    running = await make_server(
        dense=None, embedder="none", cache=None, max_message_bytes=64 * 1024
    )
    oversized = b"\x0a" + b"\x80\x80\x08" + b"a" * (128 * 1024)  # query of 128 KiB
    retrieve = running.channel.unary_unary(
        RETRIEVE, request_serializer=same, response_deserializer=same
    )
    with caplog.at_level(logging.INFO):
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await retrieve(oversized, metadata=auth(KEY_A))
        with pytest.raises(grpc.RpcError) as stream:
            await raw_calls.stream_unary(
                _target(running), INGEST, [_document("first"), oversized], auth(KEY_A), 30.0
            )
    assert unary.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert cast(grpc.Call, stream.value).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_status_echoing_hostile_input_still_reaches_the_caller(running: Running) -> None:
    """A 20 kB model name, or 4,000 empty stop strings: the status is cut to fit gRPC's
    8 KiB trailer limit (otherwise the caller gets RESOURCE_EXHAUSTED from its own gRPC
    library instead of our INVALID_ARGUMENT)."""
    for request, reason in [
        (
            generation_pb2.GenerateRequest(query="q", model="é🙂" * 3000),
            "ERROR_REASON_UNKNOWN_MODEL",
        ),
        (generation_pb2.GenerateRequest(query="q", stop=[""] * 4000), "ERROR_REASON_INVALID_FIELD"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in running.generation.Generate(request, metadata=auth(KEY_A)):
                pytest.fail("a frame was sent for an invalid request")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info, fields = details(caught.value)
        assert info.reason == reason and 1 <= len(fields) <= 4
        assert len((caught.value.details() or "").encode()) <= 768
