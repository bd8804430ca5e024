"""RetrievalService: validate, call the retrieval pipeline, build the response."""

from __future__ import annotations

from typing import Any

import grpc

from groundwire.server.context import require_tenant
from groundwire.server.pipeline.retrieval import RetrievalPipeline
from groundwire.server.proto_enums import MODE_TO_PROTO
from groundwire.server.servicers.frames import chunk_to_proto, duration
from groundwire.server.servicers.validation import RetrievalLimits, retrieval_query
from groundwire.server.settings import Settings
from groundwire.v1 import retrieval_pb2, retrieval_pb2_grpc


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    """Thin: no I/O of its own."""

    def __init__(self, pipeline: RetrievalPipeline, settings: Settings) -> None:
        self._pipeline = pipeline
        self._settings = settings

    async def Retrieve(
        self,
        request: retrieval_pb2.RetrieveRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> retrieval_pb2.RetrieveResponse:
        query = retrieval_query(request, RetrievalLimits.of(self._settings, self._pipeline))
        result = await self._pipeline.retrieve(require_tenant(), query)
        return retrieval_pb2.RetrieveResponse(
            chunks=[chunk_to_proto(c) for c in result.chunks],
            cache_hit=result.cache_hit,
            timings=retrieval_pb2.RetrievalTimings(
                cache=duration(result.cache_s),
                embed=duration(result.embed_s),
                search=duration(result.search_s),
                total=duration(result.total_s),
            ),
            embedder_id=result.embedder_id,
            mode=MODE_TO_PROTO[result.mode],
        )
