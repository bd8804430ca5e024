"""Fuzz every RPC of the contract with hostile bodies (see :mod:`tests.rpc.fuzz_requests`):
each call ends OK, INVALID_ARGUMENT or RESOURCE_EXHAUSTED; the server stays SERVING and
logs nothing at ERROR (no traceback), whatever it was sent.

One server for the module (sparse only, a real Redis cache, the scripted upstream so that
Generate streams). ``GROUNDWIRE_FUZZ_EXAMPLES`` raises the example count for a longer run;
the counts per status code are printed at the end (``pytest -s``).
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from groundwire.clients.redis_cache import RedisCache
from groundwire.clients.vector_store import EdgeVectorStore
from groundwire.server.app import GroundwireServer
from groundwire.server.components import assemble_components
from groundwire.server.settings import load_settings
from groundwire.testing.scripted_llm import ScriptedLLM
from groundwire.v1 import (
    capabilities_pb2,
    common_pb2,
    documents_pb2,
    documents_pb2_grpc,
    generation_pb2,
    retrieval_pb2,
)
from tests.redis_server import RedisServer
from tests.rpc import raw_calls
from tests.rpc.conftest import KEY_A, KEY_B, auth
from tests.rpc.fuzz_requests import NOT_UTF8, Rpc, bodies, contract_rpcs, with_invalid_utf8
from tests.rpc.fuzz_requests import string_paths as strings_of
from tests.rpc.raw_calls import same

RPCS = contract_rpcs()
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
# What the contract adds per RPC: a Generate request may carry its own `time_limit` (a
# nanosecond is valid), and a limit that passes before the first token is a status
# (failures before the first delta are statuses), with our ErrorInfo. The call's own
# deadline (30 s) has no ErrorInfo and is never allowed.
ALSO_ALLOWED = {
    "/groundwire.v1.GenerationService/Generate": {
        (grpc.StatusCode.DEADLINE_EXCEEDED, "ERROR_REASON_DEADLINE_EXCEEDED")
    }
}
EXAMPLES = int(os.environ.get("GROUNDWIRE_FUZZ_EXAMPLES", "300"))
CALL_TIMEOUT_S = 30.0
MALFORMED = "ERROR_REASON_MALFORMED_REQUEST"
COUNTS: collections.Counter[tuple[str, str]] = collections.Counter()
REASONS: collections.Counter[str] = collections.Counter()  # ErrorInfo reasons of the failures

DOCUMENTS = [
    documents_pb2.Document(
        doc_id=f"doc-{i}",
        title=f"River {i}",
        text=f"The river {i} floods in spring; its delta holds {i} islands and old mills.",
        source_uri=f"https://example.org/rivers/{i}",
        metadata={
            "lang": common_pb2.MetadataValue(string_value="en"),
            "year": common_pb2.MetadataValue(int_value=1990 + i),
        },
    )
    for i in range(6)
]
_RETRIEVE = retrieval_pb2.RetrieveRequest(
    query="which river floods in spring",
    top_k=3,
    mode=retrieval_pb2.RETRIEVAL_MODE_SPARSE,
    filter=retrieval_pb2.MetadataFilter(
        must=[retrieval_pb2.FieldFilter(field="lang", string_equals="en")]
    ),
)
# Requests the server accepts, per request type: varied field by field by the fuzzer.
SEEDS: dict[str, list[Message]] = {
    "groundwire.v1.RetrieveRequest": [_RETRIEVE, retrieval_pb2.RetrieveRequest(query="mills")],
    "groundwire.v1.GenerateRequest": [
        generation_pb2.GenerateRequest(query="Which river floods?", retrieval=_RETRIEVE),
        generation_pb2.GenerateRequest(
            query="What floods?",
            context=generation_pb2.ContextPassages(
                passages=[generation_pb2.ContextPassage(id="p1", text="The Nile floods.")]
            ),
            max_output_tokens=64,
        ),
    ],
    "groundwire.v1.IngestDocumentsRequest": [
        documents_pb2.IngestDocumentsRequest(document=doc) for doc in DOCUMENTS
    ],
    "groundwire.v1.DeleteDocumentsRequest": [
        documents_pb2.DeleteDocumentsRequest(doc_ids=["doc-5", "missing"])
    ],
    "groundwire.v1.GetCapabilitiesRequest": [capabilities_pb2.GetCapabilitiesRequest()],
}


class _Recorder(logging.Handler):
    """Every record at WARNING or above, from any logger, while the module runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def log_records() -> Iterator[list[logging.LogRecord]]:
    recorder = _Recorder()
    logging.getLogger().addHandler(recorder)
    yield recorder.records
    logging.getLogger().removeHandler(recorder)


@dataclass
class Server:
    """The module's server: its address and a grpc.aio channel to it."""

    target: str
    channel: grpc.aio.Channel


@pytest.fixture(scope="module")
async def server(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    log_records: list[logging.LogRecord],
) -> AsyncIterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    async with ScriptedLLM() as llm:
        server_settings = load_settings(
            listen="127.0.0.1:0",
            auth_mode="api_key",
            api_keys={"tenant-a": KEY_A, "tenant-b": KEY_B},
            data_dir=data_dir,
            metrics_port=None,
            redis_url=redis_server.url,
            embedder="none",
            llm_base_url=llm.base_url,
            grace_period_s=1.0,
        )
        components = await assemble_components(
            server_settings,
            store=EdgeVectorStore(data_dir / "edge"),
            dense=None,
            cache=RedisCache.from_url(redis_server.url),
        )
        groundwire = GroundwireServer(server_settings, components)
        target = f"127.0.0.1:{await groundwire.start()}"
        async with grpc.aio.insecure_channel(target) as channel:
            stub = documents_pb2_grpc.DocumentServiceStub(channel)
            for key in (KEY_A, KEY_B):  # something to find, for both tenants
                await stub.IngestDocuments(
                    iter(documents_pb2.IngestDocumentsRequest(document=d) for d in DOCUMENTS),
                    metadata=auth(key),
                )
            yield Server(target, channel)
        await groundwire.stop(grace_s=0)


async def _call(
    server: Server, rpc: Rpc, body: bytes | list[bytes]
) -> tuple[grpc.StatusCode, str | None]:
    """Send ``body`` (a list of messages for a client stream) and read the whole answer;
    the status code and ErrorInfo reason.

    Every status groundwire sends carries an ErrorInfo; the one refusal allowed without it
    is gRPC's own for a message over the size limit. Anything else (a status that did not
    reach the caller intact, say) fails here.
    """
    metadata = auth(KEY_A)
    channel = server.channel
    try:
        if rpc.client_streaming:
            assert not rpc.server_streaming, "no bidirectional RPC in the contract yet"
            messages = body if isinstance(body, list) else [body]
            await raw_calls.stream_unary(
                server.target, rpc.path, messages, metadata, CALL_TIMEOUT_S
            )
        elif rpc.server_streaming:
            assert isinstance(body, bytes)
            method = channel.unary_stream(rpc.path, same, same)
            async for _ in method(body, metadata=metadata, timeout=CALL_TIMEOUT_S):
                pass
        else:
            assert isinstance(body, bytes)
            await channel.unary_unary(rpc.path, same, same)(
                body, metadata=metadata, timeout=CALL_TIMEOUT_S
            )
    except grpc.RpcError as error:
        call = cast(grpc.Call, error)  # both clients' errors are also the call
        code, reason = call.code(), _reason(call)
        REASONS[reason or f"(gRPC) {code.name}"] += 1
        if reason is None:
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert "larger than max" in (call.details() or ""), error
        return code, reason
    return grpc.StatusCode.OK, None


def _reason(call: grpc.Call) -> str | None:
    """The ErrorInfo reason of a failed call, or None without one."""
    status = rpc_status.from_call(call)
    info = error_details_pb2.ErrorInfo()
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    return info.reason or None


def _requests(rpc: Rpc) -> st.SearchStrategy[bytes | list[bytes]]:
    one = bodies(rpc.request, SEEDS.get(rpc.request.full_name))
    return st.lists(one, max_size=3) if rpc.client_streaming else one


CASES = st.sampled_from(RPCS).flatmap(lambda rpc: st.tuples(st.just(rpc), _requests(rpc)))


def test_every_rpc_of_the_contract_is_fuzzed() -> None:
    names = {rpc.path.rsplit("/", 1)[1] for rpc in RPCS}
    assert {"Retrieve", "Generate", "IngestDocuments", "DeleteDocuments"} <= names
    assert "GetCapabilities" in names


@pytest.mark.parametrize("rpc", [r for r in RPCS if strings_of(r.request)], ids=lambda r: r.path)
async def test_every_string_field_that_is_not_utf8_is_malformed(server: Server, rpc: Rpc) -> None:
    for path in strings_of(rpc.request):
        for bad in NOT_UTF8:
            code, reason = await _call(server, rpc, with_invalid_utf8(rpc.request, path, bad))
            COUNTS[(rpc.path, code.name)] += 1
            where = ".".join(f.name for f in path)
            assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, MALFORMED), where


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(case=CASES)
async def test_hostile_bodies_get_ok_invalid_argument_or_resource_exhausted(
    server: Server, case: tuple[Rpc, bytes | list[bytes]]
) -> None:
    rpc, body = case
    code, reason = await _call(server, rpc, body)
    COUNTS[(rpc.path, code.name)] += 1
    allowed = code in ALLOWED or (code, reason) in ALSO_ALLOWED.get(rpc.path, ())
    assert allowed, f"{rpc.path} answered {code.name} ({reason})"


async def test_the_server_is_still_serving_and_logged_no_error(
    server: Server, log_records: list[logging.LogRecord]
) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    response = await health.Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    errors = [r for r in log_records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [f"{r.name}: {r.getMessage()}" for r in errors[:5]]
    by_code = collections.Counter[str]()
    for (_, code), count in COUNTS.items():
        by_code[code] += count
    print(f"\nfuzz: {sum(COUNTS.values())} calls, by status code {dict(by_code)}")
    for (path, code), count in sorted(COUNTS.items()):
        print(f"  {path} {code}: {count}")
    print(f"  reasons: {dict(REASONS.most_common())}")
