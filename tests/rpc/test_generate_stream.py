"""Generate through the stubs: frames, citations, usage and cost, routing by tier and window,
telemetry, and the degraded answers of a server without an LLM."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from groundwire.testing.scripted_llm import DEFAULT_ANSWER_TOKENS, Script, ScriptedLLM
from groundwire.v1 import capabilities_pb2, generation_pb2, retrieval_pb2
from tests.rpc.conftest import KEY_A, ServerFactory, auth
from tests.rpc.corpus import corpus
from tests.rpc.generation import PASSAGES, assert_well_formed, collect, passages_request

FLASH = "deepseek-ai/DeepSeek-V4-Flash"


async def test_frames_arrive_in_order_and_the_answer_is_complete(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    # Tokens further apart than the pump's frame pace (20 ms): one token per delta, the marker
    # split.
    llm.set_default(Script(inter_token_s=0.06))
    stream = await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    assert stream.error is None
    assert_well_formed(stream)
    assert stream.text == "".join(DEFAULT_ANSWER_TOKENS)
    start = stream.start
    assert start.route == generation_pb2.ROUTE_PRIMARY
    assert start.model == "deepseek-v4-flash" and start.attempt == 1 and not start.cache_hit
    assert [s.chunk_id for s in start.sources] == [pid for pid, _ in PASSAGES]
    assert [s.number for s in start.sources] == [1, 2, 3]
    end = stream.end
    assert end.finish_reason == generation_pb2.FINISH_REASON_STOP
    assert end.attempts == 1 and end.final_model == "deepseek-v4-flash"
    assert not end.continued_after_failure
    timings = end.timings
    assert timings.total.ToMicroseconds() >= timings.first_token.ToMicroseconds() > 0
    assert timings.upstream_first_token.ToMicroseconds() > 0
    assert 0 <= timings.overhead.ToMicroseconds() <= timings.total.ToMicroseconds()
    # The split marker "[1" + "]" is one citation, reported after the delta closing it.
    (citation,) = stream.citations
    assert (citation.number, citation.chunk_id, citation.valid) == (1, "aspirin", True)
    assert stream.text[citation.start : citation.end] == "[1]"
    assert len(stream.deltas) == len(DEFAULT_ANSWER_TOKENS)


async def test_markers_naming_no_source_are_reported_invalid(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(tokens=["Fever [", "1][", "7]", " and [2, 9", "]."], inter_token_s=0.01))
    stream = await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    assert_well_formed(stream)
    got = [(c.number, c.chunk_id, c.valid) for c in stream.citations]
    assert got == [
        (1, "aspirin", True),
        (7, "", False),
        (2, "water", True),
        (9, "", False),
    ]


async def test_usage_and_cost_come_from_the_upstream_and_the_catalog(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(tokens=["a"] * 40, prompt_tokens=1000, cached_tokens=200))
    stream = await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    usage = stream.end.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (1000, 40, 200)
    # V4 Flash: $0.27 in, $1.10 out per million: 1000 * 0.27 + 40 * 1.10 = 314 micros.
    assert stream.end.cost.currency == "USD"
    assert stream.end.cost.micros == 314


async def test_without_reported_usage_tokens_are_counted_and_cached_stays_unknown(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(tokens=["w "] * 10, usage=False))
    stream = await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    usage = stream.end.usage
    assert usage.completion_tokens == 10
    assert usage.prompt_tokens > 0  # counted locally
    assert not usage.HasField("cached_tokens")
    assert stream.end.cost.micros > 0


async def test_max_output_tokens_reaches_the_upstream_and_ends_with_max_tokens(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(tokens=["x"] * 20))
    request = passages_request(max_output_tokens=5, temperature=0.0, stop=["END"])
    stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    assert stream.text == "xxxxx"
    assert stream.end.finish_reason == generation_pb2.FINISH_REASON_MAX_TOKENS
    body = llm.requests[0].body
    assert body["max_tokens"] == 5 and body["temperature"] == 0.0 and body["stop"] == ["END"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][0]["role"] == "system"
    user = body["messages"][1]["content"]
    assert "[1] Aspirin\nAspirin lowers fever" in user and "Question: What lowers fever?" in user


async def test_tiers_and_explicit_models_route_to_their_models(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    cases = [
        (passages_request(tier=generation_pb2.TIER_ECONOMY), "glm-4-plus", "glm-4-plus"),
        (
            passages_request(tier=generation_pb2.TIER_LONG_CONTEXT),
            "deepseek-v4-pro",
            "deepseek-ai/DeepSeek-V4-Pro",
        ),
        (passages_request(model="gpt-4o"), "gpt-4o", "gpt-4o"),
    ]
    for request, model, upstream in cases:
        stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
        assert stream.start.model == model
        assert stream.start.route == generation_pb2.ROUTE_PRIMARY
        assert llm.requests[-1].model == upstream


async def test_a_prompt_too_long_for_the_model_goes_to_the_long_context_model(
    make_server: ServerFactory, llm: ScriptedLLM, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        "builtin = false\n"
        "[models.small]\nupstream_model = 'small-up'\ncontext_window = 400\n"
        "max_output_tokens = 100\ninput_usd_per_million = 0.1\noutput_usd_per_million = 0.2\n"
        "[models.big]\nupstream_model = 'big-up'\ncontext_window = 100000\n"
        "max_output_tokens = 100\ninput_usd_per_million = 1\noutput_usd_per_million = 2\n"
        "[tiers]\nstandard = ['small']\nlong_context = ['big']\neconomy = ['small']\n"
    )
    running = await make_server(llm_base_url=llm.base_url, llm_catalog=catalog)
    long_text = "Aspirin is an old drug with many uses. " * 60
    request = generation_pb2.GenerateRequest(
        query="What is aspirin?",
        max_output_tokens=50,
        context=generation_pb2.ContextPassages(
            passages=[generation_pb2.ContextPassage(id="long", text=long_text)]
        ),
    )
    stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    assert stream.start.route == generation_pb2.ROUTE_LONG_CONTEXT
    assert stream.start.model == "big" and [r.model for r in llm.requests] == ["big-up"]
    # Short prompts stay on the standard model.
    stream = await collect(running.generation.Generate(passages_request(), metadata=auth(KEY_A)))
    assert stream.start.model == "small" and stream.start.route == generation_pb2.ROUTE_PRIMARY


async def test_correlation_id_and_traceparent_reach_the_upstream_and_the_span_is_gen_ai(
    make_server: ServerFactory, llm: ScriptedLLM, spans: InMemorySpanExporter
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    llm.set_default(Script(prompt_tokens=123))
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    metadata = auth(
        KEY_A,
        **{"x-correlation-id": "corr-gen-1", "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
    )
    stream = await collect(running.generation.Generate(passages_request(), metadata=metadata))
    assert stream.initial_metadata["x-correlation-id"] == "corr-gen-1"
    headers = llm.requests[0].headers
    assert headers["x-correlation-id"] == "corr-gen-1"
    assert headers["traceparent"].split("-")[1] == trace_id
    finished = spans.get_finished_spans()
    server_span = next(s for s in finished if s.name.endswith("GenerationService/Generate"))
    chat = next(s for s in finished if s.name.startswith("chat "))
    assert chat.parent is not None and chat.parent.span_id == server_span.context.span_id
    assert f"{chat.context.trace_id:032x}" == trace_id
    # The upstream saw the chat span as its parent.
    assert headers["traceparent"].split("-")[2] == f"{chat.context.span_id:016x}"
    attributes = chat.attributes or {}
    assert attributes["gen_ai.system"] == "deepseek"
    assert attributes["gen_ai.request.model"] == FLASH
    assert attributes["gen_ai.response.model"] == FLASH
    assert attributes["gen_ai.usage.input_tokens"] == 123
    assert attributes["gen_ai.usage.output_tokens"] == len(DEFAULT_ANSWER_TOKENS)
    assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("stop",)  # type: ignore[arg-type]
    assert attributes["groundwire.correlation_id"] == "corr-gen-1"


async def test_capabilities_list_the_catalog_tiers_and_breakers(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    caps = await running.capabilities.GetCapabilities(
        capabilities_pb2.GetCapabilitiesRequest(), metadata=auth(KEY_A)
    )
    models = {m.name: m for m in caps.models}
    assert set(models) == {
        "deepseek-v4-flash",
        "deepseek-v4-pro",
        "qwen3-32b",
        "glm-4-plus",
        "gpt-4o",
    }
    flash = models["deepseek-v4-flash"]
    assert flash.upstream_model == FLASH and flash.context_window == 128_000
    assert (flash.input_micros_per_million, flash.output_micros_per_million) == (270_000, 1_100_000)
    assert models["gpt-4o"].output_micros_per_million == 10_000_000
    assert all(m.breaker == capabilities_pb2.BREAKER_STATE_CLOSED for m in caps.models)
    tiers = {t.tier: list(t.chain) for t in caps.tiers}
    assert tiers[generation_pb2.TIER_STANDARD][0] == "deepseek-v4-flash"
    assert tiers[generation_pb2.TIER_ECONOMY][0] == "glm-4-plus"
    assert tiers[generation_pb2.TIER_LONG_CONTEXT][0] == "deepseek-v4-pro"
    assert caps.features["llm"] and caps.features["answer_cache"]
    running.breakers["gpt-4o"].record_failure(retry_after_s=60)
    caps = await running.capabilities.GetCapabilities(
        capabilities_pb2.GetCapabilitiesRequest(), metadata=auth(KEY_A)
    )
    states = {m.name: m.breaker for m in caps.models}
    assert states["gpt-4o"] == capabilities_pb2.BREAKER_STATE_OPEN


@pytest.mark.model
async def test_without_an_llm_the_answer_is_extractive_and_cited(
    make_server: ServerFactory,
) -> None:
    running = await make_server()  # embedded default: no LLM configured
    await running.ingest(corpus())
    request = generation_pb2.GenerateRequest(
        query="Why do volcanoes erupt?",
        retrieval=retrieval_pb2.RetrieveRequest(top_k=3),
    )
    stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    assert stream.error is None
    assert_well_formed(stream)
    assert stream.start.route == generation_pb2.ROUTE_DEGRADED and stream.start.model == ""
    assert stream.start.sources[0].doc_id == "volcano"
    assert stream.end.finish_reason == generation_pb2.FINISH_REASON_DEGRADED
    assert stream.end.cost.micros == 0 and stream.end.attempts == 0
    assert "no language model" in stream.end.detail
    assert stream.end.timings.retrieval.ToMicroseconds() > 0
    assert "pressure" in stream.text
    cited = {c.chunk_id for c in stream.citations}
    assert stream.start.sources[0].chunk_id in cited
    assert all(c.valid for c in stream.citations)
    assert len(stream.deltas) > 3  # streamed, not one blob


async def test_nothing_retrieved_means_no_model_call(
    make_server: ServerFactory, llm: ScriptedLLM
) -> None:
    running = await make_server(llm_base_url=llm.base_url)
    request = generation_pb2.GenerateRequest(query="Why do volcanoes erupt?")
    stream = await collect(running.generation.Generate(request, metadata=auth(KEY_A)))
    assert stream.start.route == generation_pb2.ROUTE_DEGRADED and not stream.start.sources
    assert stream.text == "No passages in the corpus match this question."
    assert not llm.requests
