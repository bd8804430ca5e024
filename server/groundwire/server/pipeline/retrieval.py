"""Retrieval: cache → embed → search, scoped to one tenant."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import unicodedata
from dataclasses import asdict, dataclass

from groundwire.clients.models import ChunkRecord, FieldMatch, ScoredChunk, SearchMode
from groundwire.clients.ports import Cache, DenseEmbedder, SparseEncoder, VectorStore
from groundwire.server.pipeline.cache_writes import CacheWrites

log = logging.getLogger(__name__)
_SPACES = re.compile(r"\s+")
CACHE_FORMAT = 2  # bump when the cached value's layout changes


def normalize_query(text: str) -> str:
    """The form we embed and key the cache on: NFKC, trimmed, runs of white space as one."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()


@dataclass(frozen=True)
class RetrievalQuery:
    """A validated retrieval request."""

    text: str
    top_k: int
    mode: SearchMode
    filters: tuple[FieldMatch, ...] = ()
    min_score: float | None = None
    use_cache: bool = True


@dataclass(frozen=True)
class RetrievalResult:
    """The chunks found and where the time went (seconds)."""

    chunks: list[ScoredChunk]
    cache_hit: bool
    mode: SearchMode
    embedder_id: str
    cache_s: float
    embed_s: float
    search_s: float
    total_s: float


class RetrievalPipeline:
    """Finds a tenant's best chunks for a query, through the retrieval cache when it can."""

    def __init__(
        self,
        *,
        store: VectorStore,
        sparse: SparseEncoder,
        dense: DenseEmbedder | None,
        cache: Cache | None,
        cache_ttl_s: int = 3600,
        writes: CacheWrites | None = None,
    ) -> None:
        """``writes`` stores cache entries in the background (shared with other pipelines so
        one drain at shutdown covers them all)."""
        self._store = store
        self._sparse = sparse
        self._dense = dense
        self._cache = cache
        self._cache_ttl_s = cache_ttl_s
        self._writes = writes or CacheWrites(cache)

    @property
    def default_mode(self) -> SearchMode:
        """Hybrid when a dense embedder exists, else sparse."""
        return SearchMode.HYBRID if self._dense is not None else SearchMode.SPARSE

    @property
    def supported_modes(self) -> tuple[SearchMode, ...]:
        """The modes this deployment can serve."""
        if self._dense is None:
            return (SearchMode.SPARSE,)
        return (SearchMode.DENSE, SearchMode.SPARSE, SearchMode.HYBRID)

    @property
    def embedder_id(self) -> str:
        """The dense embedder's id, or empty when there is none."""
        return self._dense.embedder_id if self._dense is not None else ""

    async def retrieve(self, tenant: str, query: RetrievalQuery) -> RetrievalResult:
        """The top chunks for ``query`` in ``tenant``'s corpus."""
        started = time.perf_counter()
        text = normalize_query(query.text)
        key, version, chunks, cache_s = await self._lookup(tenant, text, query)
        embed_s = search_s = 0.0
        cache_hit = chunks is not None
        if chunks is None:
            chunks, embed_s, search_s = await self._search(tenant, text, query)
            if key is not None:
                self._writes.submit(tenant, key, version, _encode(chunks), self._cache_ttl_s)
        return RetrievalResult(
            chunks=chunks,
            cache_hit=cache_hit,
            mode=query.mode,
            embedder_id=self.embedder_id,
            cache_s=cache_s,
            embed_s=embed_s,
            search_s=search_s,
            total_s=time.perf_counter() - started,
        )

    async def _lookup(
        self, tenant: str, text: str, query: RetrievalQuery
    ) -> tuple[str | None, int, list[ScoredChunk] | None, float]:
        """(key to store under or None to bypass, index version, cached chunks or None,
        seconds spent)."""
        if self._cache is None or not query.use_cache:
            return None, 0, None, 0.0
        cache_started = time.perf_counter()
        key = self._cache_key(tenant, text, query)
        found = await self._cache.get_versioned(tenant, key)
        cache_s = time.perf_counter() - cache_started
        if found is None:
            return None, 0, None, cache_s  # Redis failed: bypass the cache for this call
        version, cached = found
        return key, version, _decode(cached) if cached is not None else None, cache_s

    async def _search(
        self, tenant: str, text: str, query: RetrievalQuery
    ) -> tuple[list[ScoredChunk], float, float]:
        """Embed and search: (chunks, embed seconds, search seconds)."""
        embed_started = time.perf_counter()
        dense_vector = None
        sparse_vector = None
        if query.mode in (SearchMode.DENSE, SearchMode.HYBRID):
            if self._dense is None:
                raise ValueError(f"mode {query.mode.value} needs a dense embedder")
            dense_vector = await self._dense.embed_query(text)
        if query.mode in (SearchMode.SPARSE, SearchMode.HYBRID):
            sparse_vector = self._sparse.encode_query(text)
        embed_s = time.perf_counter() - embed_started

        search_started = time.perf_counter()
        chunks = await self._store.search(
            tenant,
            mode=query.mode,
            dense=dense_vector,
            sparse=sparse_vector,
            limit=query.top_k,
            filters=query.filters,
            min_score=query.min_score,
        )
        return chunks, embed_s, time.perf_counter() - search_started

    async def drain(self) -> None:
        """Wait for cache writes in flight (at shutdown, and in tests)."""
        await self._writes.drain()

    def _cache_key(self, tenant: str, text: str, query: RetrievalQuery) -> str:
        # Everything that changes the answer is in the key but the index version, which the
        # entry records instead; nothing else is.
        material = json.dumps(
            [
                CACHE_FORMAT,
                tenant,
                text,
                [[f.field, list(f.values)] for f in sorted(query.filters, key=lambda f: f.field)],
                query.top_k,
                query.mode.value,
                query.min_score,
                self.embedder_id,
                self._sparse.id,
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        digest = hashlib.sha256(material.encode("utf-8")).hexdigest()
        # The index version is not in the key: the entry records the version it was computed
        # at, and a lookup reads both in one round trip. The braces are a Redis Cluster hash
        # tag putting the entry in the slot of the tenant's version counter.
        return f"ret:{{{tenant}}}:{digest}"


def _encode(chunks: list[ScoredChunk]) -> bytes:
    payload = [[asdict(c.record), c.score] for c in chunks]
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _decode(raw: bytes) -> list[ScoredChunk] | None:
    """Cached chunks, or None when the entry cannot be read (treated as a miss)."""
    try:
        return [
            ScoredChunk(ChunkRecord(**record), float(score)) for record, score in json.loads(raw)
        ]
    except (ValueError, TypeError) as exc:
        log.warning("unreadable retrieval cache entry; treating as a miss", extra={"err": str(exc)})
        return None
