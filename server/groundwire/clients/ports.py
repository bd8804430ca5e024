"""The small interfaces the pipeline depends on. Implementations live beside this module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from groundwire.clients.chat import ChatChunk, ChatRequest
from groundwire.clients.models import (
    ChunkPoint,
    FieldMatch,
    ScoredChunk,
    SearchMode,
    SparseVector,
    StoredDocument,
)


class Tokenizer(Protocol):
    """Splits text into tokens and reports each token's character span."""

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character offsets of each token of ``text``, in order."""
        ...


class DenseEmbedder(Protocol):
    """Turns text into dense vectors."""

    @property
    def embedder_id(self) -> str:
        """A stable id, ``model/dimension``; a collection is tied to it."""
        ...

    @property
    def dimension(self) -> int:
        """The vector length."""
        ...

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer the model counts its input in (used for chunking)."""
        ...

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed passages, batched internally. Raises EmbedderUnavailableError."""
        ...

    async def embed_query(self, text: str) -> list[float]:
        """Embed one query. Raises EmbedderUnavailableError."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...


class SparseEncoder(Protocol):
    """Turns text into BM25 term-frequency sparse vectors (IDF is applied by the store)."""

    @property
    def id(self) -> str:
        """The encoder and its parameters, e.g. ``bm25/k=1.2,b=0.75,avg_len=256``."""
        ...

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        """Sparse vectors for passages."""
        ...

    def encode_query(self, text: str) -> SparseVector:
        """The sparse vector for a query."""
        ...


class VectorStore(Protocol):
    """Chunks with named dense (``dense``) and sparse (``sparse``) vectors, per tenant.

    Every method takes the tenant and adds the tenant filter itself on every read and write;
    a caller cannot reach another tenant's points.
    """

    @property
    def identity(self) -> str:
        """Which index this is, stable across restarts: the store kind and location (a Qdrant
        URL and collection, an Edge shard's own id). Shared state in Redis (cache entries,
        index versions, quotas) is kept under it, so stores with equal identities share it
        and no others do."""
        ...

    async def ensure_collection(self, embedder_id: str, dimension: int) -> None:
        """Create the collection if missing; raise EmbedderMismatchError if it records another
        embedder id or dimension."""
        ...

    async def upsert(self, tenant: str, points: Sequence[ChunkPoint]) -> None:
        """Write points (whole documents, in one operation where the engine allows)."""
        ...

    async def stored_documents(
        self, tenant: str, doc_ids: Sequence[str]
    ) -> dict[str, StoredDocument]:
        """What is stored for each of ``doc_ids`` that exists."""
        ...

    async def delete_points(self, tenant: str, chunk_ids: Sequence[str]) -> None:
        """Delete points by id (only the tenant's own)."""
        ...

    async def delete_documents(self, tenant: str, doc_ids: Sequence[str]) -> tuple[int, int]:
        """Delete every chunk of the documents; returns (documents deleted, chunks deleted)."""
        ...

    async def search(
        self,
        tenant: str,
        *,
        mode: SearchMode,
        dense: list[float] | None,
        sparse: SparseVector | None,
        limit: int,
        filters: Sequence[FieldMatch] = (),
        min_score: float | None = None,
    ) -> list[ScoredChunk]:
        """The best ``limit`` chunks. Hybrid prefetches dense and sparse and fuses by RRF."""
        ...

    async def count(self, tenant: str) -> int:
        """How many points the tenant has."""
        ...

    async def close(self) -> None:
        """Flush and release the store."""
        ...


class Cache(Protocol):
    """A byte cache with per-tenant index versions. Failures never raise: they miss."""

    async def get_versioned(self, tenant: str, key: str) -> tuple[int, bytes | None] | None:
        """The tenant's current index version and the value stored at ``key`` for that
        version (None on a miss or a stale entry), in one round trip; None when Redis failed
        (the caller bypasses the cache)."""
        ...

    async def set_versioned(
        self, tenant: str, key: str, version: int, value: bytes, ttl_s: int
    ) -> None:
        """Store ``value`` as computed at the tenant's index ``version``."""
        ...

    async def bump_index_version(self, tenant: str) -> None:
        """Invalidate the tenant's cached retrievals by bumping its index version."""
        ...

    async def ping(self) -> bool:
        """Whether Redis answers right now (for start-up logs and health)."""
        ...

    async def close(self) -> None:
        """Close the connection pool."""
        ...


class ChatModel(Protocol):
    """Streams chat completions from one endpoint (``llm.OpenAIChatClient`` speaks OpenAI's
    ``/v1/chat/completions``)."""

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """The completion as chunks, the last carrying the finish reason and usage: one chunk
        per network read, holding every event it brought (the pipeline's pump reads no more
        often than it sends frames). Raises LLMCallError; closing the iterator early closes
        the call (the upstream stops)."""
        ...

    async def close(self) -> None:
        """Close the connection pool."""
        ...
