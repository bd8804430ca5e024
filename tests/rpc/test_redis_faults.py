"""Redis killed and frozen under load, through the stubs: every call succeeds; while Redis is
frozen only the operations already in flight when it froze (and the few that open the
breaker) wait for the timeout, the rest skip Redis at once; once Redis answers again the
cache serves hits again.

Each test freezes or kills a private redis-server, never the session's. Sparse-only servers
(``dense=None``); what is asserted is counted (operations attempted, skipped), plus one
generous per-call bound (10 x the Redis timeout) that a busy machine cannot break.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from prometheus_client import REGISTRY

from groundwire.v1 import retrieval_pb2
from tests.redis_server import RedisServer
from tests.rpc.conftest import KEY_A, Running, ServerFactory, auth
from tests.rpc.corpus import corpus

CONCURRENCY = 16
TIMEOUT_S = 0.2
THRESHOLD = 3
RESET_S = 0.5
# Varied queries and sizes: repeats hit the cache, first askings miss it.
QUERIES = ["magma", "bread", "tides", "window", "plants", "crust", "moon", "flour", "loss"]


@dataclass
class Call:
    """One Retrieve as the caller saw it (loop time)."""

    started: float
    seconds: float
    cache_hit: bool
    error: str | None = None


@dataclass
class Load:
    """``CONCURRENCY`` callers issuing Retrieve calls back to back until stopped."""

    running: Running
    calls: list[Call] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def caller(self, number: int) -> None:
        loop = asyncio.get_running_loop()
        sent = number
        while not self.stop.is_set():
            sent += 1
            request = retrieval_pb2.RetrieveRequest(
                query=QUERIES[sent % len(QUERIES)], top_k=1 + sent % 3
            )
            started = loop.time()
            try:
                response = await self.running.retrieval.Retrieve(
                    request, metadata=auth(KEY_A), timeout=30
                )
                self.calls.append(Call(started, loop.time() - started, response.cache_hit))
            except grpc.aio.AioRpcError as exc:
                self.calls.append(Call(started, loop.time() - started, False, exc.code().name))

    def since(self, moment: float) -> list[Call]:
        return [c for c in self.calls if c.started >= moment]

    async def hits_resume(self, after: float, timeout_s: float = 15.0) -> None:
        """Wait until calls started after ``after`` are served from the cache again."""
        for _ in range(int(timeout_s / 0.05)):
            if any(c.cache_hit for c in self.since(after)):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no cache hit within {timeout_s} s after Redis came back")


def counted(name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)


async def serve(make_server: ServerFactory, redis: RedisServer) -> Running:
    running = await make_server(
        dense=None,
        redis_url=redis.url,
        redis_timeout_s=TIMEOUT_S,
        redis_breaker_failures=THRESHOLD,
        redis_breaker_reset_s=RESET_S,
    )
    await running.ingest(corpus())
    return running


async def test_a_frozen_redis_costs_each_call_at_most_one_timeout(
    make_server: ServerFactory, private_redis: RedisServer
) -> None:
    running = await serve(make_server, private_redis)
    assert private_redis.process is not None
    load = Load(running)
    loop = asyncio.get_running_loop()
    callers = [asyncio.create_task(load.caller(n)) for n in range(CONCURRENCY)]
    try:
        await asyncio.sleep(0.5)
        assert any(c.cache_hit for c in load.calls)  # healthy: the cache serves
        timeouts = counted("groundwire_redis_failures_total", kind="timeout")
        skipped = counted("groundwire_redis_skipped_total")

        private_redis.process.send_signal(signal.SIGSTOP)
        frozen_at = loop.time()
        await asyncio.sleep(2.0)
        frozen_calls = load.since(frozen_at)
        attempted = counted("groundwire_redis_failures_total", kind="timeout") - timeouts
        skipped = counted("groundwire_redis_skipped_total") - skipped
        private_redis.process.send_signal(signal.SIGCONT)
        thawed_at = loop.time()

        await load.hits_resume(after=thawed_at)
    finally:
        load.stop.set()
        await asyncio.gather(*callers)

    assert [c for c in load.calls if c.error is not None] == []
    # Waiting for Redis: at most the reads of the calls in flight when it froze, the cache
    # writes in flight then (one per caller at most), and the timeouts that open the breaker.
    assert attempted <= THRESHOLD + 2 * CONCURRENCY
    assert len(frozen_calls) > THRESHOLD + 2 * CONCURRENCY  # the freeze saw real load
    # Every other call skipped Redis without waiting (one lookup per call).
    assert skipped >= len(frozen_calls) - attempted
    assert max(c.seconds for c in load.calls) < 10 * TIMEOUT_S


async def test_a_killed_redis_fails_no_call_and_the_cache_returns_with_it(
    make_server: ServerFactory, private_redis: RedisServer
) -> None:
    running = await serve(make_server, private_redis)
    load = Load(running)
    loop = asyncio.get_running_loop()
    callers = [asyncio.create_task(load.caller(n)) for n in range(CONCURRENCY)]
    try:
        await asyncio.sleep(0.5)
        errors = counted("groundwire_redis_failures_total", kind="error")
        private_redis.stop()  # SIGKILL
        killed_at = loop.time()
        await asyncio.sleep(1.0)
        assert load.since(killed_at)  # calls went on meanwhile
        assert counted("groundwire_redis_failures_total", kind="error") > errors
        private_redis.start()  # same port, empty
        await load.hits_resume(after=loop.time())
    finally:
        load.stop.set()
        await asyncio.gather(*callers)

    assert [c for c in load.calls if c.error is not None] == []
    assert max(c.seconds for c in load.calls) < 10 * TIMEOUT_S
    redis = running.server.components.redis
    assert redis is not None and redis.available
