"""How long an upstream asked us to wait: the one reader of ``Retry-After`` for every client.

An upstream's hint feeds a circuit breaker and a caller's ``RetryInfo``, so a hostile or
broken value must not be able to park a model forever or tell a caller to come back next
century. Every answer is therefore clamped to ``[0, cap_s]``:

- ``retry-after-ms`` (OpenAI, Azure): milliseconds; read first when it is a number.
- ``Retry-After`` delta-seconds (RFC 9110), decimals tolerated (some gateways send them).
- ``Retry-After`` HTTP-date, relative to an injectable ``now`` (a date in the past: 0).

Defined results for the rest: a negative number is 0 (retry now); ``inf`` or anything past
the cap is the cap; ``nan``, garbage and an empty value are None, i.e. "no hint" (the caller
falls back to its own policy). A header that is absent is None too.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC

DEFAULT_RETRY_AFTER_CAP_S = 300.0

# What counts as a number: digits with an optional fraction and exponent (float() alone would
# also take "1_000"). "inf", "infinity" and "nan" are matched on purpose: upstreams do send
# them, and each has a defined answer (the cap; no hint).
_NUMBER = re.compile(
    r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)", re.I
)


def check_cap(cap_s: float) -> float:
    """``cap_s`` itself, or ValueError unless it is finite and not negative."""
    if not (math.isfinite(cap_s) and cap_s >= 0):
        raise ValueError(f"the Retry-After cap must be a finite number >= 0, got {cap_s}")
    return cap_s


def _clamp(seconds: float, cap_s: float) -> float | None:
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap_s)


def _number(value: str) -> float | None:
    value = value.strip()
    if not _NUMBER.fullmatch(value):
        return None
    return float(value)


def _http_date(value: str, now: Callable[[], float]) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now()


def retry_after_s(
    headers: Mapping[str, str],
    *,
    cap_s: float = DEFAULT_RETRY_AFTER_CAP_S,
    now: Callable[[], float] = time.time,
) -> float | None:
    """The wait ``headers`` ask for, in seconds within ``[0, cap_s]``; None for no hint.

    ``headers`` may be ``httpx.Headers`` or any mapping (names are matched case-blind).
    ``now`` is the wall clock (epoch seconds) HTTP dates are measured from.
    """
    check_cap(cap_s)
    lowered = {name.lower(): value for name, value in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        parsed = _number(millis)
        if parsed is not None and not math.isnan(parsed):
            return _clamp(parsed / 1000, cap_s)
        # An unreadable millisecond hint does not hide a readable Retry-After.
    value = lowered.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is None:
        seconds = _http_date(value, now)
    if seconds is None:
        return None
    return _clamp(seconds, cap_s)
