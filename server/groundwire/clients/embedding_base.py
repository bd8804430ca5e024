"""What the dense embedders share: the span and batching of every embedder, and for the local
models (ONNX Runtime, torch) the one model thread, queries first, and query coalescing.

The local backends differ only in how one list of texts becomes vectors (``_encode``, run
on the model thread with the job's priority, so a backend can use fewer threads for
queries than for document batches); everything about when that runs lives here once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractContextManager

from opentelemetry.trace import Span

from groundwire.clients.coalescing import QueryCoalescer
from groundwire.clients.errors import EmbedderUnavailableError
from groundwire.clients.model_worker import ModelWorker, Priority, WorkerClosedError
from groundwire.clients.ports import Tokenizer
from groundwire.clients.telemetry import client_span
from groundwire.clients.vendor_log import VendorErrorLog

MINILM_MODEL_NAME = "all-MiniLM-L6-v2"


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch size below one."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def check_threads(name: str, threads: int | None) -> None:
    """Refuse a thread count below one (None: the backend's default)."""
    if threads is not None and threads < 1:
        raise ValueError(f"{name} must be at least 1, got {threads}")


class BatchingEmbedder:
    """The span and the batching every embedder shares; subclasses embed one batch."""

    _batch_size: int

    @property
    def embedder_id(self) -> str:
        raise NotImplementedError

    async def _embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for passages, in order, ``batch_size`` texts per model call or request.

        One batch at a time: the batches of concurrent ingests interleave, and a local model
        can run a query between two of them.
        """
        with self._span(len(texts), "documents"):
            vectors: list[list[float]] = []
            for start in range(0, len(texts), self._batch_size):
                vectors.extend(await self._embed_batch(texts[start : start + self._batch_size]))
            return vectors

    async def embed_query(self, text: str) -> list[float]:
        """The vector of one query."""
        with self._span(1, "query"):
            return (await self._embed_batch([text]))[0]

    def _span(self, n: int, kind: str) -> AbstractContextManager[Span]:
        attributes: dict[str, str | int] = {
            "groundwire.embedder_id": self.embedder_id,
            "groundwire.batch_size": n,
            "groundwire.kind": kind,
        }
        return client_span("embedder.embed", **attributes)


class LocalModelEmbedder(BatchingEmbedder):
    """A model on this machine's CPU, run by one ``ModelWorker`` thread.

    The thread is the lock around the model (only it touches it), keeps the event loop
    responsive, and keeps a backlog of embed calls waiting in its queues rather than in the
    default executor, which other clients (the vector store) need. Query batches go before
    every waiting document batch, so a Retrieve during a large ingest waits at most for the
    batch in progress; concurrent queries share model calls (``QueryCoalescer``).

    Subclasses set the fields below in their constructor, then call ``_start``.
    """

    _model_name: str
    _dimension: int
    _max_seq_length: int
    _tokenizer: Tokenizer

    def _start(self, batch_size: int) -> None:
        """Start the model thread and run one text of each priority through it now, so the
        first real call pays no set-up (thread pools, lazy kernels) and a broken model fails
        at start-up."""
        self._batch_size = batch_size
        self._closed = False
        self._vendor_log = VendorErrorLog("embedder")
        self._worker = ModelWorker("gw-embedder")
        self._queries = QueryCoalescer(self._embed_queries, max_batch=max(batch_size, 16))
        for priority in Priority:
            self._worker.submit(priority, self._encode, ["warm-up"], priority).result()

    def _encode(self, texts: list[str], priority: Priority) -> list[list[float]]:
        """Unit-length vectors of ``texts``; runs on the model thread only."""
        raise NotImplementedError

    @property
    def embedder_id(self) -> str:
        """``model/dimension``, e.g. ``all-MiniLM-L6-v2-int8/384``: a collection is tied to it,
        so vectors of two backends never meet in one collection."""
        return f"{self._model_name}/{self._dimension}"

    @property
    def dimension(self) -> int:
        """The vector length, read from the model."""
        return self._dimension

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads per text, special tokens included (256 for MiniLM)."""
        return self._max_seq_length

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's own WordPiece tokenizer, without special tokens or truncation."""
        return self._tokenizer

    @property
    def jobs_run(self) -> dict[Priority, int]:
        """Model calls run so far, per priority."""
        return dict(self._worker.jobs_run)

    async def embed_query(self, text: str) -> list[float]:
        """The vector of one query; concurrent queries share model calls, ahead of documents."""
        with self._span(1, "query"):
            return await self._queries.embed(text)

    async def close(self) -> None:
        """Stop the model thread; later calls raise EmbedderUnavailableError."""
        self._closed = True
        self._worker.shutdown()

    async def _embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        return await self._run(Priority.DOCUMENTS, texts)

    async def _embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return await self._run(Priority.QUERY, texts)

    async def _run(self, priority: Priority, texts: Sequence[str]) -> list[list[float]]:
        if self._closed:
            raise EmbedderUnavailableError("the local embedder is closed")
        try:
            future = self._worker.submit(priority, self._encode, list(texts), priority)
            # Cancelling the caller cancels the job if it has not started yet.
            return await asyncio.wrap_future(future)
        except WorkerClosedError as exc:
            raise EmbedderUnavailableError("the local embedder is closed") from exc
        except Exception as exc:
            # The runtimes report their failures (out of memory, bad input) as RuntimeError
            # and friends; none may escape the client layer as themselves, nor their text.
            ours = "local embedding failed"
            self._vendor_log("encode", exc, ours=ours)
            raise EmbedderUnavailableError(ours) from exc
