"""GenerationService: validate, run the generation pipeline, write its events as frames."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from groundwire.server.context import require_tenant
from groundwire.server.pipeline.generation.pipeline import GenerationPipeline
from groundwire.server.pipeline.remote_retrieval import remember_call
from groundwire.server.pipeline.retriever import Retriever
from groundwire.server.servicers.frames import event_to_proto
from groundwire.server.servicers.validation import RetrievalLimits, generation_request
from groundwire.server.settings import Settings
from groundwire.v1 import generation_pb2, generation_pb2_grpc


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    """Thin: no I/O of its own.

    ``Generate`` writes frames with ``context.write`` rather than yielding them: a caller's
    cancel then arrives inside this coroutine (not in gRPC's own send loop, where an async
    generator would be left suspended) and closes the pipeline, and with it the upstream
    connection, at once.
    """

    def __init__(
        self, pipeline: GenerationPipeline, retrieval: Retriever, settings: Settings
    ) -> None:
        self._pipeline = pipeline
        self._retrieval = retrieval
        self._settings = settings

    async def Generate(  # type: ignore[override]
        self,
        request: generation_pb2.GenerateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        query = generation_request(
            request,
            catalog=self._pipeline.routes.catalog,
            limits=RetrievalLimits.of(self._settings, self._retrieval),
            default_first_token_timeout_s=self._settings.llm_first_token_timeout_s,
        )
        remember_call(context)  # a remote retrieval hop forwards from this call
        remaining = context.time_remaining()
        deadline_at = None
        if remaining is not None:
            margin = min(self._settings.deadline_margin_s, remaining / 10)
            deadline_at = asyncio.get_running_loop().time() + remaining - margin
        events = self._pipeline.generate(require_tenant(), query, deadline_at=deadline_at)
        async with contextlib.aclosing(events):
            async for event in events:
                await context.write(event_to_proto(event))
