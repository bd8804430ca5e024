"""Cache writes off the response path: the caller never waits for Redis to store an entry."""

from __future__ import annotations

import asyncio

from groundwire.clients.ports import Cache

MAX_PENDING_CACHE_WRITES = 256


class CacheWrites:
    """Stores entries in background tasks. While too many writes are in flight, new ones are
    dropped rather than queued: a cache entry is an optimisation, memory is not free."""

    def __init__(self, cache: Cache | None, max_pending: int = MAX_PENDING_CACHE_WRITES) -> None:
        self._cache = cache
        self._max_pending = max_pending
        self._pending: set[asyncio.Task[None]] = set()

    def submit(self, tenant: str, key: str, version: int, value: bytes, ttl_s: int) -> None:
        """Store ``value`` at ``key`` as computed at the tenant's index ``version``, later."""
        if self._cache is None or len(self._pending) >= self._max_pending:
            return
        task = asyncio.create_task(self._cache.set_versioned(tenant, key, version, value, ttl_s))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the writes in flight (at shutdown, and in tests)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
