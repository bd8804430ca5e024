"""Reading the upstream at the pace frames may leave, so that the tokens of one pace are
read, decoded and sent in one piece.

A relay that sends one gRPC message per upstream token spends most of its CPU on messages
when many streams share a core. The pump reads the first chunk the moment it arrives (nothing
waits to batch); after it, the next read (a chunk is what one network read brought, see
``ChatModel``) starts no sooner than ``FRAME_INTERVAL_S`` after the one before. What the
upstream sent meanwhile waits in the connection's buffer and comes back as one chunk, one
frame. An upstream 5 ms between tokens then costs a read and a frame per 20 ms instead of one
per token; the first token is never held, the answer's pace is unchanged (its tokens arrive
in fours), and its end leaves at most one pace late (after a chunk with a finish reason the
rest is read at once). Nothing is read that is not taken, so a caller slower than the model
holds the upstream back through the connection (aiohttp stops reading a full buffer and
suspends its idle timeout meanwhile) rather than piling tokens up in memory.

Measured side by side (``python -m groundwire.tools.measure.stream_cpu``, 64-token answers at
5 ms, one worker on uvloop):
- pacing off -> on: frames per answer 50 -> 18 and server CPU per answer 17.5 -> 12.5 ms at
  32 streams; 20 -> 10 frames and 8.9 -> 7.4 ms at 256, where TTFT p99 fell from 4.2 to 2.5 s;
- paced reads, one JSON decode per read and the environment's proxy read once (``llm.py``):
  13.6 -> 12.1 ms at 32 streams, 8.8 -> 5.6 ms at 256, TTFT over direct p50 1.69 -> 0.66 s;
- reading in the caller's task instead of a task of its own per stream (no hand-over through
  an event, one timer per frame instead of two): 10.2 -> 9.7 ms at 32 streams, 5.15 -> 4.79 ms
  at 256, TTFT over direct p50 619 -> 380 ms at 256 (3 rounds, quiet machine).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from groundwire.clients.chat import ChatChunk

# The shortest gap between two delta frames of one answer (see the module docstring).
FRAME_INTERVAL_S = 0.02


class ChunkPump:
    """Hands over the upstream's chunks, each read no sooner than the next frame may leave."""

    def __init__(
        self,
        source: AsyncIterator[ChatChunk],
        *,
        coalesce: bool = True,
        min_interval_s: float = FRAME_INTERVAL_S,
    ) -> None:
        """``coalesce=False`` reads at once whenever asked (a plain relay, for comparison in
        benchmarks; ``min_interval_s`` is then ignored)."""
        self._source = source
        self._interval = min_interval_s if coalesce else 0.0
        self._loop = asyncio.get_running_loop()
        self._next_at: float | None = None  # no read before this loop time
        self._ended = False

    async def take(self) -> ChatChunk | None:
        """The next chunk (what one read brought); None when the stream has ended. Raises
        the source's error, after the chunks before it."""
        if self._ended:
            return None
        if self._next_at is not None:
            delay = self._next_at - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        try:
            chunk = await anext(self._source)
        except StopAsyncIteration:
            self._ended = True
            return None
        except BaseException:
            self._ended = True
            raise
        if chunk.finish_reason is not None:
            self._interval = 0.0  # the answer is over: what is left (usage, the end) at once
        self._next_at = self._loop.time() + self._interval if self._interval else None
        return chunk

    async def aclose(self) -> None:
        """Stop reading and close the upstream stream (and its connection) now."""
        self._ended = True
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()
