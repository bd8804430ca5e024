"""The answer cache: a finished answer's frames, replayed for the same prompt and sampling.

The key holds the tenant, what the caller chose (tier or model), the prompt's messages
(which hold the sources' text) and every sampling parameter; the entry records the tenant's
index version, so ingesting or deleting documents orphans the tenant's cached answers. Only
clean answers are stored (finished by the model, not continued after a failure) and only at
low temperatures, where one answer stands for the distribution.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from groundwire.clients.chat import ChatMessage
from groundwire.clients.ports import Cache
from groundwire.server.pipeline.cache_writes import CacheWrites
from groundwire.server.pipeline.generation.types import (
    Citation,
    Delta,
    End,
    Finish,
    GenerationEvent,
    SourceInfo,
    Start,
)

log = logging.getLogger(__name__)
ANSWER_CACHE_FORMAT = 1  # bump when the stored layout changes
CACHEABLE_FINISHES = frozenset({Finish.STOP, Finish.MAX_TOKENS})


@dataclass(frozen=True)
class CachedAnswer:
    """A stored answer: the serving model, its sources, deltas and citations in order."""

    model: str
    sources: tuple[SourceInfo, ...]
    body: tuple[Delta | Citation, ...]
    finish: Finish


@dataclass(frozen=True)
class AnswerLookup:
    """Where a lookup leaves the request: the key to store under and the version it was
    computed at (None when the cache is bypassed), and a hit if any."""

    key: str | None
    version: int
    hit: CachedAnswer | None
    seconds: float


class AnswerCache:
    """Looks answers up and stores them, through the shared ``Cache`` port."""

    def __init__(
        self, cache: Cache | None, writes: CacheWrites, *, ttl_s: int, max_temperature: float
    ) -> None:
        self._cache = cache
        self._writes = writes
        self._ttl_s = ttl_s
        self._max_temperature = max_temperature

    @property
    def enabled(self) -> bool:
        """Whether a cache is configured at all."""
        return self._cache is not None

    def applies(self, temperature: float, use_cache: bool) -> bool:
        """Whether this request may read and write the cache."""
        return self._cache is not None and use_cache and temperature <= self._max_temperature

    def key(
        self,
        tenant: str,
        choice: str,
        messages: Sequence[ChatMessage],
        sampling: dict[str, Any],
    ) -> str:
        """The entry's key; the braces are the Redis Cluster hash tag of the tenant's version."""
        material = json.dumps(
            [
                ANSWER_CACHE_FORMAT,
                tenant,
                choice,
                [[m.role, m.content] for m in messages],
                sorted(sampling.items()),
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return f"ans:{{{tenant}}}:{hashlib.sha256(material.encode('utf-8')).hexdigest()}"

    async def lookup(self, tenant: str, key: str) -> AnswerLookup:
        """The cached answer for ``key`` at the tenant's current index version, if any."""
        started = time.perf_counter()
        found = await self._cache.get_versioned(tenant, key) if self._cache else None
        seconds = time.perf_counter() - started
        if found is None:  # Redis failed: neither read nor write this time
            return AnswerLookup(None, 0, None, seconds)
        version, raw = found
        hit = _decode(raw) if raw is not None else None
        return AnswerLookup(key, version, hit, seconds)

    def store(self, tenant: str, lookup: AnswerLookup, events: Sequence[GenerationEvent]) -> None:
        """Store a finished answer in the background, when it is a clean one."""
        if lookup.key is None:
            return
        start = next((e for e in events if isinstance(e, Start)), None)
        end = events[-1] if events else None
        if start is None or not isinstance(end, End):
            return
        if end.finish not in CACHEABLE_FINISHES or end.continued_after_failure:
            return
        body = [e for e in events if isinstance(e, Delta | Citation)]
        value = {
            "model": start.model,
            "sources": [asdict(s) for s in start.sources],
            "body": [["d", e.text] if isinstance(e, Delta) else ["c", asdict(e)] for e in body],
            "finish": end.finish.value,
        }
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._writes.submit(tenant, lookup.key, lookup.version, encoded, self._ttl_s)


def _decode(raw: bytes) -> CachedAnswer | None:
    """A stored answer, or None when the entry cannot be read (treated as a miss)."""
    try:
        value = json.loads(raw)
        body: list[Delta | Citation] = [
            Delta(item) if kind == "d" else Citation(**item) for kind, item in value["body"]
        ]
        return CachedAnswer(
            model=value["model"],
            sources=tuple(SourceInfo(**s) for s in value["sources"]),
            body=tuple(body),
            finish=Finish(value["finish"]),
        )
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("unreadable answer cache entry; treating as a miss", extra={"err": str(exc)})
        return None
