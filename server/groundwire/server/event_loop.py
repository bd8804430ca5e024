"""The event loop ``groundwire serve`` runs on (``GROUNDWIRE_EVENT_LOOP``): uvloop by default.

A streaming answer is mostly event-loop work: a socket read per upstream token, a task switch
to hand it to the gRPC handler, a write per frame. uvloop (libuv, in Cython) does the loop's
share of that for less CPU than asyncio's pure-Python loop. grpc.aio runs on it unchanged
(the rpc suite: ``pytest --event-loop uvloop``). One difference shows: writing to a closed
transport raises RuntimeError on uvloop where asyncio only logs it, and redis-py lets that
through when a Redis Cluster node dies under load, so ``groundwire.clients.redis_link`` counts
a RuntimeError raised inside redis-py as a Redis failure.

Measured with ``python -m groundwire.tools.measure.stream_cpu`` (64-token answers, upstream
300 ms to the first token, 5 ms between tokens; one run, variants interleaved, 2 busy cores),
the server's CPU per answer with the aiohttp reader fell from 13.9 to 12.3 ms at 32 streams and
from 8.4 to 5.6 ms at 256 on uvloop (TTFT over the direct call at 256, p50: 1.5 s to 0.34 s).
asyncio's own loop stays a setting, to rule the loop out when something misbehaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from groundwire.server.settings import EventLoop

T = TypeVar("T")


def loop_factory(kind: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function that makes a new loop of ``kind``."""
    if kind is EventLoop.UVLOOP:
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], kind: EventLoop) -> T:
    """``asyncio.run(main)`` on a loop of ``kind``."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(main)
