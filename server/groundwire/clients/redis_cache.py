"""The ``Cache`` port on Redis: bytes by key, plus a version counter per tenant's index, all
under the namespace of the index they describe. The retrieval pipeline stores search hits in
it and the generation pipeline whole answers (``ret:`` and ``ans:`` keys); both are orphaned
when the tenant's index version is bumped.

A cache must never make a request fail or wait: every operation goes through the shared
:class:`~groundwire.clients.redis_link.RedisLink`, which bounds it by the configured timeout
and skips Redis at once while its breaker is open; a skipped or failed operation is a miss or
a no-op here, counted, never an error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from opentelemetry.trace import Span, StatusCode
from prometheus_client import Counter

from groundwire.clients.redis_link import RedisClient, RedisLink, RedisUnavailable, ThrottledWarning
from groundwire.clients.telemetry import client_span

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Module-level, so registered exactly once per process however many caches tests build.
CACHE_ERRORS = Counter(
    "groundwire_cache_errors",
    "Cache operations that went on without Redis (it failed, or its breaker skipped it).",
    ["operation"],
)
CACHE_REQUESTS = Counter(
    "groundwire_cache_requests",
    "Cache lookups by result: hit, miss, stale (stored for an older index version), or error "
    "(Redis failed or was skipped, counted as a bypass).",
    ["result"],
)

_SPAN_ATTRIBUTES = {"db.system": "redis"}


def _unframe(raw: bytes | str | None, version: int) -> bytes | None:
    """The payload of a ``<version>:<payload>`` entry if it was stored at ``version``."""
    if raw is None:
        return None
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    stored, sep, payload = data.partition(b":")
    if not sep or not stored.isdigit() or int(stored) != version:
        return None
    return payload


class _NotANumber(Exception):
    """An index version key holds something else (someone else wrote it)."""


class RedisCache:
    """``ports.Cache`` over a :class:`RedisLink`.

    Values live at ``{namespace}:{key}``; a tenant's index version at
    ``{namespace}:idxver:{<tenant>}`` (so cache keys must not start with ``idxver:``). The
    namespace names the index (see ``redis_link.key_namespace``): two deployments on one Redis
    never read each other's entries, replicas of one deployment share them. The tenant sits in
    a hash tag so that, in a Redis Cluster, a caller's keys tagged the same way
    (``ret:{<tenant>}:…``) share the version's slot and :meth:`get_versioned` can read both in
    one ``MGET``. The namespace must hold no braces, or it would become the hash tag.
    """

    def __init__(self, link: RedisLink, *, namespace: str = "gw", owns_link: bool = True) -> None:
        """Cache through ``link``; ``close()`` closes the link too when ``owns_link``."""
        if "{" in namespace or "}" in namespace:
            raise ValueError(f"the namespace may not hold braces: {namespace!r}")
        self._link = link
        self._namespace = namespace
        self._owns_link = owns_link
        self._warn = ThrottledWarning(10.0, "unreadable index version in redis; bypassing it")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "gw",
        cluster: bool = False,
        max_connections: int = 32,
        timeout_s: float = 0.25,
        failure_threshold: int = 3,
        reset_s: float = 2.0,
    ) -> RedisCache:
        """A cache on its own link to ``url`` (see :meth:`RedisLink.from_url`)."""
        link = RedisLink.from_url(
            url,
            cluster=cluster,
            max_connections=max_connections,
            timeout_s=timeout_s,
            failure_threshold=failure_threshold,
            reset_s=reset_s,
        )
        return cls(link, namespace=namespace)

    @property
    def link(self) -> RedisLink:
        """The Redis link the cache works through (shared with the quotas in the server)."""
        return self._link

    @property
    def namespace(self) -> str:
        """The prefix of every key the cache writes."""
        return self._namespace

    def _key(self, key: str) -> str:
        return f"{self._namespace}:{key}"

    def _version_key(self, tenant: str) -> str:
        return f"{self._namespace}:idxver:{{{tenant}}}"

    async def _run(
        self, operation: str, span: Span, call: Callable[[RedisClient], Awaitable[T]]
    ) -> T:
        """``call`` through the link; on RedisUnavailable count it, mark the span, re-raise."""
        try:
            return await self._link.run(operation, call)
        except RedisUnavailable as exc:
            CACHE_ERRORS.labels(operation=operation).inc()
            span.set_attribute("groundwire.redis_skipped", exc.skipped)
            span.set_status(StatusCode.ERROR, "skipped" if exc.skipped else str(exc))
            raise

    async def get(self, key: str) -> bytes | None:
        """The cached value, or None on a miss or when Redis failed or was skipped."""
        with client_span("cache.get", **_SPAN_ATTRIBUTES) as span:
            try:
                value = await self._run("get", span, lambda c: c.get(self._key(key)))
            except RedisUnavailable:
                CACHE_REQUESTS.labels(result="error").inc()
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
        stored for an older version; the whole answer is None when Redis failed or was
        skipped. ``key`` must carry the tenant's hash tag (``…{<tenant>}…``)."""
        with client_span("cache.get_versioned", **_SPAN_ATTRIBUTES) as span:
            try:
                raw_version, raw_value = await self._run(
                    "get_versioned",
                    span,
                    lambda c: c.mget(self._version_key(tenant), self._key(key)),
                )
                version = _version(raw_version)
            except (RedisUnavailable, _NotANumber) as exc:
                CACHE_REQUESTS.labels(result="error").inc()
                if isinstance(exc, _NotANumber):
                    self._unreadable("get_versioned", exc, span)
                return None
            value = _unframe(raw_value, version)
            result = "hit" if value is not None else "miss" if raw_value is None else "stale"
            CACHE_REQUESTS.labels(result=result).inc()
            span.set_attribute("groundwire.cache_result", result)
            return version, value

    async def set_versioned(
        self, tenant: str, key: str, version: int, value: bytes, ttl_s: int
    ) -> None:
        """Store ``value`` as computed at the tenant's index ``version``; failures are counted,
        never raised."""
        del tenant  # the key's hash tag already places it; kept for symmetry with the read
        await self.set(key, b"%d:" % version + value, ttl_s)

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        """Store ``value`` for ``ttl_s`` seconds (a TTL below 1 stores nothing); failures are
        counted, never raised."""
        if ttl_s < 1:
            return
        # A failure is counted by _run and otherwise ignored: a cache entry is optional.
        with (
            client_span("cache.set", **_SPAN_ATTRIBUTES) as span,
            contextlib.suppress(RedisUnavailable),
        ):
            await self._run("set", span, lambda c: c.set(self._key(key), value, ex=ttl_s))

    async def index_version(self, tenant: str) -> int | None:
        """The tenant's index version (0 if never bumped), or None when Redis failed."""
        with client_span("cache.index_version", **_SPAN_ATTRIBUTES) as span:
            try:
                raw = await self._run(
                    "index_version", span, lambda c: c.get(self._version_key(tenant))
                )
                return _version(raw)
            except RedisUnavailable:
                return None
            except _NotANumber as exc:
                self._unreadable("index_version", exc, span)
                return None

    async def bump_index_version(self, tenant: str) -> None:
        """Bump the tenant's index version (``INCR``), orphaning its cached retrievals.

        If Redis is down (or skipped) the bump is lost; entries cached before it may be served
        until their TTL expires, which bounds the staleness.
        """
        with (
            client_span("cache.bump_index_version", **_SPAN_ATTRIBUTES) as span,
            contextlib.suppress(RedisUnavailable),  # counted by _run
        ):
            await self._run("bump_index_version", span, lambda c: c.incr(self._version_key(tenant)))

    async def ping(self) -> bool:
        """Whether Redis answers right now (for health checks and start-up logging)."""
        with client_span("cache.ping", **_SPAN_ATTRIBUTES) as span:
            try:
                return bool(await self._run("ping", span, lambda c: c.ping()))
            except RedisUnavailable:
                return False

    async def close(self) -> None:
        """Close the link (and its pool) when the cache owns it."""
        if self._owns_link:
            await self._link.close()

    def _unreadable(self, operation: str, exc: _NotANumber, span: Span) -> None:
        # Bypass rather than guess; the link saw a healthy Redis, so its breaker is untouched.
        CACHE_ERRORS.labels(operation=operation).inc()
        span.set_status(StatusCode.ERROR, "unreadable index version")
        self._warn(operation, exc)


def _version(raw: bytes | str | None) -> int:
    """An index version as stored by ``INCR`` (absent: 0)."""
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError as exc:
        raise _NotANumber(repr(raw)) from exc
