"""RetrievalService: validate, call the retrieval pipeline, build the response."""

from __future__ import annotations

from typing import Any

import grpc

from groundwire.server.context import require_tenant
from groundwire.server.pipeline.retrieval import RetrievalPipeline
from groundwire.server.servicers.convert import (
    MODE_TO_PROTO,
    chunk_to_proto,
    duration,
    retrieval_query,
)
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
        query = retrieval_query(
            request,
            query_text=request.query,
            supported_modes=self._pipeline.supported_modes,
            default_mode=self._pipeline.default_mode,
            default_top_k=self._settings.default_top_k,
            max_top_k=self._settings.max_top_k,
            max_query_chars=self._settings.max_query_chars,
        )
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
