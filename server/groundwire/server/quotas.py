"""Per-tenant quotas: requests per minute, LLM tokens per minute and spend per UTC day.

Fixed windows aligned to the wall clock (the minute, the UTC day), so every replica agrees on
which window a call falls in without talking to the others, and a refusal can say exactly when
the budget refills (``RetryInfo`` = time to the window's end).

- ``requests_per_minute`` is checked and counted atomically before a call runs (the
  interceptor calls :meth:`Quotas.admit_request`).
- ``llm_tokens_per_minute`` (prompt + completion) and ``spend_micros_per_day`` (micros of the
  catalog's currency) cannot be checked against an answer's cost in advance: Generate is
  refused up front only when a window is already spent (:meth:`Quotas.check_generation`), and
  what an answer used is charged once it has ended, however it ended
  (:meth:`Quotas.charge_generation`). One answer can therefore overshoot a budget; the next
  call is refused.

With Redis configured the counters live there and every replica of the deployment draws on one
budget. Without Redis they are counted in-process: each replica has its own budget (N replicas
allow N times the limit). When Redis is configured but unavailable, the call is counted
in-process instead (logged, throttled, and counted in ``groundwire_quota_fallbacks_total``);
a quota never fails a call because Redis is down. Counts made in-process during an outage are
not copied to Redis afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum

from prometheus_client import Counter

from groundwire.clients.errors import QuotaExceededError
from groundwire.clients.quota_store import Admission, RedisQuotaCounters, expiry_ms
from groundwire.clients.redis_link import RedisLink
from groundwire.server.settings import Settings

log = logging.getLogger(__name__)

QUOTA_REFUSALS = Counter(
    "groundwire_quota_refusals_total", "Calls refused because a tenant quota was spent.", ["quota"]
)
QUOTA_FALLBACKS = Counter(
    "groundwire_quota_fallbacks_total",
    "Quota operations counted in-process because Redis was unavailable (per replica).",
    ["operation"],
)

MINUTE_S = 60
DAY_S = 86_400
# A counter key outlives its window by this much, so a replica whose clock is a little behind
# still finds the window it believes it is in.
KEY_GRACE_S = 60.0
# Charges in flight beyond this are made in-process at once rather than queued on Redis.
MAX_PENDING_CHARGES = 1024


class QuotaName(StrEnum):
    """The quotas, named as in ``QuotaFailure.subject`` and ``GetCapabilities``."""

    REQUESTS_PER_MINUTE = "requests_per_minute"
    LLM_TOKENS_PER_MINUTE = "llm_tokens_per_minute"
    SPEND_MICROS_PER_DAY = "spend_micros_per_day"


WINDOW_S = {
    QuotaName.REQUESTS_PER_MINUTE: MINUTE_S,
    QuotaName.LLM_TOKENS_PER_MINUTE: MINUTE_S,
    QuotaName.SPEND_MICROS_PER_DAY: DAY_S,
}
_UNIT = {
    QuotaName.REQUESTS_PER_MINUTE: "requests this minute",
    QuotaName.LLM_TOKENS_PER_MINUTE: "LLM tokens this minute",
    QuotaName.SPEND_MICROS_PER_DAY: "micros of spend today (UTC)",
}


@dataclass(frozen=True)
class QuotaLimits:
    """One tenant's limits; None is unlimited. Field names are :class:`QuotaName` values."""

    requests_per_minute: int | None = None
    llm_tokens_per_minute: int | None = None
    spend_micros_per_day: int | None = None

    def of(self, quota: QuotaName) -> int | None:
        """The limit of ``quota``."""
        limit: int | None = getattr(self, quota.value)
        return limit

    @property
    def any(self) -> bool:
        """Whether any quota is limited."""
        return any(getattr(self, f.name) is not None for f in fields(self))


@dataclass(frozen=True)
class QuotaStatus:
    """One quota of a tenant as GetCapabilities reports it."""

    name: QuotaName
    limit: int
    remaining: int
    window_s: int
    resets_in_s: float
    shared: bool
    currency: str  # the spend quota's currency; empty for the others


@dataclass(frozen=True)
class _Window:
    start: int
    end: int
    now: float

    @property
    def resets_in_s(self) -> float:
        # At least a millisecond: RetryInfo is sent in whole milliseconds and must not be zero.
        return max(0.001, self.end - self.now)


def _window(quota: QuotaName, now: float) -> _Window:
    length = WINDOW_S[quota]
    # Unix time has no leap seconds, so multiples of 86 400 are UTC midnights.
    start = math.floor(now / length) * length
    return _Window(start, start + length, now)


class LocalCounters:
    """Fixed-window counters in this process (per replica): the current window of each
    tenant's quota only, so memory is bounded by tenants times quotas."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, QuotaName], tuple[int, int]] = {}

    def read(self, tenant: str, quota: QuotaName, window_start: int) -> int:
        """The count of the window starting at ``window_start`` (0 for a new window)."""
        start, used = self._counts.get((tenant, quota), (window_start, 0))
        return used if start == window_start else 0

    def admit(
        self, tenant: str, quota: QuotaName, window_start: int, amount: int, limit: int
    ) -> Admission:
        """Add ``amount`` if the total stays within ``limit``."""
        used = self.read(tenant, quota, window_start)
        if used + amount > limit:
            return Admission(False, used)
        self._counts[(tenant, quota)] = (window_start, used + amount)
        return Admission(True, used + amount)

    def charge(self, tenant: str, quota: QuotaName, window_start: int, amount: int) -> int:
        """Add ``amount`` whatever the total; the new total."""
        used = self.read(tenant, quota, window_start) + amount
        self._counts[(tenant, quota)] = (window_start, used)
        return used


class Quotas:
    """The tenants' limits and their counters (Redis when given, else in-process)."""

    def __init__(
        self,
        defaults: QuotaLimits,
        overrides: Mapping[str, QuotaLimits] | None = None,
        *,
        counters: RedisQuotaCounters | None = None,
        currency: str = "USD",
        clock: Callable[[], float] = time.time,
        log_interval_s: float = 10.0,
    ) -> None:
        """``overrides`` are complete per-tenant limits (already merged with the defaults);
        ``clock`` is wall-clock Unix time, since windows are calendar minutes and days."""
        self._defaults = defaults
        self._overrides = dict(overrides or {})
        self._redis = counters
        self._local = LocalCounters()
        self._currency = currency
        self._clock = clock
        self._log_interval_s = log_interval_s
        self._last_warning = -math.inf
        self._suppressed = 0
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def shared(self) -> bool:
        """Whether the counters live in Redis (replicas share them) rather than in-process."""
        return self._redis is not None

    def limits_for(self, tenant: str) -> QuotaLimits:
        """The tenant's limits: its override, else the defaults."""
        return self._overrides.get(tenant, self._defaults)

    async def admit_request(self, tenant: str) -> None:
        """Count one call against ``requests_per_minute``; QuotaExceededError when the minute's
        budget is spent (the refused call is not counted)."""
        quota = QuotaName.REQUESTS_PER_MINUTE
        limit = self.limits_for(tenant).of(quota)
        if limit is None:
            return
        window = _window(quota, self._clock())
        admission: Admission | None = None
        if self._redis is not None:
            key = self._redis.key(tenant, quota, window.start)
            ttl = expiry_ms(window.end, window.now, KEY_GRACE_S)
            admission = await self._redis.admit(key, 1, limit, ttl)
            if admission is None:
                self._fell_back("admit")
        if admission is None:
            admission = self._local.admit(tenant, quota, window.start, 1, limit)
        if not admission.admitted:
            raise self._refusal(quota, admission.used, limit, window)

    async def check_generation(self, tenant: str) -> None:
        """Refuse an answer up front when the tenant's token or spend window is already spent
        (used ≥ limit); the answer's own cost is charged after it by :meth:`charge_generation`.
        When both are spent, the refusal names the one that refills last."""
        limits = self.limits_for(tenant)
        quotas = [
            q
            for q in (QuotaName.LLM_TOKENS_PER_MINUTE, QuotaName.SPEND_MICROS_PER_DAY)
            if limits.of(q) is not None
        ]
        if not quotas:
            return
        now = self._clock()
        used, _ = await self._read(tenant, quotas, now)
        spent = [
            (_window(quota, now), quota, count, limit)
            for quota, count in zip(quotas, used, strict=True)
            if (limit := limits.of(quota)) is not None and count >= limit
        ]
        if spent:
            window, quota, count, limit = max(spent, key=lambda s: s[0].end)
            raise self._refusal(quota, count, limit, window)

    def charge_generation(self, tenant: str, tokens: int, cost_micros: int) -> None:
        """Charge what an answer used (prompt + completion tokens, cost in micros) to the
        tenant's token and spend windows.

        Not a coroutine: it is called from the ``finally`` of a generation, which also runs
        while the call is being cancelled, where an await could be interrupted and the charge
        lost. The Redis write runs in a background task that a second cancel cannot reach;
        :meth:`drain` waits for those (at shutdown, and in tests).
        """
        limits = self.limits_for(tenant)
        for quota, amount in (
            (QuotaName.LLM_TOKENS_PER_MINUTE, tokens),
            (QuotaName.SPEND_MICROS_PER_DAY, cost_micros),
        ):
            if amount <= 0 or limits.of(quota) is None:
                continue
            window = _window(quota, self._clock())
            if self._redis is None or len(self._pending) >= MAX_PENDING_CHARGES:
                self._local.charge(tenant, quota, window.start, amount)
                continue
            task = asyncio.get_running_loop().create_task(
                self._charge(tenant, quota, window, amount)
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the charges in flight."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def status(self, tenant: str) -> list[QuotaStatus]:
        """The tenant's limited quotas with what is left of each right now."""
        limits = self.limits_for(tenant)
        quotas = [q for q in QuotaName if limits.of(q) is not None]
        if not quotas:
            return []
        now = self._clock()
        used, shared = await self._read(tenant, quotas, now)
        out = []
        for quota, count in zip(quotas, used, strict=True):
            limit = limits.of(quota)
            assert limit is not None
            out.append(
                QuotaStatus(
                    name=quota,
                    limit=limit,
                    remaining=max(0, limit - count),
                    window_s=WINDOW_S[quota],
                    resets_in_s=_window(quota, now).resets_in_s,
                    shared=shared,
                    currency=self._currency if quota is QuotaName.SPEND_MICROS_PER_DAY else "",
                )
            )
        return out

    async def _read(
        self, tenant: str, quotas: list[QuotaName], now: float
    ) -> tuple[list[int], bool]:
        """The counts of ``quotas`` in their current windows, and whether Redis answered."""
        starts = [_window(q, now).start for q in quotas]
        if self._redis is not None:
            keys = [self._redis.key(tenant, q, s) for q, s in zip(quotas, starts, strict=True)]
            counts = await self._redis.read(keys)
            if counts is not None:
                return counts, True
            self._fell_back("read")
        local = [self._local.read(tenant, q, s) for q, s in zip(quotas, starts, strict=True)]
        return local, False

    async def _charge(self, tenant: str, quota: QuotaName, window: _Window, amount: int) -> None:
        assert self._redis is not None
        key = self._redis.key(tenant, quota, window.start)
        ttl = expiry_ms(window.end, self._clock(), KEY_GRACE_S)
        try:
            total = await self._redis.charge(key, amount, ttl)
        except Exception:
            # Nobody awaits this task: an unexpected failure must still leave the charge made.
            log.exception("quota charge failed; counting it in-process")
            total = None
        if total is None:
            self._fell_back("charge")
            self._local.charge(tenant, quota, window.start, amount)

    def _refusal(
        self, quota: QuotaName, used: int, limit: int, window: _Window
    ) -> QuotaExceededError:
        QUOTA_REFUSALS.labels(quota.value).inc()
        resets_in = window.resets_in_s
        return QuotaExceededError(
            quota.value,
            f"{quota.value}: used {used} of {limit} {_UNIT[quota]}; "
            f"the window resets in {math.ceil(resets_in)} s",
            retry_after_s=resets_in,
        )

    def _fell_back(self, operation: str) -> None:
        """Count a fallback to in-process counting; log the first of a burst, then at most one
        line per interval with how many were not logged."""
        QUOTA_FALLBACKS.labels(operation).inc()
        now = time.monotonic()
        if now - self._last_warning < self._log_interval_s:
            self._suppressed += 1
            return
        log.warning(
            "redis unavailable: quotas counted in-process on this replica",
            extra={"operation": operation, "suppressed_since_last_log": self._suppressed},
        )
        self._last_warning = now
        self._suppressed = 0


def limits_from_settings(settings: Settings) -> tuple[QuotaLimits, dict[str, QuotaLimits]]:
    """The default limits and each overridden tenant's complete limits."""
    defaults = QuotaLimits(
        requests_per_minute=settings.quota_requests_per_minute,
        llm_tokens_per_minute=settings.quota_llm_tokens_per_minute,
        spend_micros_per_day=settings.quota_spend_micros_per_day,
    )
    overrides = {
        tenant: replace(
            defaults, **{name: getattr(override, name) for name in override.model_fields_set}
        )
        for tenant, override in settings.quota_overrides.items()
    }
    return defaults, overrides


def build_quotas(
    settings: Settings, *, link: RedisLink | None, namespace: str, currency: str
) -> Quotas | None:
    """The quotas the settings describe, counted in Redis through ``link`` when there is one
    (keys under ``namespace``); None when no tenant has any limit (nothing to count)."""
    defaults, overrides = limits_from_settings(settings)
    if not defaults.any and not any(limits.any for limits in overrides.values()):
        return None
    counters = RedisQuotaCounters(link, namespace) if link is not None else None
    if counters is None:
        log.info("quotas are counted in-process: each replica has its own budget")
    return Quotas(defaults, overrides, counters=counters, currency=currency)
