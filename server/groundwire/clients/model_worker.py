"""One thread that owns a local model and runs its jobs, queries before documents.

A CPU model is not safe to call from several threads at once and gains nothing from it: one
thread runs every model call. A plain one-thread executor runs its jobs in arrival order, so
a query that arrived behind the document batches of several ingests waited for all of them
(28 s was seen). Here the jobs wait in two queues and the thread always takes a waiting query
job before any document job: a query waits at most for the job in progress.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from enum import Enum
from typing import Any, TypeVar

T = TypeVar("T")


class Priority(Enum):
    """What a job embeds; queries go first."""

    QUERY = "query"
    DOCUMENTS = "documents"


class WorkerClosedError(RuntimeError):
    """The worker was shut down; the job was not run."""


_Job = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...]]


class ModelWorker:
    """A dedicated thread running submitted jobs, query jobs before document jobs.

    Within one priority jobs run in submission order. A job whose future was cancelled before
    it started is skipped. ``jobs_run`` counts the jobs run per priority (for tests and
    diagnostics).
    """

    def __init__(self, name: str) -> None:
        """Start the thread."""
        self._condition = threading.Condition()
        self._queues: dict[Priority, deque[_Job]] = {p: deque() for p in Priority}
        self._closed = False
        self.jobs_run: dict[Priority, int] = {p: 0 for p in Priority}
        # A daemon: a model call in progress cannot be interrupted, and must not hold up exit.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: Priority, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)``; the future holds its result or its exception."""
        future: Future[T] = Future()
        with self._condition:
            if self._closed:
                raise WorkerClosedError("the model worker is shut down")
            self._queues[priority].append((future, fn, args))
            self._condition.notify()
        return future

    def shutdown(self) -> None:
        """Refuse new jobs and fail the waiting ones; the job in progress finishes."""
        with self._condition:
            self._closed = True
            waiting = [job for queue in self._queues.values() for job in queue]
            for queue in self._queues.values():
                queue.clear()
            self._condition.notify_all()
        # An error, not a cancellation: the caller's task was not cancelled, its job was dropped.
        for future, _, _ in waiting:
            if future.set_running_or_notify_cancel():
                future.set_exception(WorkerClosedError("the model worker is shut down"))

    def _next(self) -> tuple[Priority, _Job] | None:
        with self._condition:
            while True:
                for priority in Priority:  # declaration order: QUERY first
                    queue = self._queues[priority]
                    if queue:
                        return priority, queue.popleft()
                if self._closed:
                    return None
                self._condition.wait()

    def _run(self) -> None:
        while (item := self._next()) is not None:
            priority, (future, fn, args) = item
            if not future.set_running_or_notify_cancel():
                continue
            # Counted before the caller can see the outcome, so a caller reads a settled count.
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller, whatever it is
                self.jobs_run[priority] += 1
                future.set_exception(exc)
            else:
                self.jobs_run[priority] += 1
                future.set_result(result)
