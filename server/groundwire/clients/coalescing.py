"""Coalescing concurrent single-text embeddings into shared model calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence


class QueryCoalescer:
    """Concurrent queries share one model call.

    A CPU model embeds a batch of 16 short queries in little more time than one, but called
    one query at a time under load, each waits for all those queued before it. Here, while
    one batch is being embedded, the queries that arrive wait together and go in the next
    call, up to ``max_batch`` at once. A lone query goes straight through, so latency at low
    load is unchanged.
    """

    def __init__(
        self,
        embed_batch: Callable[[Sequence[str]], Awaitable[list[list[float]]]],
        max_batch: int,
    ) -> None:
        self._embed_batch = embed_batch
        self._max_batch = max_batch
        self._waiting: list[tuple[str, asyncio.Future[list[float]]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def embed(self, text: str) -> list[float]:
        """The vector of ``text``, embedded alongside whatever else is waiting."""
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._waiting.append((text, future))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        # A cancelled caller cancels only its own future; the batch goes on for the others.
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                batch = [(text, future) for text, future in batch if not future.done()]
                if not batch:
                    continue
                try:
                    vectors = await self._embed_batch([text for text, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), vector in zip(batch, vectors, strict=True):
                    if not future.done():
                        future.set_result(vector)
        finally:
            self._drainer = None
