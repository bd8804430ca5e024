"""RedisCache against a real redis-server: round trips, index versions, outages, recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from groundwire.clients.redis_cache import RedisCache
from tests.redis_server import RedisServer


def errors(operation: str) -> float:
    return (
        REGISTRY.get_sample_value("groundwire_cache_errors_total", {"operation": operation}) or 0.0
    )


def requests(result: str) -> float:
    return REGISTRY.get_sample_value("groundwire_cache_requests_total", {"result": result}) or 0.0


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[RedisCache]:
    cache = RedisCache.from_url(redis_url, namespace="t")
    yield cache
    await cache.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_roundtrip_with_ttl_under_namespace(cache: RedisCache, raw: aioredis.Redis) -> None:
    hits, misses = requests("hit"), requests("miss")

    assert await cache.get("retrieval:abc") is None
    await cache.set("retrieval:abc", b"\x00payload\xff", ttl_s=30)

    assert await cache.get("retrieval:abc") == b"\x00payload\xff"
    assert await raw.get("t:retrieval:abc") == b"\x00payload\xff"
    assert 0 < await raw.ttl("t:retrieval:abc") <= 30
    assert requests("hit") == hits + 1
    assert requests("miss") == misses + 1


async def test_zero_ttl_stores_nothing(cache: RedisCache, raw: aioredis.Redis) -> None:
    await cache.set("k", b"v", ttl_s=0)

    assert await raw.exists("t:k") == 0


async def test_index_version_starts_at_zero_and_bumps_per_tenant(
    cache: RedisCache, raw: aioredis.Redis
) -> None:
    assert await cache.index_version("acme") == 0

    await cache.bump_index_version("acme")
    await cache.bump_index_version("acme")
    await cache.bump_index_version("globex")

    assert await cache.index_version("acme") == 2
    assert await cache.index_version("globex") == 1
    assert await raw.get("t:idxver:{acme}") == b"2"


async def test_ping(cache: RedisCache) -> None:
    assert await cache.ping() is True


async def test_redis_outage_is_absorbed_and_recovers(
    cache: RedisCache, redis_server: RedisServer
) -> None:
    await cache.set("k", b"v", ttl_s=30)
    assert await cache.get("k") == b"v"  # the pool now holds a live connection
    before = {op: errors(op) for op in ("get", "set", "index_version", "bump_index_version")}
    error_requests = requests("error")

    redis_server.stop()
    try:
        assert await cache.get("k") is None
        await cache.set("k", b"v2", ttl_s=30)
        await cache.bump_index_version("acme")
        assert await cache.index_version("acme") is None
        assert await cache.ping() is False

        for operation, count in before.items():
            assert errors(operation) == count + 1, operation
        assert requests("error") == error_requests + 1
    finally:
        redis_server.start()

    # The pooled connections died with the server; the first call reconnects by itself.
    assert await cache.get("k") is None  # a fresh, empty server
    await cache.set("k", b"v3", ttl_s=30)
    assert await cache.get("k") == b"v3"
    assert await cache.index_version("acme") == 0


async def test_unresponsive_redis_is_bounded_by_timeouts() -> None:
    """A server that accepts connections and never answers must not hold a request."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # swallow everything until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisCache.from_url(f"redis://127.0.0.1:{port}/0")
    before = errors("get")
    try:
        started = time.monotonic()
        assert await cache.get("k") is None
        assert await cache.index_version("t") is None
        await cache.set("k", b"v", ttl_s=5)
        # Three operations, each bounded by the 0.5 s deadline; generous margin for CI.
        assert time.monotonic() - started < 5
        assert errors("get") == before + 1
    finally:
        await cache.close()
        server.close()
        await server.wait_closed()


async def test_unreachable_redis_logs_one_warning_per_burst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = RedisCache.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        with caplog.at_level("WARNING", logger="groundwire.clients.redis_link"):
            for _ in range(5):
                assert await cache.get("k") is None
        warnings = [r for r in caplog.records if r.name == "groundwire.clients.redis_link"]
        assert len(warnings) == 1
        assert warnings[0].operation == "get"  # type: ignore[attr-defined]
    finally:
        await cache.close()


async def test_versioned_entries_are_read_with_the_version_in_one_round_trip(
    redis_url: str,
) -> None:
    cache = RedisCache.from_url(redis_url)
    try:
        assert await cache.get_versioned("acme", "ret:{acme}:q") == (0, None)
        await cache.set_versioned("acme", "ret:{acme}:q", 0, b"answer:v0", ttl_s=30)
        assert await cache.get_versioned("acme", "ret:{acme}:q") == (0, b"answer:v0")
        # Another tenant's bump changes nothing here; this tenant's makes the entry stale.
        await cache.bump_index_version("globex")
        assert await cache.get_versioned("acme", "ret:{acme}:q") == (0, b"answer:v0")
        await cache.bump_index_version("acme")
        assert await cache.get_versioned("acme", "ret:{acme}:q") == (1, None)
        await cache.set_versioned("acme", "ret:{acme}:q", 1, b"answer:v1", ttl_s=30)
        assert await cache.get_versioned("acme", "ret:{acme}:q") == (1, b"answer:v1")
    finally:
        await cache.close()


async def test_versioned_reads_bypass_when_redis_is_down(redis_server: RedisServer) -> None:
    if redis_server.process is None:
        redis_server.start()
    cache = RedisCache.from_url(redis_server.url)
    try:
        redis_server.stop()
        assert await cache.get_versioned("acme", "ret:{acme}:q") is None
        await cache.set_versioned("acme", "ret:{acme}:q", 0, b"x", ttl_s=30)  # no raise
    finally:
        redis_server.start()
        await cache.close()
