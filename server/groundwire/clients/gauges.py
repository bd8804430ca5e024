"""Gauges whose value is read from live state (a breaker's), in one process or several.

``Gauge.set_function`` reads the state when the endpoint is scraped, in the process that
serves the endpoint. With worker processes (prometheus_client's multiprocess mode) the
supervisor serves it and holds no breaker, and a function gauge writes nothing to the shared
files: it would read 0 forever. There each worker copies the value into the gauge instead,
on :func:`refresh` (the worker calls it every second).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Gauge, values

# By gauge: a later registration (a new link, a new breaker) replaces the earlier one.
_tracked: dict[Gauge, Callable[[], float]] = {}


def multiprocess() -> bool:
    """Whether metrics go to prometheus_client's shared files (PROMETHEUS_MULTIPROC_DIR was
    set before it was imported)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def read_from(gauge: Gauge, read: Callable[[], float]) -> None:
    """Make ``gauge`` (an observable child) report ``read()``: at scrape time in one process,
    on :func:`refresh` with several."""
    if multiprocess():
        _tracked[gauge] = read
        gauge.set(read())
    else:
        gauge.set_function(read)


def refresh() -> None:
    """Copy every tracked value into its gauge (multiprocess mode only; cheap)."""
    for gauge, read in _tracked.items():
        gauge.set(read())
