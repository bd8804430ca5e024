"""The contract's enums and ours, mapped once: the servicers read requests and write frames
with these, and the remote retrieval hop speaks the same contract to the store's owner."""

from __future__ import annotations

from groundwire.clients.models import SearchMode
from groundwire.server.pipeline.generation.types import Finish, Route, Tier
from groundwire.v1 import generation_pb2, retrieval_pb2

MODE_TO_DOMAIN = {
    retrieval_pb2.RETRIEVAL_MODE_DENSE: SearchMode.DENSE,
    retrieval_pb2.RETRIEVAL_MODE_SPARSE: SearchMode.SPARSE,
    retrieval_pb2.RETRIEVAL_MODE_HYBRID: SearchMode.HYBRID,
}
MODE_TO_PROTO = {v: k for k, v in MODE_TO_DOMAIN.items()}

TIER_TO_DOMAIN = {
    generation_pb2.TIER_UNSPECIFIED: Tier.STANDARD,
    generation_pb2.TIER_STANDARD: Tier.STANDARD,
    generation_pb2.TIER_ECONOMY: Tier.ECONOMY,
    generation_pb2.TIER_LONG_CONTEXT: Tier.LONG_CONTEXT,
}
TIER_TO_PROTO = {
    Tier.STANDARD: generation_pb2.TIER_STANDARD,
    Tier.ECONOMY: generation_pb2.TIER_ECONOMY,
    Tier.LONG_CONTEXT: generation_pb2.TIER_LONG_CONTEXT,
}
ROUTE_TO_PROTO = {
    Route.PRIMARY: generation_pb2.ROUTE_PRIMARY,
    Route.FALLBACK: generation_pb2.ROUTE_FALLBACK,
    Route.ECONOMY: generation_pb2.ROUTE_ECONOMY,
    Route.LONG_CONTEXT: generation_pb2.ROUTE_LONG_CONTEXT,
    Route.CACHE: generation_pb2.ROUTE_CACHE,
    Route.DEGRADED: generation_pb2.ROUTE_DEGRADED,
}
FINISH_TO_PROTO = {
    Finish.STOP: generation_pb2.FINISH_REASON_STOP,
    Finish.MAX_TOKENS: generation_pb2.FINISH_REASON_MAX_TOKENS,
    Finish.CANCELLED: generation_pb2.FINISH_REASON_CANCELLED,
    Finish.TIME_LIMIT: generation_pb2.FINISH_REASON_TIME_LIMIT,
    Finish.UPSTREAM_ERROR: generation_pb2.FINISH_REASON_UPSTREAM_ERROR,
    Finish.DEGRADED: generation_pb2.FINISH_REASON_DEGRADED,
    Finish.CONTENT_FILTER: generation_pb2.FINISH_REASON_CONTENT_FILTER,
}
