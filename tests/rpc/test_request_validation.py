"""One validation layer: every violation of a request in one INVALID_ARGUMENT, and one rule for
metadata field names, so nothing a caller sends reaches the store as a check that fails there.

A filter field that ends in a newline (``"year\\n"``) once passed the servicer's pattern
(``re.match`` with ``$`` accepts a trailing newline) and then failed the store's own key check
with a ValueError: the caller got INTERNAL. It is now refused where requests are checked,
naming the field, and ingest refuses the same name as a document failure.
"""

from __future__ import annotations

import grpc
import pytest

from groundwire.v1 import common_pb2, documents_pb2, generation_pb2, retrieval_pb2
from tests.rpc.conftest import KEY_A, ServerFactory, auth
from tests.rpc.errors import details

F = retrieval_pb2.FieldFilter
NEWLINE_FIELD = "year\n"


def _filtered(**request: object) -> retrieval_pb2.RetrieveRequest:
    return retrieval_pb2.RetrieveRequest(
        filter=retrieval_pb2.MetadataFilter(must=[F(field=NEWLINE_FIELD, int_equals=2020)]),
        **request,  # type: ignore[arg-type]
    )


async def _invalid_fields(call: object) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    info, fields = details(caught.value)
    assert info.reason == "ERROR_REASON_INVALID_FIELD"
    return fields


async def test_a_filter_field_ending_in_a_newline_is_invalid_not_internal(
    make_server: ServerFactory,
) -> None:
    running = await make_server(dense=None, embedder="none")
    await running.ingest(
        [
            documents_pb2.Document(
                doc_id="d1",
                text="Rivers carry water to the sea.",
                metadata={"year": common_pb2.MetadataValue(int_value=2020)},
            )
        ]
    )
    retrieve = running.retrieval.Retrieve(_filtered(query="rivers"), metadata=auth(KEY_A))
    assert await _invalid_fields(retrieve) == ["filter.must[0].field"]

    generate = running.generation.Generate(
        generation_pb2.GenerateRequest(query="rivers", retrieval=_filtered()),
        metadata=auth(KEY_A),
    )
    assert await _invalid_fields(_first_frame(generate)) == ["retrieval.filter.must[0].field"]


async def _first_frame(call: object) -> object:
    async for frame in call:  # type: ignore[attr-defined]
        return frame
    return None


async def test_every_violation_of_a_request_is_named_at_once(make_server: ServerFactory) -> None:
    running = await make_server(dense=None, embedder="none")
    bad = retrieval_pb2.RetrieveRequest(
        query=" ",
        top_k=0,
        filter=retrieval_pb2.MetadataFilter(
            must=[F(field="lang"), F(field="n", int_any=retrieval_pb2.IntList())]
        ),
    )
    fields = await _invalid_fields(running.retrieval.Retrieve(bad, metadata=auth(KEY_A)))
    assert fields == ["query", "top_k", "filter.must[0].match", "filter.must[1].int_any.values"]

    generate = running.generation.Generate(
        generation_pb2.GenerateRequest(query="q", retrieval=bad, temperature=3.0),
        metadata=auth(KEY_A),
    )
    assert await _invalid_fields(_first_frame(generate)) == [
        "retrieval.top_k",
        "retrieval.filter.must[0].match",
        "retrieval.filter.must[1].int_any.values",
        "temperature",
    ]


async def test_ingest_refuses_the_field_names_a_filter_refuses(
    make_server: ServerFactory,
) -> None:
    running = await make_server(dense=None, embedder="none")
    summary = await running.ingest(
        [
            documents_pb2.Document(
                doc_id="d1",
                text="Rivers carry water to the sea.",
                metadata={NEWLINE_FIELD: common_pb2.MetadataValue(int_value=2020)},
            )
        ]
    )
    assert summary.created == 0 and summary.failed == 1
    assert summary.failures[0].field == f"document.metadata[{NEWLINE_FIELD}]"


async def test_a_query_longer_than_the_old_limit_is_answered(make_server: ServerFactory) -> None:
    """ArguAna's whole-argument queries reach about 7,000 characters."""
    running = await make_server(dense=None, embedder="none")
    await running.ingest([documents_pb2.Document(doc_id="d1", text="Rivers carry water.")])
    query = " ".join(["rivers carry water to the sea"] * 240)  # 7,199 characters
    response = await running.retrieval.Retrieve(
        retrieval_pb2.RetrieveRequest(query=query), metadata=auth(KEY_A)
    )
    assert [c.doc_id for c in response.chunks] == ["d1"]
    limits = running.settings.max_query_chars
    too_long = retrieval_pb2.RetrieveRequest(query="a" * (limits + 1))
    assert await _invalid_fields(running.retrieval.Retrieve(too_long, metadata=auth(KEY_A))) == [
        "query"
    ]
