"""RedisLink against a real, private redis-server that the tests freeze (SIGSTOP) and thaw:
the breaker opens after consecutive timeouts, skips without touching Redis, and a background
probe closes it once Redis answers again. Time is a hand-driven clock; what is asserted is
which operations reached Redis, not how long they took."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from prometheus_client import REGISTRY

from groundwire.clients.breaker import BreakerState
from groundwire.clients.redis_link import RedisClient, RedisLink, RedisUnavailable, key_namespace
from groundwire.server.settings import SettingsError, load_settings
from tests.redis_server import RedisServer, free_port

TIMEOUT_S = 0.1
THRESHOLD = 3
RESET_S = 5.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Calls:
    """An operation that counts how often it really ran (reached Redis)."""

    def __init__(self) -> None:
        self.ran = 0

    async def __call__(self, client: RedisClient) -> object:
        self.ran += 1
        return await client.get("k")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone (freezing the session's would stall other tests)."""
    with RedisServer() as server:
        yield server
        assert server.process is not None
        server.process.send_signal(signal.SIGCONT)  # a frozen process cannot be killed cleanly


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def link(private_redis: RedisServer, clock: Clock) -> AsyncIterator[RedisLink]:
    link = RedisLink.from_url(
        private_redis.url,
        timeout_s=TIMEOUT_S,
        failure_threshold=THRESHOLD,
        reset_s=RESET_S,
        clock=clock,
    )
    yield link
    await link.close()


def freeze(server: RedisServer) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)


def thaw(server: RedisServer) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGCONT)


async def attempt(link: RedisLink, calls: Calls) -> RedisUnavailable | None:
    """Run one operation; the RedisUnavailable it raised, if any."""
    try:
        await link.run("get", calls)
    except RedisUnavailable as exc:
        return exc
    return None


async def freeze_and_trip(link: RedisLink, server: RedisServer, calls: Calls) -> None:
    """Freeze Redis and time out as many operations as open the breaker."""
    freeze(server)
    for _ in range(THRESHOLD):
        await attempt(link, calls)


async def test_consecutive_timeouts_open_the_breaker_and_later_calls_skip_redis(
    link: RedisLink, private_redis: RedisServer
) -> None:
    calls = Calls()
    assert await attempt(link, calls) is None  # a pooled connection exists
    skipped_before = metric("groundwire_redis_skipped_total", operation="get")
    timeouts_before = metric("groundwire_redis_failures_total", operation="get", kind="timeout")

    freeze(private_redis)
    for _ in range(THRESHOLD):
        failure = await attempt(link, calls)
        assert failure is not None and not failure.skipped
    assert link.breaker.state is BreakerState.OPEN and not link.available

    results = [await attempt(link, calls) for _ in range(50)]

    assert all(r is not None and r.skipped for r in results)
    assert calls.ran == 1 + THRESHOLD  # the 50 never reached Redis
    assert metric("groundwire_redis_skipped_total", operation="get") == skipped_before + 50
    assert (
        metric("groundwire_redis_failures_total", operation="get", kind="timeout")
        == timeouts_before + THRESHOLD
    )
    assert metric("groundwire_redis_breaker_state") == 1.0


async def test_a_background_probe_reopens_while_frozen_and_closes_after_recovery(
    link: RedisLink, private_redis: RedisServer, clock: Clock
) -> None:
    calls = Calls()
    await freeze_and_trip(link, private_redis, calls)
    assert link.breaker.state is BreakerState.OPEN
    probes_failed = metric("groundwire_redis_probes_total", result="failed")
    probes_ok = metric("groundwire_redis_probes_total", result="ok")

    # Half-open while still frozen: the caller is skipped, the probe fails in the background.
    clock.now += RESET_S
    failure = await attempt(link, calls)
    assert failure is not None and failure.skipped
    assert await attempt(link, calls) is not None  # one probe at a time: no second one
    await wait_for(lambda: link.breaker.state is BreakerState.OPEN)
    assert metric("groundwire_redis_probes_total", result="failed") == probes_failed + 1
    assert calls.ran == THRESHOLD  # neither caller touched Redis

    # Redis recovers; the next probe closes the breaker and operations reach Redis again.
    thaw(private_redis)
    clock.now += RESET_S
    failure = await attempt(link, calls)
    assert failure is not None and failure.skipped
    await wait_for(lambda: link.available)
    assert metric("groundwire_redis_probes_total", result="ok") == probes_ok + 1
    assert await attempt(link, calls) is None
    assert calls.ran == THRESHOLD + 1
    assert await link.ping() is True


async def test_fast_failures_are_reported_but_do_not_open_the_breaker() -> None:
    """A refused connection costs the caller nothing: skipping Redis would save nothing and
    would hide its return."""
    link = RedisLink.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_s=TIMEOUT_S)
    calls = Calls()
    try:
        for _ in range(THRESHOLD * 3):
            failure = await attempt(link, calls)
            assert failure is not None and not failure.skipped
        assert calls.ran == THRESHOLD * 3
        assert link.available
        assert await link.ping() is False
    finally:
        await link.close()


def raise_in_module(module: str, exc: Exception) -> None:
    """Raise ``exc`` from a frame whose module is ``module`` (where redis-py's races raise)."""
    code = compile("raise exc", f"<{module}>", "exec")
    exec(code, {"__name__": module, "exc": exc})


async def test_an_attribute_error_inside_redis_py_is_a_failure_but_ours_is_a_bug(
    redis_url: str,
) -> None:
    """redis-py's asyncio connections can raise a bare AttributeError or TypeError when another
    task closes the connection (redis/redis-py#3546, #4287; the cluster client does that on
    CLUSTERDOWN): that is Redis failing, a miss. The same error in our own code is not."""
    link = RedisLink.from_url(redis_url, timeout_s=1.0)

    async def race(client: RedisClient) -> None:
        await client.ping()
        raise_in_module("redis.asyncio.connection", AttributeError("'NoneType' ... 'writelines'"))

    async def bug(client: RedisClient) -> None:
        await client.ping()
        raise AttributeError("our own typo")

    try:
        with pytest.raises(RedisUnavailable) as failed:
            await link.run("race", race)
        assert isinstance(failed.value.__cause__, AttributeError)
        assert metric("groundwire_redis_failures_total", operation="race", kind="error") >= 1
        with pytest.raises(AttributeError, match="our own typo"):
            await link.run("bug", bug)
        assert metric("groundwire_redis_failures_total", operation="bug", kind="error") == 0
    finally:
        await link.close()


async def test_an_operation_is_bounded_by_the_timeout_in_total(
    link: RedisLink, private_redis: RedisServer
) -> None:
    calls = Calls()
    assert await attempt(link, calls) is None
    freeze(private_redis)
    loop = asyncio.get_running_loop()
    started = loop.time()
    failure = await attempt(link, calls)
    # redis-py's retry runs inside the same deadline; the bound is generous for a busy CI.
    assert failure is not None and isinstance(failure.__cause__, TimeoutError)
    assert loop.time() - started < 10 * TIMEOUT_S


async def test_close_cancels_a_probe_in_flight(
    link: RedisLink, private_redis: RedisServer, clock: Clock
) -> None:
    calls = Calls()
    await freeze_and_trip(link, private_redis, calls)
    clock.now += RESET_S
    await attempt(link, calls)  # starts the probe, which hangs on the frozen Redis
    await link.close()
    await link.close()  # idempotent
    assert link.breaker.state is BreakerState.HALF_OPEN  # the cancelled probe changed nothing


def test_the_namespace_is_the_prefix_and_a_short_hash_of_the_identity() -> None:
    first = key_namespace("gw", "edge:0123")
    assert first.startswith("gw:") and len(first) == len("gw:") + 16
    assert key_namespace("gw", "edge:0123") == first
    assert key_namespace("gw", "edge:0124") != first
    assert key_namespace("staging", "edge:0123") != first


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` (the breaker's state has no event to wait on) until it holds."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not true within {timeout_s} s")


def test_settings_name_the_breaker_and_prefix_variables() -> None:
    settings = load_settings(read_environment=False)
    assert (settings.redis_breaker_failures, settings.redis_breaker_reset_s) == (3, 2.0)
    assert settings.redis_key_prefix == "gw"
    # A brace would become the Redis Cluster hash tag of every key.
    with pytest.raises(SettingsError, match="GROUNDWIRE_REDIS_KEY_PREFIX"):
        load_settings(read_environment=False, redis_key_prefix="team{a}")
    with pytest.raises(SettingsError, match="GROUNDWIRE_REDIS_BREAKER_FAILURES"):
        load_settings(read_environment=False, redis_breaker_failures=0)
