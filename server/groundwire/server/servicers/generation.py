"""GenerationService: not implemented until the generation slice lands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from groundwire.clients.errors import NotImplementedRPCError
from groundwire.v1 import generation_pb2, generation_pb2_grpc


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    """Answers UNIMPLEMENTED with ErrorInfo reason ERROR_REASON_NOT_IMPLEMENTED."""

    async def Generate(
        self,
        request: generation_pb2.GenerateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[generation_pb2.GenerateResponse]:
        raise NotImplementedRPCError("Generate is not implemented by this server yet")
        yield  # pragma: no cover - makes this an async generator, as the RPC streams
