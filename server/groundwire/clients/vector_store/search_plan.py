"""How both vector stores search alike: the conditions every search carries (the tenant,
then the metadata filters), the RRF constant and prefetch depth of a hybrid search, and the
order of the hits.

Conditions are ours until an adapter turns them into its engine's filter, so Qdrant Edge and
``qdrant-client`` scope every call to the tenant the same way and refuse the same filters
(which request validation already refused: see ``models.is_metadata_field_name``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from groundwire.clients.models import FieldMatch, MetadataScalar, ScoredChunk
from groundwire.clients.vector_store.payload import META_KEY, TENANT_KEY

# Qdrant's own default RRF constant (server and qdrant-client's local mode both use 2). Edge
# wants it spelled out, so both adapters name it here and fuse identically.
RRF_K = 2

# A metadata key becomes part of a JSON path. Plain names go in as they are (``meta.lang``);
# others (``source.kind``, ``2020``) are quoted so a dot or bracket cannot name another
# field. A quote or backslash cannot be quoted, so such keys are refused.
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_QUOTABLE_KEY = re.compile(r'^[^"\\\x00-\x1f]{1,128}$')


@dataclass(frozen=True)
class Condition:
    """One "payload key equals one of values" condition, before it becomes a vendor type."""

    key: str
    values: tuple[MetadataScalar, ...]


def ranked(chunks: list[ScoredChunk]) -> list[ScoredChunk]:
    """Best first, ties broken by chunk id: RRF gives many exact ties (a chunk ranked n-th by
    one retriever only scores the same as another ranked n-th by the other), and the engine
    returns tied hits in no fixed order, which would make answers and cache entries vary."""
    return sorted(chunks, key=lambda c: (-c.score, c.record.chunk_id))


def prefetch_limit(limit: int) -> int:
    """How many candidates each hybrid branch hands to RRF: enough that a chunk ranked
    moderately by both branches can still win the fusion."""
    return max(limit * 4, 50)


def tenant_condition(tenant: str) -> Condition:
    """The condition every read and write carries."""
    if not tenant:
        raise ValueError("tenant must not be empty")
    return Condition(TENANT_KEY, (tenant,))


def metadata_condition(match: FieldMatch) -> Condition:
    """The condition for a filter on document metadata (stored under ``meta``)."""
    if not _QUOTABLE_KEY.fullmatch(match.field):
        raise ValueError(f"metadata field {match.field!r} cannot be filtered on")
    if not match.values:
        raise ValueError(f"filter on {match.field!r} has no values")
    # bool is an int to Python but a different JSON type to Qdrant; a filter must not mix
    # kinds either, since MatchAny takes a list of one kind.
    if any(isinstance(v, bool) for v in match.values):
        raise ValueError(f"filter on {match.field!r}: values must be str or int, not bool")
    kinds = {type(v) for v in match.values}
    if len(kinds) != 1 or not kinds <= {str, int}:
        raise ValueError(f"filter on {match.field!r}: values must be all str or all int")
    key = match.field if _PLAIN_KEY.fullmatch(match.field) else f'"{match.field}"'
    return Condition(f"{META_KEY}.{key}", tuple(match.values))


def search_conditions(tenant: str, filters: Sequence[FieldMatch]) -> list[Condition]:
    """The tenant condition followed by one condition per metadata filter (all must hold)."""
    return [tenant_condition(tenant), *(metadata_condition(f) for f in filters)]
