"""The answer cache: replayed frame for frame, keyed on everything that changes the answer,
bypassed when asked, at high temperatures, and when Redis fails."""

from __future__ import annotations

import pytest

from groundwire.clients.redis_cache import RedisCache
from groundwire.testing.scripted_llm import Script, ScriptedLLM
from groundwire.v1 import documents_pb2, generation_pb2, retrieval_pb2
from tests.rpc.conftest import KEY_A, KEY_B, ServerFactory, auth
from tests.rpc.corpus import corpus
from tests.rpc.generation import Stream, collect, passages_request


def body(stream: Stream) -> list[generation_pb2.GenerateResponse]:
    """The deltas and citations, in order."""
    return stream.frames[1:-1]


async def test_a_hit_replays_the_same_frames_at_no_cost(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(inter_token_s=0.005))
    first = await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    await running.settle()
    second = await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    assert len(llm.requests) == 1
    assert second.start.route == generation_pb2.ROUTE_CACHE and second.start.cache_hit
    assert second.start.model == first.start.model
    assert list(second.start.sources) == list(first.start.sources)
    assert body(second) == body(first)  # frame for frame, splits included
    end = second.end
    assert end.finish_reason == first.end.finish_reason
    assert end.cost.micros == 0 and end.attempts == 0 and end.final_model == ""
    assert end.usage.prompt_tokens == 0 and end.usage.completion_tokens == 0
    assert end.timings.cache.ToMicroseconds() > 0
    # Another tenant, another question or other sampling: not the same entry.
    for request, key in [
        (passages_request(), KEY_B),
        (passages_request(query="What boils water?"), KEY_A),
        (passages_request(max_output_tokens=100), KEY_A),
        (passages_request(tier=generation_pb2.TIER_ECONOMY), KEY_A),
    ]:
        stream = await collect(running.generation.Generate(request, metadata=auth(key)))
        assert not stream.start.cache_hit
    assert len(llm.requests) == 5


async def test_bypass_and_high_temperatures_skip_the_cache(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url, answer_cache_max_temperature=0.3)
    await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    await running.settle()
    stream = await collect(
        running.generation.Generate(passages_request(bypass_cache=True), metadata=auth(KEY_A))
    )
    assert not stream.start.cache_hit
    for _ in range(2):
        stream = await collect(
            running.generation.Generate(passages_request(temperature=0.9), metadata=auth(KEY_A))
        )
        await running.settle()
        assert not stream.start.cache_hit
    assert len(llm.requests) == 4


async def test_only_clean_answers_are_stored(make_server: ServerFactory, llm: ScriptedLLM) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(status=500))  # every model down: a degraded answer
    await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    await running.settle()
    llm.set_default(Script())
    stream = await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    assert stream.start.route == generation_pb2.ROUTE_PRIMARY


async def test_a_redis_failure_bypasses_the_answer_cache(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    dead = RedisCache.from_url("redis://127.0.0.1:1/0", timeout_s=0.05)
    running = await make_server(llm_base_url=llm.base_url, cache=dead)
    for _ in range(2):
        stream = await collect(
            running.generation.Generate(passages_request(), metadata=auth(KEY_A))
        )
        await running.settle()
        assert stream.error is None and stream.start.route == generation_pb2.ROUTE_PRIMARY
    assert len(llm.requests) == 2


@pytest.mark.model
async def test_ingest_orphans_cached_answers_grounded_in_the_corpus(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    await running.ingest(corpus())
    request = generation_pb2.GenerateRequest(
        query="Why do volcanoes erupt?", retrieval=retrieval_pb2.RetrieveRequest(top_k=2)
    )
    await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    await running.settle()
    stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    assert stream.start.cache_hit and stream.start.sources[0].doc_id == "volcano"
    await running.ingest(
        [documents_pb2.Document(doc_id="new", title="Tools", text="A note about garden tools.")]
    )
    stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    assert not stream.start.cache_hit
    assert len(llm.requests) == 2
