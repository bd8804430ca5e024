"""Bad Generate requests: INVALID_ARGUMENT naming each offending field, before any model or
retrieval work happens."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from groundwire.testing.scripted_llm import ScriptedLLM
from groundwire.v1 import generation_pb2, retrieval_pb2
from tests.rpc.conftest import KEY_A, ServerFactory, auth
from tests.rpc.errors import details
from tests.rpc.generation import collect, passages_request


def too_many_passages() -> generation_pb2.GenerateRequest:
    return generation_pb2.GenerateRequest(
        query="q",
        context=generation_pb2.ContextPassages(
            passages=[generation_pb2.ContextPassage(text="t")] * 65
        ),
    )


CASES: list[tuple[str, Any, list[str]]] = [
    ("empty query", passages_request(query="   "), ["query"]),
    ("unknown tier", passages_request(tier=99), ["tier"]),  # type: ignore[arg-type]
    ("temperature too high", passages_request(temperature=2.5), ["temperature"]),
    ("temperature negative", passages_request(temperature=-0.1), ["temperature"]),
    ("temperature NaN", passages_request(temperature=float("nan")), ["temperature"]),
    ("zero max tokens", passages_request(max_output_tokens=0), ["max_output_tokens"]),
    (
        "more max tokens than the model",
        passages_request(max_output_tokens=9000),
        ["max_output_tokens"],
    ),
    ("too many stops", passages_request(stop=["a", "b", "c", "d", "e"]), ["stop"]),
    ("empty stop", passages_request(stop=[""]), ["stop[0]"]),
    (
        "first token timeout too long",
        passages_request(first_token_timeout=duration_pb2.Duration(seconds=61)),
        ["first_token_timeout"],
    ),
    (
        "negative time limit",
        passages_request(time_limit=duration_pb2.Duration(seconds=-1)),
        ["time_limit"],
    ),
    ("too many passages", too_many_passages(), ["context.passages"]),
    (
        "empty passage",
        generation_pb2.GenerateRequest(
            query="q",
            context=generation_pb2.ContextPassages(
                passages=[generation_pb2.ContextPassage(text="ok"), generation_pb2.ContextPassage()]
            ),
        ),
        ["context.passages[1].text"],
    ),
    (
        "bad retrieval options",
        generation_pb2.GenerateRequest(query="q", retrieval=retrieval_pb2.RetrieveRequest(top_k=0)),
        ["retrieval.top_k"],
    ),
    (
        "several at once",
        generation_pb2.GenerateRequest(
            query="", temperature=3, retrieval=retrieval_pb2.RetrieveRequest(top_k=1000)
        ),
        ["query", "retrieval.top_k", "temperature"],
    ),
]


@pytest.mark.parametrize(("name", "request_", "fields"), CASES, ids=[c[0] for c in CASES])
async def test_bad_requests_name_their_fields(
    make_server: ServerFactory,
    llm: ScriptedLLM,
    name: str,
    request_: generation_pb2.GenerateRequest,
    fields: list[str],
) -> None:
    running = await make_server(llm_base_url=llm.base_url, dense=None)
    stream = await collect(running.generation.Generate(request_, metadata=auth(KEY_A)))
    assert stream.error is not None, name
    assert not stream.frames
    assert stream.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violated = details(stream.error)
    assert info.reason == "ERROR_REASON_INVALID_FIELD"
    assert sorted(violated) == sorted(fields)
    assert not llm.requests


async def test_an_unknown_model_is_named_with_its_own_reason(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url, dense=None)
    stream = await collect(
        running.generation.Generate(passages_request(model="gpt-9"), metadata=auth(KEY_A))
    )
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violated = details(stream.error)
    assert info.reason == "ERROR_REASON_UNKNOWN_MODEL" and violated == ["model"]
    assert "deepseek-v4-flash" in (stream.error.details() or "")


async def test_without_an_llm_an_explicit_model_is_unknown(make_server: ServerFactory) -> None:
    running = await make_server(dense=None)
    stream = await collect(
        running.generation.Generate(passages_request(model="gpt-4o"), metadata=auth(KEY_A))
    )
    assert stream.error is not None
    assert details(stream.error)[0].reason == "ERROR_REASON_UNKNOWN_MODEL"


async def test_generate_needs_credentials(make_server: ServerFactory) -> None:
    running = await make_server(dense=None)
    stream = await collect(running.generation.Generate(passages_request()))
    assert stream.error is not None
    assert stream.error.code() == grpc.StatusCode.UNAUTHENTICATED
