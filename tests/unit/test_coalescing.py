"""Concurrent queries share model calls, and each caller still gets its own vector."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from groundwire.clients.coalescing import QueryCoalescer


class _Recorder:
    """Stands in for the model: records each batch and answers after yielding to the loop."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on
        self.release = asyncio.Event()
        self.release.set()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        await self.release.wait()
        await asyncio.sleep(0)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("model failed")
        return [[float(len(t))] for t in texts]


async def test_a_lone_query_goes_straight_through() -> None:
    model = _Recorder()
    coalescer = QueryCoalescer(model.embed, max_batch=8)
    assert await coalescer.embed("abc") == [3.0]
    assert model.batches == [["abc"]]


async def test_queries_that_arrive_during_a_call_share_the_next_one() -> None:
    model = _Recorder()
    model.release.clear()
    coalescer = QueryCoalescer(model.embed, max_batch=4)
    first = asyncio.create_task(coalescer.embed("a"))
    await asyncio.sleep(0.01)  # the first batch is now in the model
    rest = [asyncio.create_task(coalescer.embed("x" * n)) for n in range(2, 8)]
    await asyncio.sleep(0.01)
    model.release.set()
    assert await first == [1.0]
    assert [await t for t in rest] == [[float(n)] for n in range(2, 8)]
    assert [len(b) for b in model.batches] == [1, 4, 2]


async def test_a_failure_reaches_every_caller_of_that_batch_only() -> None:
    model = _Recorder(fail_on="bad")
    model.release.clear()
    coalescer = QueryCoalescer(model.embed, max_batch=2)
    blocker = asyncio.create_task(coalescer.embed("ok"))
    await asyncio.sleep(0.01)
    doomed = [asyncio.create_task(coalescer.embed(t)) for t in ("bad", "fine")]
    later = asyncio.create_task(coalescer.embed("later"))
    await asyncio.sleep(0.01)
    model.release.set()
    assert await blocker == [2.0]
    for task in doomed:
        with pytest.raises(RuntimeError):
            await task
    assert await later == [5.0]


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    model = _Recorder()
    model.release.clear()
    coalescer = QueryCoalescer(model.embed, max_batch=8)
    blocker = asyncio.create_task(coalescer.embed("b"))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(coalescer.embed("gone"))
    kept = asyncio.create_task(coalescer.embed("kept!"))
    await asyncio.sleep(0.01)
    gone.cancel()
    model.release.set()
    assert await blocker == [1.0] and await kept == [5.0]
    assert model.batches[-1] == ["kept!"]
