"""The one Redis connection of the process, shared by the cache and the quotas, behind a
circuit breaker.

Redis is an optimisation here (a cache, shared quota counters): when it fails, callers go on
without it. What they must not do is wait for it. A Redis that refuses connections costs
nothing, but a frozen or overloaded one makes every operation wait for its timeout, and
without a breaker every call of the service pays that wait for as long as Redis hangs. So:

- every operation is bounded by ``timeout_s`` in total (connecting, redis-py's own retry and
  waiting for a pooled connection included);
- ``failure_threshold`` consecutive timeouts open the breaker: operations are then skipped at
  once, without touching Redis, for ``reset_s``;
- after that, the first operation that finds the breaker half-open starts one background
  probe and is itself skipped (a PING; for a Redis Cluster, ``CLUSTER INFO`` saying
  ``cluster_state:ok``); the probe's success closes the breaker, its failure opens it for
  another period. No caller's request ever pays for a probe.

Only timeouts (and a cluster's CLUSTERDOWN, which redis-py makes as slow: see
``_SLOW_FAILURES``) count towards opening the breaker. A fast failure (connection refused, a reset,
an error reply) costs the caller nothing, so skipping Redis would save nothing and would only
hide a Redis that is back (after a restart the next operation reconnects by itself). Every
failure is still counted, logged (throttled) and reported to the caller as
:class:`RedisUnavailable`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import Counter, Gauge
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from groundwire.clients import gauges
from groundwire.clients.breaker import BreakerState, CircuitBreaker

logger = logging.getLogger(__name__)

RedisClient: TypeAlias = "aioredis.Redis | aioredis.RedisCluster"
T = TypeVar("T")

# Errors that mean "Redis is not usable right now". redis-py raises its own ConnectionError
# and TimeoutError (RedisError subclasses); the socket layer and our deadline add the others.
REDIS_FAILURES = (redis.exceptions.RedisError, OSError, TimeoutError)
# redis-py's asyncio connections have races in which a connection that another task closes
# (the cluster client closes every connection on CLUSTERDOWN; a peer reset does it too)
# raises a bare AttributeError or TypeError from inside redis-py instead of its
# ConnectionError (redis/redis-py#3546, #4287; seen here with a cluster node killed under
# load, as INTERNAL errors of calls). Raised inside redis-py they are Redis failures; raised
# in our own code they stay bugs. RuntimeError: on uvloop, a write to a transport redis-py's
# other task has just closed raises it (asyncio's own loop only logs it).
_CLIENT_RACES = (AttributeError, TypeError, RuntimeError)
# The failures that cost the caller the whole timeout: these open the breaker. A Redis
# Cluster that has lost a slot's only master answers CLUSTERDOWN once the node is marked
# failing (or leaves the slot uncovered), and redis-py's cluster client closes its
# connections and sleeps 0.25 s before it raises either, once per attempt: each such
# operation costs the caller that long, whatever the timeout, and the cluster stays down until
# the node returns. Counted as errors, they would cost every call that wait for the whole
# outage (measured: 0.5-0.9 s a call with a 1 s timeout, the breaker never opening).
_SLOW_FAILURES = (
    redis.exceptions.TimeoutError,
    TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.SlotNotCoveredError,
)

# Module-level, so registered exactly once per process however many links tests build.
# Each worker process has its own breaker: with several, every live worker's state is shown
# (labelled by pid; "liveall"), since the states are codes, not amounts to add up or compare.
REDIS_BREAKER_STATE = Gauge(
    "groundwire_redis_breaker_state",
    "The Redis circuit breaker: 0 closed, 1 open (Redis is skipped), 2 half-open.",
    multiprocess_mode="liveall",
)
REDIS_FAILURES_TOTAL = Counter(
    "groundwire_redis_failures",
    "Redis operations that failed, by operation and kind (timeout opens the breaker; error "
    "is a fast failure such as a refused connection).",
    ["operation", "kind"],
)
REDIS_SKIPPED = Counter(
    "groundwire_redis_skipped",
    "Redis operations not attempted because the breaker was open.",
    ["operation"],
)
REDIS_PROBES = Counter(
    "groundwire_redis_probes",
    "Background PINGs sent while the breaker was half-open, by result (ok closes it).",
    ["result"],
)
_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}


class RedisUnavailable(Exception):
    """Redis was skipped (breaker open) or failed; internal to the client layer."""

    def __init__(self, message: str, *, skipped: bool = False) -> None:
        super().__init__(message)
        self.skipped = skipped


class ThrottledWarning:
    """Log the first failure of a burst, then at most one line per ``interval_s`` with the
    number of failures in between, so a Redis outage does not flood the logs."""

    def __init__(
        self, interval_s: float, message: str = "redis unavailable, going on without it"
    ) -> None:
        self._interval_s = interval_s
        self._message = message
        self._last_logged = -float("inf")
        self._suppressed = 0

    def __call__(self, operation: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_logged < self._interval_s:
            self._suppressed += 1
            return
        logger.warning(
            self._message,
            extra={
                "operation": operation,
                "error_type": type(exc).__name__,
                "error": str(exc),
                "suppressed_since_last_log": self._suppressed,
            },
        )
        self._last_logged = now
        self._suppressed = 0


def is_redis_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a call into redis-py, means Redis is not usable right now."""
    if isinstance(exc, REDIS_FAILURES):
        return True
    if not isinstance(exc, _CLIENT_RACES):
        return False
    frame = exc.__traceback__
    while frame is not None:
        module = str(frame.tb_frame.f_globals.get("__name__", ""))
        if module.partition(".")[0] == "redis":
            return True
        frame = frame.tb_next
    return False


def key_namespace(prefix: str, identity: str) -> str:
    """The prefix of every Redis key and counter that describes the index ``identity`` names:
    ``<prefix>:<16 hex digits of its SHA-256>`` (short, so keys stay small; 64 bits make a
    collision between two indexes on one Redis practically impossible)."""
    return f"{prefix}:{hashlib.sha256(identity.encode('utf-8')).hexdigest()[:16]}"


def redacted(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


class RedisLink:
    """A Redis (or Redis Cluster) client with a total per-operation timeout and a breaker.

    Use :meth:`run` for every operation; the link owns the client and closes it.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        timeout_s: float = 0.25,
        failure_threshold: int = 3,
        reset_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        log_interval_s: float = 10.0,
    ) -> None:
        """Use a ready client (``decode_responses`` off); ``clock`` drives the breaker."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._client = client
        self._timeout_s = timeout_s
        self._breaker = CircuitBreaker(
            "redis", failure_threshold=failure_threshold, reset_timeout_s=reset_s, clock=clock
        )
        self._warn = ThrottledWarning(log_interval_s)
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._probes: set[asyncio.Task[None]] = set()
        self._closed = False
        # One link per process in production; in tests the last one built is exported.
        gauges.read_from(REDIS_BREAKER_STATE, lambda: float(_STATE_VALUE[self._breaker.state]))

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        max_connections: int = 64,
        timeout_s: float = 0.25,
        failure_threshold: int = 3,
        reset_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> RedisLink:
        """A link to ``url`` (``redis://``, ``rediss://``, ``unix://``), connecting lazily.

        Single node: a ``BlockingConnectionPool`` of ``max_connections``. Waiting for a free
        connection has no bound of its own: the operation's deadline is the bound. One
        immediate retry (no backoff) lets a pooled connection that died with a Redis restart
        reconnect without a failed call; it runs inside the same deadline.

        ``cluster=True`` uses ``RedisCluster`` (``max_connections`` per node; ``url`` is any
        one node, the client learns the others and the slot map from it). Its per-node pool
        does not wait for a free connection: past ``max_connections`` an operation fails at
        once (a miss). Tested against a real 3-master cluster with a node killed under load
        (``tests/rpc/test_redis_cluster.py``): calls go on, keys of a node that is down are
        misses, and once the cluster is whole again the client re-reads the slot map by itself.
        """
        retry = Retry(NoBackoff(), 1)
        client: RedisClient
        if cluster:
            client = aioredis.RedisCluster.from_url(
                url,
                max_connections=max_connections,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=retry,
            )
        else:
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=None,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=retry,
            )
            client = aioredis.Redis.from_pool(pool)
        return cls(
            client,
            timeout_s=timeout_s,
            failure_threshold=failure_threshold,
            reset_s=reset_s,
            clock=clock,
        )

    @property
    def client(self) -> RedisClient:
        """The redis-py client (bytes replies); call it only inside :meth:`run`."""
        return self._client

    @property
    def available(self) -> bool:
        """False while the breaker is open (operations are skipped at once)."""
        return self._breaker.state is BreakerState.CLOSED

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker guarding Redis (for metrics and tests)."""
        return self._breaker

    @property
    def timeout_s(self) -> float:
        """The bound on each operation, in seconds."""
        return self._timeout_s

    async def run(self, operation: str, call: Callable[[RedisClient], Awaitable[T]]) -> T:
        """``call(client)``, bounded by the timeout in total.

        Raises RedisUnavailable at once, without touching Redis, while the breaker is open
        (or half-open: the probe runs in the background), and when the call fails or times
        out. ``operation`` names the call in metrics and logs.
        """
        if not self._admit():
            REDIS_SKIPPED.labels(operation=operation).inc()
            raise RedisUnavailable(f"redis skipped ({operation}): breaker open", skipped=True)
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await call(self._client)
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            self._failed(operation, exc)
            raise RedisUnavailable(f"redis {operation} failed: {type(exc).__name__}") from exc
        self._breaker.record_success()
        return result

    async def ping(self) -> bool:
        """Whether Redis answers right now (False at once while the breaker is open)."""
        try:
            return bool(await self.run("ping", lambda client: client.ping()))
        except RedisUnavailable:
            return False

    async def close(self) -> None:
        """Stop a probe in flight and close the client and its pool (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for probe in list(self._probes):
            probe.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        try:
            await self._client.aclose()
        except REDIS_FAILURES as exc:
            logger.debug("closing redis failed", extra={"error": str(exc)})

    # -- internals -------------------------------------------------------------------------

    def _admit(self) -> bool:
        """Whether an operation may touch Redis now; starts the probe when it is due."""
        state = self._breaker.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._closed and self._breaker.try_acquire():
            probe = asyncio.create_task(self._run_probe())
            self._probes.add(probe)
            probe.add_done_callback(self._probes.discard)
        return False

    async def _run_probe(self) -> None:
        """One probe on the caller's behalf: closes the breaker or opens it again."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._probe()
        except Exception as exc:  # whatever it is, the probe failed; never leave it acquired
            REDIS_PROBES.labels(result="failed").inc()
            self._breaker.record_failure()
            self._warn("probe", exc)
        except BaseException:
            self._breaker.release()  # cancelled (at close): leave the state as it was
            raise
        else:
            REDIS_PROBES.labels(result="ok").inc()
            self._breaker.record_success()
            logger.info("redis answers again; the breaker is closed")

    async def _probe(self) -> None:
        """Raise unless Redis would serve callers now. A cluster node answers PING while the
        cluster refuses every key (``cluster_state:fail`` once a master is marked failing), so
        a PING would close the breaker only for the next callers to pay for CLUSTERDOWN again,
        one reset period after another: a cluster is asked ``CLUSTER INFO`` instead."""
        if isinstance(self._client, aioredis.RedisCluster):
            info = await self._client.cluster_info()
            if info.get("cluster_state") != "ok":
                raise redis.exceptions.ClusterDownError("probe: cluster_state is not ok")
        else:
            await self._client.ping()

    def _failed(self, operation: str, exc: BaseException) -> None:
        slow = isinstance(exc, _SLOW_FAILURES)
        REDIS_FAILURES_TOTAL.labels(operation=operation, kind="timeout" if slow else "error").inc()
        self._warn(operation, exc)
        if not slow:
            return
        was_closed = self._breaker.state is BreakerState.CLOSED
        self._breaker.record_failure()
        if was_closed and self._breaker.state is BreakerState.OPEN:
            logger.warning(
                "redis keeps timing out (or its cluster is down): skipping it without waiting,"
                " probing it again later",
                extra={
                    "consecutive_timeouts": self._breaker.consecutive_failures,
                    "timeout_s": self._timeout_s,
                },
            )
