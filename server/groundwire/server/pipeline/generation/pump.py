"""Reading the upstream in its own task, so that what arrives while the caller's stream is
busy sending is handed over in one piece.

A relay that sends one gRPC message per upstream token spends most of its CPU on messages
when many streams share a core. With the pump, the first chunk goes out the moment it
arrives (nothing waits to batch), and chunks that pile up during a send leave together.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from groundwire.clients.llm import ChatChunk


class ChunkPump:
    """Drains ``source`` into a buffer; :meth:`take` returns everything buffered, merged."""

    def __init__(self, source: AsyncIterator[ChatChunk], *, coalesce: bool = True) -> None:
        """``coalesce=False`` hands chunks over one at a time (a plain relay, for comparison
        in benchmarks)."""
        self._source = source
        self._coalesce = coalesce
        self._queue: deque[ChatChunk] = deque()
        self._pending: ChatChunk | None = None
        self._error: BaseException | None = None
        self._ended = False
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for chunk in self._source:
                if not self._coalesce:
                    self._queue.append(chunk)
                elif self._pending is None:
                    self._pending = chunk
                else:
                    self._pending.merge(chunk)
                self._ready.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the reader, after what arrived before it
            self._error = exc
        finally:
            self._ended = True
            self._ready.set()

    async def take(self) -> ChatChunk | None:
        """Wait for output and return all of it as one chunk; None when the stream has ended.
        An upstream error is raised once the chunks received before it have been taken."""
        await self._ready.wait()
        if self._queue:
            chunk: ChatChunk | None = self._queue.popleft()
            if not self._queue and not self._ended:
                self._ready.clear()
            return chunk
        chunk, self._pending = self._pending, None
        if chunk is not None:
            if not self._ended:
                self._ready.clear()
            return chunk
        if self._error is not None:
            raise self._error
        return None

    def leftover(self) -> ChatChunk | None:
        """What arrived but was never taken (to account for it after an early close)."""
        chunk, self._pending = self._pending, None
        while self._queue:
            if chunk is None:
                chunk = self._queue.popleft()
            else:
                chunk.merge(self._queue.popleft())
        return chunk

    async def aclose(self) -> None:
        """Stop reading and close the upstream stream (and its connection) now."""
        if not self._task.done():
            self._task.cancel()
        # wait() rather than awaiting the task: its CancelledError is not ours to raise, and
        # a cancel of our own caller still gets through.
        await asyncio.wait({self._task})
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()
