"""The quota counters (Lua scripts against a real redis-server) and the quota policy over them:
atomic admission under concurrent callers, expiry, window roll-over on an injected clock, the
in-process fallback when Redis is down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from groundwire.clients.errors import QuotaExceededError
from groundwire.clients.quota_store import RedisQuotaCounters
from groundwire.clients.redis_link import RedisLink
from groundwire.server.quotas import QuotaLimits, QuotaName, Quotas
from tests.redis_server import free_port

MINUTE = 60.0
DAY = 86_400.0


class Clock:
    """Wall-clock time, moved by hand: 30 s into a minute, 12 h into a UTC day."""

    def __init__(self) -> None:
        self.now = 1_700_006_400.0 + 12 * 3600 + 30  # 2023-11-15 12:00:30 UTC

    def __call__(self) -> float:
        return self.now


def fallbacks(operation: str) -> float:
    sample = REGISTRY.get_sample_value("groundwire_quota_fallbacks_total", {"operation": operation})
    return sample or 0.0


def refusals(quota: str) -> float:
    return REGISTRY.get_sample_value("groundwire_quota_refusals_total", {"quota": quota}) or 0.0


@pytest.fixture
async def link(redis_url: str) -> AsyncIterator[RedisLink]:
    link = RedisLink.from_url(redis_url, timeout_s=2.0)
    yield link
    await link.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_concurrent_admissions_never_pass_the_limit(redis_url: str) -> None:
    """Four links (four connection pools, as four replicas would have) race 80 admissions
    for a limit of 25: exactly 25 are admitted."""
    links = [RedisLink.from_url(redis_url, timeout_s=5.0) for _ in range(4)]
    try:
        stores = [RedisQuotaCounters(link, "ns") for link in links]
        key = stores[0].key("tenant-a", "requests_per_minute", 1_700_000_040)
        results = await asyncio.gather(
            *(stores[i % 4].admit(key, 1, 25, 60_000) for i in range(80))
        )
        assert all(r is not None for r in results)
        admitted = [r for r in results if r is not None and r.admitted]
        assert len(admitted) == 25
        assert sorted(r.used for r in admitted) == list(range(1, 26))
        assert await stores[1].read([key]) == [25]
    finally:
        for link in links:
            await link.close()


async def test_keys_are_namespaced_and_hash_tagged_by_tenant(link: RedisLink) -> None:
    store = RedisQuotaCounters(link, "gw:abc123")
    assert store.key("tenant-a", "spend_micros_per_day", 1_700_006_400) == (
        "gw:abc123:quota:{tenant-a}:spend_micros_per_day:1700006400"
    )


async def test_the_first_write_sets_the_expiry_and_later_writes_keep_it(
    link: RedisLink, raw: aioredis.Redis
) -> None:
    store = RedisQuotaCounters(link, "ns")
    key = store.key("tenant-a", "llm_tokens_per_minute", 0)
    assert await store.charge(key, 40, 5_000) == 40
    first = await raw.pttl(key)
    assert 0 < first <= 5_000
    assert await store.charge(key, 2, 50_000) == 42  # a later write does not extend the life
    assert await raw.pttl(key) <= first
    # A key found without an expiry (written by hand) gets one: no counter lives forever.
    await raw.set("ns:quota:{t}:x:0", 7)
    assert await store.charge("ns:quota:{t}:x:0", 1, 3_000) == 8
    assert 0 < await raw.pttl("ns:quota:{t}:x:0") <= 3_000


async def test_a_refused_admission_does_not_count(link: RedisLink, raw: aioredis.Redis) -> None:
    store = RedisQuotaCounters(link, "ns")
    key = store.key("tenant-a", "requests_per_minute", 0)
    first = await store.admit(key, 2, 3, 60_000)
    second = await store.admit(key, 2, 3, 60_000)
    assert first is not None and first.admitted and first.used == 2
    assert second is not None and not second.admitted and second.used == 2
    assert await raw.get(key) == b"2"
    assert await store.read([key, store.key("tenant-a", "other", 0)]) == [2, 0]


async def test_the_counter_expires_with_its_window(link: RedisLink, raw: aioredis.Redis) -> None:
    store = RedisQuotaCounters(link, "ns")
    key = store.key("tenant-a", "requests_per_minute", 0)
    await store.admit(key, 1, 5, 50)
    for _ in range(200):
        if not await raw.exists(key):
            break
        await asyncio.sleep(0.01)
    assert not await raw.exists(key)
    assert await store.read([key]) == [0]


async def test_an_unreachable_redis_answers_none() -> None:
    link = RedisLink.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_s=1.0)
    try:
        store = RedisQuotaCounters(link, "ns")
        key = store.key("t", "q", 0)
        assert await store.admit(key, 1, 5, 1000) is None
        assert await store.charge(key, 1, 1000) is None
        assert await store.read([key]) is None
    finally:
        await link.close()


async def test_the_request_quota_refuses_with_the_time_to_the_window_end(
    link: RedisLink, raw: aioredis.Redis
) -> None:
    clock = Clock()
    quotas = Quotas(
        QuotaLimits(requests_per_minute=3),
        counters=RedisQuotaCounters(link, "ns"),
        clock=clock,
    )
    before = refusals("requests_per_minute")
    for _ in range(3):
        await quotas.admit_request("tenant-a")
    with pytest.raises(QuotaExceededError) as refused:
        await quotas.admit_request("tenant-a")
    assert refused.value.quota == "requests_per_minute"
    assert refused.value.retry_after_s == pytest.approx(30.0)
    assert "used 3 of 3" in refused.value.description
    assert refusals("requests_per_minute") == before + 1
    await quotas.admit_request("tenant-b")  # another tenant has its own budget
    window_start = int(clock.now // 60 * 60)
    assert await raw.get(f"ns:quota:{{tenant-a}}:requests_per_minute:{window_start}") == b"3"
    # The minute rolls over: a new window, a new key, the full budget again.
    clock.now += 30
    await quotas.admit_request("tenant-a")
    status = {s.name: s for s in await quotas.status("tenant-a")}
    request_status = status[QuotaName.REQUESTS_PER_MINUTE]
    assert (request_status.limit, request_status.remaining) == (3, 2)
    assert request_status.resets_in_s == pytest.approx(60.0) and request_status.shared


async def test_token_and_spend_windows_refuse_once_spent_and_name_the_last_to_refill(
    link: RedisLink,
) -> None:
    clock = Clock()
    quotas = Quotas(
        QuotaLimits(llm_tokens_per_minute=100, spend_micros_per_day=1_000),
        counters=RedisQuotaCounters(link, "ns"),
        currency="EUR",
        clock=clock,
    )
    await quotas.check_generation("tenant-a")
    quotas.charge_generation("tenant-a", tokens=99, cost_micros=400)
    await quotas.drain()
    await quotas.check_generation("tenant-a")  # 99 < 100: one more answer may start
    quotas.charge_generation("tenant-a", tokens=50, cost_micros=700)  # overshoots both
    await quotas.drain()
    with pytest.raises(QuotaExceededError) as refused:
        await quotas.check_generation("tenant-a")
    assert refused.value.quota == "spend_micros_per_day"  # refills at midnight, not in 30 s
    assert refused.value.retry_after_s == pytest.approx(12 * 3600 - 30)
    status = {s.name: s for s in await quotas.status("tenant-a")}
    assert status[QuotaName.LLM_TOKENS_PER_MINUTE].remaining == 0
    spend = status[QuotaName.SPEND_MICROS_PER_DAY]
    assert (spend.limit, spend.remaining, spend.currency, spend.window_s) == (
        1_000,
        0,
        "EUR",
        86_400,
    )
    clock.now += 30  # a new minute: tokens refill, spend does not
    with pytest.raises(QuotaExceededError) as refused:
        await quotas.check_generation("tenant-a")
    assert refused.value.quota == "spend_micros_per_day"
    clock.now += DAY
    await quotas.check_generation("tenant-a")


async def test_overrides_and_unlimited_quotas(link: RedisLink, raw: aioredis.Redis) -> None:
    quotas = Quotas(
        QuotaLimits(requests_per_minute=1),
        {"vip": QuotaLimits(requests_per_minute=None, spend_micros_per_day=5)},
        counters=RedisQuotaCounters(link, "ns"),
    )
    for _ in range(5):
        await quotas.admit_request("vip")
    assert [s.name for s in await quotas.status("vip")] == [QuotaName.SPEND_MICROS_PER_DAY]
    quotas.charge_generation("vip", tokens=10, cost_micros=0)  # no token quota: not counted
    await quotas.drain()
    assert await raw.keys("ns:quota:{vip}:*") == []
    await quotas.admit_request("other")
    with pytest.raises(QuotaExceededError):
        await quotas.admit_request("other")


async def test_redis_down_counts_in_process_and_never_fails() -> None:
    link = RedisLink.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_s=1.0)
    try:
        quotas = Quotas(
            QuotaLimits(requests_per_minute=2, spend_micros_per_day=10),
            counters=RedisQuotaCounters(link, "ns"),
            clock=Clock(),
        )
        admits, charges = fallbacks("admit"), fallbacks("charge")
        await quotas.admit_request("tenant-a")
        await quotas.admit_request("tenant-a")
        with pytest.raises(QuotaExceededError):
            await quotas.admit_request("tenant-a")  # the in-process count still holds the line
        quotas.charge_generation("tenant-a", tokens=5, cost_micros=10)
        await quotas.drain()
        with pytest.raises(QuotaExceededError):
            await quotas.check_generation("tenant-a")
        assert fallbacks("admit") == admits + 3
        assert fallbacks("charge") == charges + 1
        status = await quotas.status("tenant-a")
        assert [(s.remaining, s.shared) for s in status] == [(0, False), (0, False)]
    finally:
        await link.close()


async def test_without_redis_the_counters_are_in_process() -> None:
    quotas = Quotas(QuotaLimits(llm_tokens_per_minute=10), clock=Clock())
    quotas.charge_generation("tenant-a", tokens=10, cost_micros=3)  # counted at once
    with pytest.raises(QuotaExceededError):
        await quotas.check_generation("tenant-a")
    [status] = await quotas.status("tenant-a")
    assert (status.remaining, status.shared, status.currency) == (0, False, "")
