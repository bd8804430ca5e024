"""CapabilitiesService: what this server offers."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import grpc
from google.protobuf import duration_pb2

from groundwire.clients.breaker import BreakerState
from groundwire.server.context import current_tenant
from groundwire.server.pipeline.generation.routing import ModelRoutes
from groundwire.server.pipeline.retriever import Retriever
from groundwire.server.proto_enums import MODE_TO_PROTO, TIER_TO_PROTO
from groundwire.server.quotas import Quotas, QuotaStatus
from groundwire.server.servicers.validation import MAX_CONTEXT_PASSAGES
from groundwire.server.settings import Settings
from groundwire.v1 import capabilities_pb2, capabilities_pb2_grpc

BREAKER_TO_PROTO = {
    BreakerState.CLOSED: capabilities_pb2.BREAKER_STATE_CLOSED,
    BreakerState.OPEN: capabilities_pb2.BREAKER_STATE_OPEN,
    BreakerState.HALF_OPEN: capabilities_pb2.BREAKER_STATE_HALF_OPEN,
}


def server_version() -> str:
    """The installed distribution's version."""
    try:
        return metadata.version("groundwire")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class CapabilitiesServicer(capabilities_pb2_grpc.CapabilitiesServiceServicer):
    """Reports embedder, retrieval modes, the model catalog with live breaker states, tiers,
    limits, features and the calling tenant's quotas with what is left of them."""

    def __init__(
        self,
        retrieval: Retriever,
        routes: ModelRoutes,
        settings: Settings,
        *,
        cache_enabled: bool,
        quotas: Quotas | None = None,
    ) -> None:
        """``quotas``: the tenant quotas whose state each caller sees for itself."""
        self._routes = routes
        self._quotas = quotas
        catalog = routes.catalog
        self._static = capabilities_pb2.GetCapabilitiesResponse(
            server_version=server_version(),
            embedder_id=retrieval.embedder_id,
            retrieval_modes=[MODE_TO_PROTO[m] for m in retrieval.supported_modes],
            tiers=[
                capabilities_pb2.TierInfo(tier=TIER_TO_PROTO[tier], chain=list(chain))
                for tier, chain in catalog.tiers.items()
                if chain
            ],
            limits=capabilities_pb2.Limits(
                max_top_k=settings.max_top_k,
                max_query_chars=settings.max_query_chars,
                max_document_bytes=settings.max_document_bytes,
                max_message_bytes=settings.max_message_bytes,
                max_context_passages=MAX_CONTEXT_PASSAGES,
            ),
            features={
                # What this process serves (GROUNDWIRE_SERVICES).
                "retrieval": settings.serves_retrieval,
                "retrieval_cache": cache_enabled,
                "ingest": settings.serves_retrieval,
                "generation": settings.serves_generation,
                # False: every answer is a degraded, extractive one.
                "llm": not catalog.empty,
                "answer_cache": cache_enabled and not catalog.empty,
            },
        )

    async def GetCapabilities(
        self,
        request: capabilities_pb2.GetCapabilitiesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> capabilities_pb2.GetCapabilitiesResponse:
        response = capabilities_pb2.GetCapabilitiesResponse()
        response.CopyFrom(self._static)
        for name, spec in self._routes.catalog.models.items():
            response.models.append(
                capabilities_pb2.ModelInfo(
                    name=name,
                    upstream_model=spec.upstream_model,
                    context_window=spec.context_window,
                    max_output_tokens=spec.max_output_tokens,
                    input_micros_per_million=spec.input_micros_per_million,
                    output_micros_per_million=spec.output_micros_per_million,
                    currency=spec.currency,
                    breaker=BREAKER_TO_PROTO[self._routes.breakers[name].state],
                )
            )
        tenant = current_tenant()
        if self._quotas is not None and tenant is not None:
            response.quotas.extend(quota_to_proto(q) for q in await self._quotas.status(tenant))
        return response


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromMilliseconds(round(seconds * 1000))
    return out


def quota_to_proto(quota: QuotaStatus) -> capabilities_pb2.Quota:
    """One of the caller's quotas as GetCapabilities reports it."""
    return capabilities_pb2.Quota(
        name=quota.name.value,
        limit=quota.limit,
        remaining=quota.remaining,
        window=_duration(quota.window_s),
        resets_in=_duration(quota.resets_in_s),
        shared=quota.shared,
        currency=quota.currency,
    )
