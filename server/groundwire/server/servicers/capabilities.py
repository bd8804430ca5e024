"""CapabilitiesService: what this server offers."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import grpc

from groundwire.server.pipeline.retrieval import RetrievalPipeline
from groundwire.server.servicers.convert import MODE_TO_PROTO
from groundwire.server.settings import Settings
from groundwire.v1 import capabilities_pb2, capabilities_pb2_grpc

MAX_CONTEXT_PASSAGES = 64


def server_version() -> str:
    """The installed distribution's version."""
    try:
        return metadata.version("groundwire")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class CapabilitiesServicer(capabilities_pb2_grpc.CapabilitiesServiceServicer):
    """Reports embedder, retrieval modes, limits and features. Models and tiers stay empty
    until the generation slice lands."""

    def __init__(
        self, retrieval: RetrievalPipeline, settings: Settings, *, cache_enabled: bool
    ) -> None:
        self._response = capabilities_pb2.GetCapabilitiesResponse(
            server_version=server_version(),
            embedder_id=retrieval.embedder_id,
            retrieval_modes=[MODE_TO_PROTO[m] for m in retrieval.supported_modes],
            limits=capabilities_pb2.Limits(
                max_top_k=settings.max_top_k,
                max_query_chars=settings.max_query_chars,
                max_document_bytes=settings.max_document_bytes,
                max_message_bytes=settings.max_message_bytes,
                max_context_passages=MAX_CONTEXT_PASSAGES,
            ),
            features={
                "retrieval": True,
                "retrieval_cache": cache_enabled,
                "ingest": True,
                "generation": False,
                "answer_cache": False,
            },
        )

    async def GetCapabilities(
        self,
        request: capabilities_pb2.GetCapabilitiesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> capabilities_pb2.GetCapabilitiesResponse:
        return self._response
