"""Quota counters in Redis: fixed-window counters that every replica of a deployment shares.

One key per tenant, quota and window: ``<namespace>:quota:{<tenant>}:<quota>:<window start>``.
The tenant sits in a hash tag, so in a Redis Cluster all of a tenant's counters share one slot
(one ``MGET`` reads them); every script touches exactly one key, so none crosses slots. The
window start is part of the key, so a new window starts from nothing without a reset, and a
key lives only a little longer than its window (the expiry is set on the first write).

The counting is done by two small Lua scripts rather than a rate-limit library: ``limits``
opens its own connection from a URI, outside the shared :class:`RedisLink` (its pool, its
timeout, its breaker), and has no "charge what was used after the fact" operation, which the
token and spend quotas need (an answer's cost is known only once it has ended).

Every operation returns None when Redis was skipped or failed (:class:`RedisUnavailable`
stays inside the client layer): the caller then counts in-process for that call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from groundwire.clients.redis_link import RedisClient, RedisLink, RedisUnavailable

# Admit ``amount`` unless it would take the counter past the limit; set the expiry on the first
# write (and on any key found without one, so a counter never outlives its window for long).
# KEYS[1] counter; ARGV[1] amount, ARGV[2] limit, ARGV[3] expiry in ms. Returns {admitted, used}.
ADMIT_SCRIPT = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if used + amount > tonumber(ARGV[2]) then
  return {0, used}
end
used = redis.call('INCRBY', KEYS[1], amount)
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1, used}
"""

# Add ``amount`` whatever the limit (what an answer used is owed once it is used).
# KEYS[1] counter; ARGV[1] amount, ARGV[2] expiry in ms. Returns the new total.
CHARGE_SCRIPT = """
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return used
"""


@dataclass(frozen=True)
class Admission:
    """The answer of a check-and-increment: whether it was admitted and the count after it
    (or, when refused, the count that refused it)."""

    admitted: bool
    used: int


def expiry_ms(window_end: float, now: float, grace_s: float) -> int:
    """How long a counter key lives: to its window's end plus ``grace_s`` (so a replica whose
    clock runs a little behind still finds the window it is in), at least one millisecond."""
    return max(1, math.ceil((window_end - now + grace_s) * 1000))


class RedisQuotaCounters:
    """Fixed-window quota counters in Redis through the shared :class:`RedisLink`."""

    def __init__(self, link: RedisLink, namespace: str) -> None:
        """``namespace`` names the index the counters belong to (prefix plus store identity),
        so two deployments on one Redis never draw on each other's budgets."""
        self._link = link
        self._namespace = namespace
        self._admit = link.client.register_script(ADMIT_SCRIPT)
        self._charge = link.client.register_script(CHARGE_SCRIPT)

    @property
    def available(self) -> bool:
        """False while the link's breaker skips Redis (calls would return None at once)."""
        return self._link.available

    def key(self, tenant: str, quota: str, window_start: int) -> str:
        """The counter of ``tenant``'s ``quota`` in the window starting at ``window_start``
        (Unix seconds)."""
        return f"{self._namespace}:quota:{{{tenant}}}:{quota}:{window_start}"

    async def admit(self, key: str, amount: int, limit: int, ttl_ms: int) -> Admission | None:
        """Add ``amount`` to ``key`` if the total stays within ``limit``, atomically; None when
        Redis is unavailable."""

        async def call(client: RedisClient) -> Admission:
            admitted, used = await self._admit(
                keys=[key], args=[amount, limit, ttl_ms], client=client
            )
            return Admission(bool(int(admitted)), int(used))

        try:
            return await self._link.run("quota.admit", call)
        except RedisUnavailable:
            return None

    async def charge(self, key: str, amount: int, ttl_ms: int) -> int | None:
        """Add ``amount`` to ``key`` whatever the total; the new total, or None when Redis is
        unavailable."""

        async def call(client: RedisClient) -> int:
            return int(await self._charge(keys=[key], args=[amount, ttl_ms], client=client))

        try:
            return await self._link.run("quota.charge", call)
        except RedisUnavailable:
            return None

    async def read(self, keys: Sequence[str]) -> list[int] | None:
        """The counts at ``keys`` (0 where absent), in one ``MGET``: the keys must share a hash
        tag (one tenant's). None when Redis is unavailable."""

        async def call(client: RedisClient) -> list[int]:
            values = await client.mget(list(keys))
            return [0 if value is None else int(value) for value in values]

        try:
            return await self._link.run("quota.read", call)
        except (RedisUnavailable, ValueError):
            # ValueError: not a number, someone else wrote the key. Unavailable, not zero.
            return None
