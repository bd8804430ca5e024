"""The retrieval cache in Redis: bytes by key, plus a version counter per tenant's index.

A cache must never make a request fail or wait: every Redis error (refused, timed out, pool
exhausted, cluster down) is logged, counted and turned into a miss or a no-op, and every
operation is bounded by short socket and pool timeouts plus an overall deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TypeAlias

import redis.asyncio as aioredis
from opentelemetry.trace import Span, StatusCode
from prometheus_client import Counter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from groundwire.clients.telemetry import client_span

logger = logging.getLogger(__name__)

RedisClient: TypeAlias = "aioredis.Redis | aioredis.RedisCluster"

# Module-level, so registered exactly once per process however many caches tests build.
CACHE_ERRORS = Counter(
    "groundwire_cache_errors",
    "Redis failures the cache absorbed (the request went on without the cache).",
    ["operation"],
)
CACHE_REQUESTS = Counter(
    "groundwire_cache_requests",
    "Cache lookups by result: hit, miss, stale (stored for an older index version), or error "
    "(Redis failed, counted as a bypass).",
    ["result"],
)

# Errors that mean "Redis is not usable right now". redis-py raises its own ConnectionError
# and TimeoutError (RedisError subclasses); the socket layer and our deadline add the others.
_REDIS_FAILURES = (RedisError, OSError, TimeoutError)

_SPAN_ATTRIBUTES = {"db.system": "redis"}


class _ThrottledWarning:
    """Log the first failure of a burst, then at most one line per ``interval_s`` with the
    number of failures in between, so a Redis outage does not flood the logs."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last_logged = -float("inf")
        self._suppressed = 0

    def __call__(self, operation: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_logged < self._interval_s:
            self._suppressed += 1
            return
        logger.warning(
            "redis cache unavailable, bypassing it",
            extra={
                "operation": operation,
                "error_type": type(exc).__name__,
                "error": str(exc),
                "suppressed_since_last_log": self._suppressed,
            },
        )
        self._last_logged = now
        self._suppressed = 0


def _unframe(raw: bytes | str | None, version: int) -> bytes | None:
    """The payload of a ``<version>:<payload>`` entry if it was stored at ``version``."""
    if raw is None:
        return None
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    stored, sep, payload = data.partition(b":")
    if not sep or not stored.isdigit() or int(stored) != version:
        return None
    return payload


class RedisCache:
    """``ports.Cache`` over Redis (or Redis Cluster).

    Values live at ``{namespace}:{key}``; a tenant's index version at
    ``{namespace}:idxver:{<tenant>}`` (so cache keys must not start with ``idxver:``). The
    tenant sits in a hash tag so that, in a Redis Cluster, a caller's keys tagged the same way
    (``ret:{<tenant>}:…``) share the version's slot and :meth:`get_versioned` can read both in
    one ``MGET``.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        namespace: str = "gw",
        operation_timeout_s: float = 0.5,
        log_interval_s: float = 10.0,
    ) -> None:
        """Use a ready client (``decode_responses`` off); the cache owns it from now on and
        closes it in ``close()``.

        ``operation_timeout_s`` bounds each call, including redis-py's reconnect attempt.
        """
        self._client = client
        self._namespace = namespace
        self._timeout_s = operation_timeout_s
        self._warn = _ThrottledWarning(log_interval_s)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "gw",
        max_connections: int = 32,
        socket_timeout_s: float = 0.25,
        pool_timeout_s: float = 0.25,
        operation_timeout_s: float = 0.5,
        cluster: bool = False,
    ) -> RedisCache:
        """A cache on ``url`` (``redis://``, ``rediss://``, ``unix://``), connecting lazily.

        Single node: a ``BlockingConnectionPool`` of ``max_connections``; a caller waits at
        most ``pool_timeout_s`` for a free connection. One immediate retry (no backoff) lets a
        pooled connection that died with a Redis restart reconnect without a failed call.

        ``cluster=True`` uses ``RedisCluster`` (``max_connections`` per node, no shared pool
        timeout). Kept minimal and not covered by the tests: no Redis Cluster runs here. Cache
        operations are single-key, so they never cross hash slots.
        """
        retry = Retry(NoBackoff(), 1)
        client: RedisClient
        if cluster:
            client = aioredis.RedisCluster.from_url(
                url,
                max_connections=max_connections,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=socket_timeout_s,
                retry=retry,
            )
        else:
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=pool_timeout_s,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=socket_timeout_s,
                retry=retry,
            )
            client = aioredis.Redis.from_pool(pool)
        return cls(client, namespace=namespace, operation_timeout_s=operation_timeout_s)

    def _key(self, key: str) -> str:
        return f"{self._namespace}:{key}"

    def _version_key(self, tenant: str) -> str:
        return f"{self._namespace}:idxver:{{{tenant}}}"

    def _failed(self, operation: str, exc: BaseException, span: Span) -> None:
        CACHE_ERRORS.labels(operation=operation).inc()
        span.set_status(StatusCode.ERROR, type(exc).__name__)
        self._warn(operation, exc)

    async def get(self, key: str) -> bytes | None:
        """The cached value, or None on a miss or any Redis failure."""
        with client_span("cache.get", **_SPAN_ATTRIBUTES) as span:
            try:
                async with asyncio.timeout(self._timeout_s):
                    value = await self._client.get(self._key(key))
            except _REDIS_FAILURES as exc:
                CACHE_REQUESTS.labels(result="error").inc()
                self._failed("get", exc, span)
                return None
            hit = value is not None
            CACHE_REQUESTS.labels(result="hit" if hit else "miss").inc()
            span.set_attribute("groundwire.cache_hit", hit)
            if value is None:
                return None
            # A client built with decode_responses=True hands back str; keep the bytes contract.
            return value.encode() if isinstance(value, str) else bytes(value)

    async def get_versioned(self, tenant: str, key: str) -> tuple[int, bytes | None] | None:
        """The tenant's current index version and the value stored at ``key`` for exactly that
        version, read in one round trip (``MGET``). The value is None on a miss or when it was
        stored for an older version; the whole answer is None when Redis failed. ``key`` must
        carry the tenant's hash tag (``…{<tenant>}…``)."""
        with client_span("cache.get_versioned", **_SPAN_ATTRIBUTES) as span:
            try:
                async with asyncio.timeout(self._timeout_s):
                    raw_version, raw_value = await self._client.mget(
                        self._version_key(tenant), self._key(key)
                    )
                version = 0 if raw_version is None else int(raw_version)
            except (*_REDIS_FAILURES, ValueError) as exc:
                # ValueError: the version is not a number (someone else wrote the key).
                CACHE_REQUESTS.labels(result="error").inc()
                self._failed("get_versioned", exc, span)
                return None
            value = _unframe(raw_value, version)
            result = "hit" if value is not None else "miss" if raw_value is None else "stale"
            CACHE_REQUESTS.labels(result=result).inc()
            span.set_attribute("groundwire.cache_result", result)
            return version, value

    async def set_versioned(
        self, tenant: str, key: str, version: int, value: bytes, ttl_s: int
    ) -> None:
        """Store ``value`` as computed at the tenant's index ``version``; failures are logged
        and counted, never raised."""
        del tenant  # the key's hash tag already places it; kept for symmetry with the read
        await self.set(key, b"%d:" % version + value, ttl_s)

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        """Store ``value`` for ``ttl_s`` seconds (a TTL below 1 stores nothing); failures are
        logged and counted, never raised."""
        if ttl_s < 1:
            return
        with client_span("cache.set", **_SPAN_ATTRIBUTES) as span:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._client.set(self._key(key), value, ex=ttl_s)
            except _REDIS_FAILURES as exc:
                self._failed("set", exc, span)

    async def index_version(self, tenant: str) -> int | None:
        """The tenant's index version (0 if never bumped), or None when Redis failed."""
        with client_span("cache.index_version", **_SPAN_ATTRIBUTES) as span:
            try:
                async with asyncio.timeout(self._timeout_s):
                    value = await self._client.get(self._version_key(tenant))
                return 0 if value is None else int(value)
            except _REDIS_FAILURES as exc:
                self._failed("index_version", exc, span)
                return None
            except ValueError as exc:
                # Not a number: someone else wrote the key. Bypass rather than guess.
                self._failed("index_version", exc, span)
                return None

    async def bump_index_version(self, tenant: str) -> None:
        """Bump the tenant's index version (``INCR``), orphaning its cached retrievals.

        If Redis is down the bump is lost; entries cached before it may be served until their
        TTL expires, which bounds the staleness.
        """
        with client_span("cache.bump_index_version", **_SPAN_ATTRIBUTES) as span:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._client.incr(self._version_key(tenant))
            except _REDIS_FAILURES as exc:
                self._failed("bump_index_version", exc, span)

    async def ping(self) -> bool:
        """Whether Redis answers right now (for health checks and start-up logging)."""
        with client_span("cache.ping", **_SPAN_ATTRIBUTES) as span:
            try:
                async with asyncio.timeout(self._timeout_s):
                    return bool(await self._client.ping())
            except _REDIS_FAILURES as exc:
                self._failed("ping", exc, span)
                return False

    async def close(self) -> None:
        """Close the client and its connection pool."""
        try:
            await self._client.aclose()
        except _REDIS_FAILURES as exc:
            logger.debug("closing redis failed", extra={"error": str(exc)})
