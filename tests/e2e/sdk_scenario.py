"""The SDK scenario in Python: the eight steps with the sync client, then steps 1-4 again with
the asyncio client, against a live groundwire stack (see ``tests.e2e.live``).

The server may use any OpenAI-compatible upstream. The checks that need a scripted answer (the
exact text, its ``[1]`` citation, a slow answer to cancel, the stack's catalog and prices) run
only when ``upstream_url`` offers the scripted upstream's control endpoints (``/_scripted/``,
probed first); otherwise they are skipped with a line naming the reason, and the rest (frames in
order, citations that name sources, the end frame, cancel, typed errors, correlation ids) runs.

Run it standalone against a running stack::

    PYTHONPATH=sdks/python .venv/bin/python -c \\
        "from tests.e2e.sdk_scenario import run_scenario; print(run_scenario(ADDR, KEY, UPSTREAM))"
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import statistics
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

import grpc

from groundwire.sdk import (
    AsyncClient,
    Client,
    ContextPassage,
    ContextPassages,
    Document,
    GenerateRequest,
    GenerateResponse,
    RetrieveRequest,
    ServingStatus,
    errors,
)
from groundwire.v1 import generation_pb2

LANGUAGE = "python"
REQUIRED_MODEL = "deepseek-v4-flash"
DEFAULT_ANSWER = "The sources say so [1]."
VOLCANO_QUERY = "why do volcanoes erupt"
# Against an unscripted upstream, step 5 needs an answer long enough to cancel midway.
LONG_QUERY = "Explain in detail, in at least 400 words, why volcanoes erupt."
TIMED_STREAMS = 20
CANCEL_LIMIT_S = 1.0
DOCUMENTS = [
    Document(
        doc_id="volcano",
        title="Why volcanoes erupt",
        text=(
            "Volcanoes erupt when molten rock called magma rises toward the surface. "
            "Gas dissolved in the magma expands as the pressure drops, and the pressure of "
            "the gas bubbles blasts the magma out through vents in the crust."
        ),
        source_uri="https://example.org/volcano",
    ),
    Document(
        doc_id="sourdough",
        title="Baking sourdough bread",
        text=(
            "Sourdough bread is leavened by a starter of wild yeast and lactic acid bacteria. "
            "The long fermentation gives the loaf its sour taste and open crumb."
        ),
        source_uri="https://example.org/sourdough",
    ),
    Document(
        doc_id="tides",
        title="Ocean tides",
        text=(
            "Tides are the rise and fall of sea levels caused by the gravity of the Moon and "
            "the Sun. Most coasts see two high tides and two low tides every day."
        ),
        source_uri="https://example.org/tides",
    ),
]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


@dataclass(frozen=True)
class Upstream:
    """What the scenario may expect of the server's upstream."""

    url: str | None
    # Why the scripted checks are skipped; None when the control endpoints answered.
    unscripted: str | None

    @property
    def scripted(self) -> bool:
        """Whether the upstream is the scripted one (its answers and faults can be set)."""
        return self.unscripted is None

    def skip(self, what: str) -> None:
        """Say which check is skipped and why."""
        print(f"{LANGUAGE} scenario: skipped {what}: {self.unscripted}", flush=True)


def probe_upstream(upstream_url: str | None) -> Upstream:
    """Whether ``upstream_url`` offers the scripted upstream's control endpoints."""
    if not upstream_url:
        return Upstream(None, "GROUNDWIRE_TEST_UPSTREAM is not set")
    probe = _control_url(upstream_url, "requests")
    try:
        with urllib.request.urlopen(probe, timeout=5) as reply:
            listed = json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return Upstream(
            upstream_url, f"{probe} answered HTTP {error.code}: not a scripted upstream"
        )
    except (OSError, ValueError) as error:
        return Upstream(upstream_url, f"{probe} gave no scripted answer ({error})")
    if not isinstance(listed, list):
        return Upstream(upstream_url, f"{probe} answered no request list: not a scripted upstream")
    return Upstream(upstream_url, None)


def _control_url(upstream_url: str, endpoint: str) -> str:
    return f"{upstream_url.removesuffix('/').removesuffix('/v1')}/_scripted/{endpoint}"


def _generate_request(
    *, bypass_cache: bool = True, query: str = "Why do volcanoes erupt?"
) -> GenerateRequest:
    return GenerateRequest(
        query=query,
        retrieval=RetrieveRequest(top_k=3),
        bypass_cache=bypass_cache,
    )


def _context_request() -> GenerateRequest:
    return GenerateRequest(
        query="Why do volcanoes erupt?",
        context=ContextPassages(
            passages=[ContextPassage(id="p1", title="Volcanoes", text=DOCUMENTS[0].text)]
        ),
        bypass_cache=True,
    )


def _queue_slow_answer(upstream_url: str, tokens: int = 200, inter_token_s: float = 0.02) -> None:
    script = {
        "model": None,
        "scripts": [
            {
                "tokens": ["Slow"] + [f" word{i}" for i in range(1, tokens)],
                "inter_token_s": inter_token_s,
            }
        ],
        "default": False,
    }
    request = urllib.request.Request(
        _control_url(upstream_url, "script"),
        data=json.dumps(script).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        _check(reply.status == 200, f"scripting the upstream answered HTTP {reply.status}")


# Steps 1-4 check the same things for both clients.


def _check_capabilities(
    upstream: Upstream, status: ServingStatus, models: list[str], features: dict[str, bool]
) -> None:
    _check(status == ServingStatus.SERVING, f"health: {status!r}, expected SERVING")
    _check(bool(models), "capabilities list no models")
    if upstream.scripted:  # the live stack's catalog; another upstream comes with its own
        _check(REQUIRED_MODEL in models, f"capabilities lack {REQUIRED_MODEL}: {models}")
    _check(features.get("generation") is True, f"generation feature not on: {features}")


def _check_ingest(created: int, unchanged: int, failed: int) -> None:
    _check(failed == 0, f"ingest: {failed} failed")
    _check(created + unchanged == 3, f"ingest: {created} created + {unchanged} unchanged != 3")


def _check_retrieve(doc_ids: list[str]) -> None:
    _check(bool(doc_ids), "retrieve returned no chunks")
    _check(doc_ids[0] == "volcano", f"retrieve: first chunk from {doc_ids[0]!r}, not 'volcano'")


def _check_answer(upstream: Upstream, answer: str) -> None:
    if upstream.scripted:
        _check(answer == DEFAULT_ANSWER, f"answer {answer!r} != {DEFAULT_ANSWER!r}")
    else:
        _check(bool(answer.strip()), "the answer is empty")


def _check_finish(upstream: Upstream, finish: int) -> None:
    allowed = {generation_pb2.FINISH_REASON_STOP}
    if not upstream.scripted:  # a real model may run into its token limit
        allowed.add(generation_pb2.FINISH_REASON_MAX_TOKENS)
    _check(finish in allowed, f"finish {finish}")


def _check_frames(upstream: Upstream, frames: list[GenerateResponse]) -> None:
    kinds = [frame.WhichOneof("frame") for frame in frames]
    _check(bool(kinds) and kinds[0] == "start", f"first frame is not start: {kinds}")
    _check(kinds[-1] == "end", f"last frame is not end: {kinds}")
    _check(kinds.count("start") == 1 and kinds.count("end") == 1, f"frames: {kinds}")
    start, end = frames[0].start, frames[-1].end
    answer = "".join(frame.delta.text for frame in frames if frame.WhichOneof("frame") == "delta")
    _check_answer(upstream, answer)
    source_ids = {source.chunk_id for source in start.sources}
    citations = [frame.citation for frame in frames if frame.WhichOneof("frame") == "citation"]
    for citation in citations:
        if citation.valid:
            _check(
                citation.chunk_id in source_ids,
                f"citation [{citation.number}] cites {citation.chunk_id}, not a source",
            )
    _check_finish(upstream, end.finish_reason)
    _check(end.usage.completion_tokens > 0, "end: no completion tokens")
    if upstream.scripted:  # prices come from the catalog, which another upstream brings
        _check(end.cost.micros > 0, f"end: cost {end.cost.micros} micros")
        _check(end.cost.currency == "USD", f"end: currency {end.cost.currency!r}")


def _percentile(values: Iterable[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def run_sync(address: str, api_key: str, upstream: Upstream) -> float:
    """The eight steps with the sync client; returns the p50 stream time in ms."""
    with Client(address, api_key=api_key, timeout=30.0) as client:
        # 1. Health and capabilities.
        capabilities = client.capabilities()
        _check_capabilities(
            upstream,
            client.health(),
            [model.name for model in capabilities.models],
            dict(capabilities.features),
        )

        # 2. Ingest three documents.
        summary = client.ingest(iter(DOCUMENTS))
        _check_ingest(summary.created, summary.unchanged, summary.failed)

        # 3. Retrieve.
        chunks = client.retrieve(VOLCANO_QUERY, top_k=3).chunks
        _check_retrieve([chunk.doc_id for chunk in chunks])

        # 4. One grounded answer, frame by frame.
        stream = client.generate(_generate_request())
        _check_frames(upstream, list(stream))
        _check(stream.end is not None, "stream state: no end frame")
        _check_answer(upstream, stream.answer)

        # 5. Cancel a slow answer after its first delta.
        if upstream.scripted:
            _queue_slow_answer(upstream.url or "")
            request = _generate_request()
        else:
            upstream.skip("the scripted slow answer (step 5 asks for a long one instead)")
            request = _generate_request(query=LONG_QUERY)
        began = time.perf_counter()
        stream = client.generate(request)
        deltas = 0
        cancelled_at: float | None = None
        try:
            for frame in stream:
                if frame.WhichOneof("frame") == "delta":
                    deltas += 1
                    if cancelled_at is None:
                        cancelled_at = time.perf_counter()
                        stream.cancel()
            raise AssertionError("the cancelled stream ended without an error")
        except errors.Cancelled as error:
            _check(error.code == grpc.StatusCode.CANCELLED, f"cancel gave {error.code}")
        _check(cancelled_at is not None, "no delta arrived before the stream ended")
        assert cancelled_at is not None
        after_cancel = time.perf_counter() - cancelled_at
        _check(after_cancel < CANCEL_LIMIT_S, f"cancel took {after_cancel:.2f}s to end the stream")
        if upstream.scripted:  # a real model may take seconds to its first token
            _check(time.perf_counter() - began < 5.0, "the cancelled stream ran for 5 s or more")
        _check(stream.end is None, "a cancelled stream should not get its end frame")

        # 6. A bad request gives a typed error.
        try:
            list(client.generate(GenerateRequest(query="Why?", temperature=5.0)))
            raise AssertionError("temperature 5.0 was accepted")
        except errors.InvalidArgument as error:
            _check(error.code == grpc.StatusCode.INVALID_ARGUMENT, f"code {error.code}")
            _check(error.reason == "ERROR_REASON_INVALID_FIELD", f"reason {error.reason}")
            _check(error.domain == errors.ERROR_DOMAIN, f"domain {error.domain!r}")
            fields = [violation.field for violation in error.field_violations]
            _check("temperature" in fields, f"field violations {fields}")
            _check(isinstance(error.__cause__, grpc.RpcError), "the cause is not the RpcError")
            _check(bool(error.correlation_id), "the error carries no correlation id")

        # 7. The correlation id comes back in the response headers.
        correlation_id = f"sdk-python-{uuid.uuid4().hex[:12]}"
        stream = client.generate(_context_request(), correlation_id=correlation_id)
        for _ in stream:
            pass
        _check(stream.correlation_id == correlation_id, f"echoed {stream.correlation_id!r}")
        echoed = stream.initial_metadata().get(errors.CORRELATION_ID_KEY)
        _check(echoed == correlation_id, f"header x-correlation-id is {echoed!r}")

        # 8. Time sequential streams.
        times_ms: list[float] = []
        for _ in range(TIMED_STREAMS):
            began = time.perf_counter()
            stream = client.generate(_context_request())
            for _ in stream:
                pass
            times_ms.append((time.perf_counter() - began) * 1000)
            _check(stream.end is not None, "a timed stream had no end frame")
    p50, p90 = statistics.median(times_ms), _percentile(times_ms, 0.9)
    print(
        f"GENERATE_STREAM_MS language={LANGUAGE} n={TIMED_STREAMS} p50={p50:.1f} p90={p90:.1f}",
        flush=True,
    )
    return p50


async def run_async(address: str, api_key: str, upstream: Upstream) -> None:
    """Steps 1-4 with the asyncio client."""
    async with AsyncClient(address, api_key=api_key, timeout=30.0) as client:
        capabilities = await client.capabilities()
        _check_capabilities(
            upstream,
            await client.health(),
            [model.name for model in capabilities.models],
            dict(capabilities.features),
        )

        async def documents() -> AsyncIterator[Document]:
            for document in DOCUMENTS:
                yield document

        summary = await client.ingest(documents())
        _check_ingest(summary.created, summary.unchanged, summary.failed)

        chunks = (await client.retrieve(VOLCANO_QUERY, top_k=3)).chunks
        _check_retrieve([chunk.doc_id for chunk in chunks])

        stream = client.generate(_generate_request())
        _check_frames(upstream, [frame async for frame in stream])
        _check(stream.correlation_id is not None, "the async stream saw no correlation id")

        texts = client.generate_text(_generate_request())
        answer = "".join([text async for text in texts])
        _check_answer(upstream, answer)
        _check(texts.end is not None, "generate_text kept no end frame")


def _run_coroutine(factory: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(main())
        return
    # Called from inside an event loop (an async test): run on a loop of our own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, main()).result()


def run_scenario(address: str, api_key: str, upstream_url: str | None) -> float:
    """Run the scenario with both clients; print the timing line; return the p50 in ms."""
    upstream = probe_upstream(upstream_url)
    if not upstream.scripted:
        upstream.skip("the checks that need the scripted upstream")
    p50 = run_sync(address, api_key, upstream)
    _run_coroutine(lambda: run_async(address, api_key, upstream))
    return p50
