"""Where a vendor's own words go: the log, never a caller.

The client layer turns vendor exceptions into our errors with our messages ("vector store
unavailable"), because a status message travels to callers in other companies' services:
a vendor's text can carry internal host:port pairs, gRPC's ``debug_error_string``, SQL, or
file paths. The vendor text is still what an operator needs, so it is logged here, at
WARNING, with the call's correlation id (the one the caller got in ``ErrorInfo``) so the two
meet in the logs.

An outage fails every call, so the log is throttled per (component, operation): the first
failure of a burst is logged, then at most one line per interval, counting the ones skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from groundwire.clients.correlation import current_correlation_id

MAX_VENDOR_TEXT = 2048


class VendorErrorLog:
    """Logs vendor failures for one component (``vector_store``, ``embedder``, ``llm``)."""

    def __init__(
        self,
        component: str,
        *,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.component = component
        self._interval_s = interval_s
        self._clock = clock
        self._log = logger or logging.getLogger(f"groundwire.clients.{component}")
        # Edge writes report from worker threads: the bookkeeping is shared with the loop.
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, operation: str, error: BaseException | str, *, ours: str = "") -> None:
        """Log ``error`` (an exception or the vendor's text) for ``operation``; ``ours`` is
        the message the caller got, so the line says which of our errors it explains."""
        now = self._clock()
        with self._lock:
            if now - self._last.get(operation, -float("inf")) < self._interval_s:
                self._suppressed[operation] = self._suppressed.get(operation, 0) + 1
                return
            self._last[operation] = now
            suppressed = self._suppressed.pop(operation, 0)
        if isinstance(error, BaseException):
            error_type, text = type(error).__name__, str(error)
        else:
            error_type, text = "", error
        extra: dict[str, object] = {
            "component": self.component,
            "operation": operation,
            "error_type": error_type,
            "vendor_error": text[:MAX_VENDOR_TEXT],
            "reported_as": ours,
            "suppressed_since_last_log": suppressed,
        }
        correlation_id = current_correlation_id()
        if correlation_id is not None:  # outside a call (start-up) there is none
            extra["correlation_id"] = correlation_id
        self._log.warning(f"{self.component} failed", extra=extra)
