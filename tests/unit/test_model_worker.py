"""ModelWorker: one thread, query jobs before document jobs, cancelled and closed jobs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError

import pytest

from groundwire.clients.model_worker import ModelWorker, Priority, WorkerClosedError


@pytest.fixture
def worker() -> Iterator[ModelWorker]:
    worker = ModelWorker("test-worker")
    yield worker
    worker.shutdown()


def _block(worker: ModelWorker) -> threading.Event:
    """Occupy the worker with a document job until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    worker.submit(Priority.DOCUMENTS, hold)
    assert started.wait(10)
    return release


def test_queries_go_before_waiting_documents_in_arrival_order(worker: ModelWorker) -> None:
    release = _block(worker)
    order: list[str] = []
    futures = [
        worker.submit(Priority.DOCUMENTS, order.append, "documents 1"),
        worker.submit(Priority.DOCUMENTS, order.append, "documents 2"),
        worker.submit(Priority.QUERY, order.append, "query 1"),
        worker.submit(Priority.DOCUMENTS, order.append, "documents 3"),
        worker.submit(Priority.QUERY, order.append, "query 2"),
    ]
    release.set()
    for future in futures:
        future.result(10)

    assert order == ["query 1", "query 2", "documents 1", "documents 2", "documents 3"]
    assert worker.jobs_run == {Priority.QUERY: 2, Priority.DOCUMENTS: 4}


def test_a_job_runs_on_the_worker_thread_and_returns_or_raises(worker: ModelWorker) -> None:
    def boom() -> None:
        raise ValueError("bad input")

    assert worker.submit(Priority.QUERY, threading.current_thread).result(10).name == (
        "test-worker"
    )
    with pytest.raises(ValueError, match="bad input"):
        worker.submit(Priority.DOCUMENTS, boom).result(10)
    assert worker.submit(Priority.QUERY, lambda: 42).result(10) == 42  # still serving


def test_a_cancelled_job_is_skipped(worker: ModelWorker) -> None:
    release = _block(worker)
    ran: list[str] = []
    cancelled = worker.submit(Priority.QUERY, ran.append, "cancelled")
    kept = worker.submit(Priority.QUERY, ran.append, "kept")

    assert cancelled.cancel()
    release.set()
    kept.result(10)

    assert ran == ["kept"]
    with pytest.raises(CancelledError):
        cancelled.result(0)


def test_shutdown_fails_waiting_jobs_and_refuses_new_ones(worker: ModelWorker) -> None:
    release = _block(worker)
    waiting = worker.submit(Priority.DOCUMENTS, lambda: "never")

    worker.shutdown()
    release.set()

    with pytest.raises(WorkerClosedError):
        waiting.result(10)
    with pytest.raises(WorkerClosedError):
        worker.submit(Priority.QUERY, lambda: "refused")
