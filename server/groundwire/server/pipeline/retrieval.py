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

log = logging.getLogger(__name__)
_SPACES = re.compile(r"\s+")
CACHE_FORMAT = 1  # bump when the cached value's layout changes


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
    ) -> None:
        self._store = store
        self._sparse = sparse
        self._dense = dense
        self._cache = cache
        self._cache_ttl_s = cache_ttl_s

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
        cache_s = 0.0
        key: str | None = None
        if self._cache is not None and query.use_cache:
            cache_started = time.perf_counter()
            version = await self._cache.index_version(tenant)
            if version is not None:
                key = self._cache_key(tenant, text, query, version)
                cached = await self._cache.get(key)
                if cached is not None:
                    chunks = _decode(cached)
                    if chunks is not None:
                        cache_s = time.perf_counter() - cache_started
                        return RetrievalResult(
                            chunks=chunks,
                            cache_hit=True,
                            mode=query.mode,
                            embedder_id=self.embedder_id,
                            cache_s=cache_s,
                            embed_s=0.0,
                            search_s=0.0,
                            total_s=time.perf_counter() - started,
                        )
            cache_s = time.perf_counter() - cache_started

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
        search_s = time.perf_counter() - search_started

        if key is not None and self._cache is not None:
            write_started = time.perf_counter()
            await self._cache.set(key, _encode(chunks), self._cache_ttl_s)
            cache_s += time.perf_counter() - write_started

        return RetrievalResult(
            chunks=chunks,
            cache_hit=False,
            mode=query.mode,
            embedder_id=self.embedder_id,
            cache_s=cache_s,
            embed_s=embed_s,
            search_s=search_s,
            total_s=time.perf_counter() - started,
        )

    def _cache_key(self, tenant: str, text: str, query: RetrievalQuery, version: int) -> str:
        # Everything that changes the answer is in the key; nothing else is.
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
                version,
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        digest = hashlib.sha256(material.encode("utf-8")).hexdigest()
        return f"ret:{tenant}:{digest}"


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
