"""Bad input, credentials and unimplemented RPCs: the status, the reason, the field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from groundwire.v1 import (
    common_pb2,
    documents_pb2,
    retrieval_pb2,
)
from tests.rpc.conftest import KEY_A, KEY_B, ServerFactory, auth
from tests.rpc.errors import details

R = retrieval_pb2.RetrieveRequest
F = retrieval_pb2.FieldFilter

BAD_RETRIEVALS: list[tuple[str, retrieval_pb2.RetrieveRequest, str]] = [
    ("empty query", R(query=""), "query"),
    ("blank query", R(query=" \t\n "), "query"),
    ("1 MiB query", R(query="a" * (1024 * 1024)), "query"),
    ("top_k 0", R(query="q", top_k=0), "top_k"),
    ("top_k 1000", R(query="q", top_k=1000), "top_k"),
    ("unknown mode", R(query="q", mode=42), "mode"),  # type: ignore[arg-type]
    ("min_score NaN", R(query="q", min_score=float("nan")), "min_score"),
    (
        "filter without a match type",
        R(query="q", filter=retrieval_pb2.MetadataFilter(must=[F(field="lang")])),
        "filter.must[0].match",
    ),
    (
        "filter on a bad field name",
        R(query="q", filter=retrieval_pb2.MetadataFilter(must=[F(field="", string_equals="x")])),
        "filter.must[0].field",
    ),
    (
        "empty any-of",
        R(
            query="q",
            filter=retrieval_pb2.MetadataFilter(
                must=[
                    F(field="lang", string_equals="en"),
                    F(field="n", int_any=retrieval_pb2.IntList()),
                ]
            ),
        ),
        "filter.must[1].int_any.values",
    ),
]


@pytest.mark.parametrize(
    ("request_", "field"),
    [(r, f) for _, r, f in BAD_RETRIEVALS],
    ids=[n for n, _, _ in BAD_RETRIEVALS],
)
async def test_bad_retrieve_requests_name_the_field(
    make_server: ServerFactory, request_: retrieval_pb2.RetrieveRequest, field: str
) -> None:
    running = await make_server(max_message_bytes=4 * 1024 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.retrieval.Retrieve(request_, metadata=auth(KEY_A))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields = details(caught.value)
    assert info.reason == "ERROR_REASON_INVALID_FIELD"
    assert field in fields
    assert info.metadata["correlation_id"]


async def test_dense_mode_without_an_embedder_is_invalid(make_server: ServerFactory) -> None:
    running = await make_server(dense=None, embedder="none")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.retrieval.Retrieve(
            R(query="q", mode=retrieval_pb2.RETRIEVAL_MODE_DENSE), metadata=auth(KEY_A)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1] == ["mode"]


async def _stream(*requests: documents_pb2.IngestDocumentsRequest) -> AsyncIterator[Any]:
    for request in requests:
        yield request


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ((documents_pb2.IngestDocumentsRequest(),), "document"),
        (
            (
                documents_pb2.IngestDocumentsRequest(
                    document=documents_pb2.Document(
                        doc_id="d", text="t", metadata={"lang": common_pb2.MetadataValue()}
                    )
                ),
            ),
            "document.metadata[lang]",
        ),
    ],
    ids=["no document", "metadata value without a kind"],
)
async def test_malformed_documents_are_invalid_argument(
    make_server: ServerFactory,
    messages: tuple[documents_pb2.IngestDocumentsRequest, ...],
    field: str,
) -> None:
    running = await make_server()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.documents.IngestDocuments(_stream(*messages), metadata=auth(KEY_A))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1] == [field]
    assert await running.server.components.store.count("tenant-a") == 0


async def test_delete_needs_ids(make_server: ServerFactory) -> None:
    running = await make_server()
    for request, field in [
        (documents_pb2.DeleteDocumentsRequest(), "doc_ids"),
        (documents_pb2.DeleteDocumentsRequest(doc_ids=["a", ""]), "doc_ids[1]"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.documents.DeleteDocuments(request, metadata=auth(KEY_A))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(caught.value)[1] == [field]


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ([], "ERROR_REASON_MISSING_CREDENTIALS"),
        (auth("wrong-key-0123456789abc"), "ERROR_REASON_INVALID_CREDENTIALS"),
        ([("x-api-key", "wrong-key-0123456789abc")], "ERROR_REASON_INVALID_CREDENTIALS"),
    ],
    ids=["no key", "wrong bearer key", "wrong x-api-key"],
)
async def test_unauthenticated_calls_are_refused(
    make_server: ServerFactory, metadata: list[tuple[str, str]], reason: str
) -> None:
    running = await make_server()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.retrieval.Retrieve(R(query="q"), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(caught.value)[0].reason == reason


async def test_x_api_key_header_is_accepted(make_server: ServerFactory) -> None:
    running = await make_server()
    response = await running.retrieval.Retrieve(R(query="q"), metadata=[("x-api-key", KEY_A)])
    assert list(response.chunks) == []


async def test_mesh_header_mode_trusts_the_named_tenant(make_server: ServerFactory) -> None:
    running = await make_server(auth_mode="mesh_header", api_keys={})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.retrieval.Retrieve(R(query="q"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = await running.retrieval.Retrieve(R(query="q"), metadata=[("x-tenant-id", "team-x")])
    assert list(ok.chunks) == []


@pytest.mark.parametrize(
    "metadata",
    [
        [("x-api-key", KEY_B), *auth(KEY_A)],
        [("x-api-key", KEY_A), ("x-api-key", KEY_B)],
        [*auth(KEY_A), *auth(KEY_B)],
        [("x-api-key", "unknown-key-0123456789"), *auth(KEY_A)],
    ],
    ids=["x-api-key and bearer", "x-api-key twice", "bearer twice", "one of them unknown"],
)
async def test_two_different_keys_in_one_call_are_refused(
    make_server: ServerFactory, metadata: list[tuple[str, str]]
) -> None:
    running = await make_server(dense=None, embedder="none", cache=None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.retrieval.Retrieve(R(query="q"), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(caught.value)[0].reason == "ERROR_REASON_INVALID_CREDENTIALS"
    message = caught.value.details() or ""
    assert "conflicting credentials" in message
    assert KEY_A not in message and KEY_B not in message


async def test_the_same_key_sent_both_ways_is_one_identity(make_server: ServerFactory) -> None:
    running = await make_server(dense=None, embedder="none", cache=None)
    response = await running.retrieval.Retrieve(
        R(query="q"), metadata=[("x-api-key", KEY_A), *auth(KEY_A), ("x-api-key", KEY_A)]
    )
    assert list(response.chunks) == []


async def test_mesh_header_mode_refuses_two_different_tenant_headers(
    make_server: ServerFactory,
) -> None:
    running = await make_server(auth_mode="mesh_header", api_keys={}, dense=None, embedder="none")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.retrieval.Retrieve(
            R(query="q"), metadata=[("x-tenant-id", "team-x"), ("x-tenant-id", "team-y")]
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(caught.value)[0].reason == "ERROR_REASON_INVALID_CREDENTIALS"
    assert "conflicting x-tenant-id" in (caught.value.details() or "")
    ok = await running.retrieval.Retrieve(
        R(query="q"), metadata=[("x-tenant-id", "team-x"), ("x-tenant-id", "team-x")]
    )
    assert list(ok.chunks) == []
