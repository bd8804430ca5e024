"""Per-tenant quotas through the stubs: requests per minute refused with QuotaFailure and
RetryInfo, overrides, GetCapabilities, LLM tokens and spend charged after every answer (a
cancelled one included), two servers on one Redis sharing one budget, Redis down.

No test here needs the meaning of a text: the servers are sparse-only and the module's
``embedder`` fixture stands in None for the session's MiniLM model, so none is loaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from qdrant_client import AsyncQdrantClient

from groundwire.clients.vector_store import QdrantVectorStore
from groundwire.testing.scripted_llm import Script, ScriptedLLM
from groundwire.v1 import documents_pb2, retrieval_pb2
from tests.redis_server import RedisServer
from tests.rpc.conftest import KEY_A, KEY_B, Running, ServerFactory, auth
from tests.rpc.errors import details
from tests.rpc.generation import collect, passages_request, read_deltas
from tests.rpc.quotas import quotas_of, start_well_inside_a_minute

SPARSE = {"dense": None, "embedder": "none"}


@pytest.fixture
def embedder() -> None:
    """No model: ``make_server(dense=None)`` servers never embed."""
    return None


@pytest.fixture(autouse=True)
def fresh_minute() -> None:
    """Start each test well inside a minute (see :func:`start_well_inside_a_minute`)."""
    start_well_inside_a_minute()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop without disturbing the session's."""
    with RedisServer() as server:
        yield server


def quota_failure(error: grpc.aio.AioRpcError) -> tuple[list[str], float]:
    """The QuotaFailure subjects and the RetryInfo delay (seconds) of a refusal."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    subjects: list[str] = []
    delay = -1.0
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            subjects += [v.subject for v in failure.violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToMilliseconds() / 1000
    return subjects, delay


async def retrieve(running: Running, key: str = KEY_A) -> retrieval_pb2.RetrieveResponse:
    return await running.retrieval.Retrieve(  # type: ignore[no-any-return]
        retrieval_pb2.RetrieveRequest(query="what lowers fever"), metadata=auth(key)
    )


async def remaining_after_charges(running: Running, name: str, below: int, key: str = KEY_A) -> int:
    """The quota's remaining once an answer's charge has landed (charges are written after the
    stream ends, in the background)."""
    for _ in range(500):
        remaining = (await quotas_of(running, key))[name].remaining
        if remaining < below:
            return remaining
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} was never charged")


async def test_over_the_request_quota_is_refused_with_quota_failure_and_retry_info(
    make_server: ServerFactory,
) -> None:
    running = await make_server(
        **SPARSE,
        quota_requests_per_minute=3,
        quota_overrides={"tenant-b": {"requests_per_minute": 5}},
    )
    await retrieve(running)
    await running.ingest([documents_pb2.Document(doc_id="d1", text="Aspirin lowers fever.")])
    await running.documents.DeleteDocuments(
        documents_pb2.DeleteDocumentsRequest(doc_ids=["nope"]), metadata=auth(KEY_A)
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await retrieve(running)
    error = refused.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(error)[0].reason == "ERROR_REASON_QUOTA_EXCEEDED"
    subjects, delay = quota_failure(error)
    assert subjects == ["requests_per_minute"]
    assert 0 < delay <= 60
    # Generate draws on the same budget and is refused before it starts.
    stream = await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    assert not stream.frames and stream.error is not None
    assert stream.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # GetCapabilities is never refused and shows what is left.
    quota = (await quotas_of(running))["requests_per_minute"]
    assert (quota.limit, quota.remaining, quota.shared) == (3, 0, True)
    assert quota.window.seconds == 60 and 0 < quota.resets_in.ToMilliseconds() <= 60_000
    # The other tenant has its own budget, with its override.
    for _ in range(5):
        await retrieve(running, KEY_B)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await retrieve(running, KEY_B)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await quotas_of(running, KEY_B))["requests_per_minute"].limit == 5


async def test_without_limits_nothing_is_counted_or_listed(make_server: ServerFactory) -> None:
    running = await make_server(**SPARSE, quota_overrides={"tenant-b": {"spend_micros_per_day": 9}})
    for _ in range(3):
        await retrieve(running)
    assert await quotas_of(running) == {}
    assert list(await quotas_of(running, KEY_B)) == ["spend_micros_per_day"]


async def test_spend_and_tokens_are_charged_from_the_end_frame_and_then_refuse(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(
        **SPARSE,
        llm_base_url=llm.base_url,
        quota_llm_tokens_per_minute=1_000_000,
        quota_spend_micros_per_day=1,
    )
    llm.set_default(Script(tokens=["Aspirin", " lowers", " fever", " [1]."], prompt_tokens=120))
    stream = await collect(
        running.generation.Generate(passages_request(bypass_cache=True), metadata=auth(KEY_A))
    )
    assert stream.error is None
    end = stream.end
    assert end.cost.micros > 0
    assert await remaining_after_charges(running, "spend_micros_per_day", below=1) == 0
    tokens_left = await remaining_after_charges(running, "llm_tokens_per_minute", below=10**6)
    assert 10**6 - tokens_left == end.usage.prompt_tokens + end.usage.completion_tokens
    quotas = await quotas_of(running)
    assert quotas["spend_micros_per_day"].currency == end.cost.currency
    assert quotas["spend_micros_per_day"].window.seconds == 86_400
    # The day's spend is gone: the next answer is refused before any upstream call.
    calls = len(llm.requests)
    stream = await collect(
        running.generation.Generate(passages_request(bypass_cache=True), metadata=auth(KEY_A))
    )
    assert not stream.frames and stream.error is not None
    assert stream.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(stream.error)[0].reason == "ERROR_REASON_QUOTA_EXCEEDED"
    subjects, delay = quota_failure(stream.error)
    assert subjects == ["spend_micros_per_day"] and 0 < delay <= 86_400
    assert len(llm.requests) == calls
    # Retrieval does not spend: it still runs.
    await retrieve(running)


async def test_a_cancelled_stream_is_charged_what_it_used(
    make_server: ServerFactory, llm: ScriptedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    limit = 10**12
    running = await make_server(
        **SPARSE,
        llm_base_url=llm.base_url,
        quota_llm_tokens_per_minute=limit,
        quota_spend_micros_per_day=limit,
    )
    llm.set_default(Script(tokens=[f" t{i}" for i in range(400)], inter_token_s=0.01))
    call = running.generation.Generate(passages_request(bypass_cache=True), metadata=auth(KEY_A))
    with caplog.at_level(logging.INFO, logger="groundwire.answers"):
        assert await read_deltas(call, 5) == 5
        call.cancel()
        spend_left = await remaining_after_charges(running, "spend_micros_per_day", below=limit)
    answer = next(r for r in caplog.records if r.message == "answer")
    assert answer.finish == "cancelled"  # type: ignore[attr-defined]
    assert 5 <= answer.tokens_out < 400  # type: ignore[attr-defined]
    assert limit - spend_left == answer.cost_micros > 0  # type: ignore[attr-defined]
    tokens_left = await remaining_after_charges(running, "llm_tokens_per_minute", below=limit)
    assert limit - tokens_left == answer.tokens_in + answer.tokens_out  # type: ignore[attr-defined]


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
async def test_two_servers_on_one_index_share_a_budget_and_another_index_does_not(
    make_server: ServerFactory,
) -> None:
    """Two replicas of one deployment: two QdrantVectorStores over one qdrant-client in-process
    collection, both told the one URL a deployment's replicas are given, so their identities,
    and with them their Redis namespaces, are equal. A third server on an Edge shard of its own
    is another index on the same Redis: its budget is its own."""
    client = AsyncQdrantClient(location=":memory:")
    url = "http://qdrant.quota-test:6333"
    limits = {**SPARSE, "quota_requests_per_minute": 4}
    first = await make_server(store=QdrantVectorStore(client, "chunks", url=url), **limits)
    second = await make_server(store=QdrantVectorStore(client, "chunks", url=url), **limits)
    other = await make_server(**limits)
    components = [r.server.components for r in (first, second, other)]
    assert components[0].namespace == components[1].namespace != components[2].namespace
    for running in (first, second, first, second):
        await retrieve(running)
    for running in (first, second):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await retrieve(running)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await quotas_of(second))["requests_per_minute"].remaining == 0
    for _ in range(4):
        await retrieve(other)
    assert (await quotas_of(other))["requests_per_minute"].remaining == 0


async def test_redis_down_counts_in_process_and_calls_succeed(
    make_server: ServerFactory, private_redis: RedisServer
) -> None:
    running = await make_server(**SPARSE, redis_url=private_redis.url, quota_requests_per_minute=4)
    await retrieve(running)
    assert (await quotas_of(running))["requests_per_minute"].shared
    private_redis.stop()
    for _ in range(4):  # the in-process count of this replica starts afresh
        await retrieve(running)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await retrieve(running)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    quota = (await quotas_of(running))["requests_per_minute"]
    assert (quota.remaining, quota.shared) == (0, False)
