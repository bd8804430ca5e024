"""RetrievalService and DocumentService of a worker that does not own the Edge shard: each
call goes on, as it came, to the owner over its Unix socket, and the owner's answer (or
error, details intact) comes back.

The front worker has already authenticated the caller and charged its quota; the owner
trusts the tenant it names and charges nothing (see :mod:`groundwire.server.owner_socket`).
An ingest stream is relayed message by message: the owner writes each batch whole, exactly
as for a direct caller, and a stream that breaks here (a malformed message) is cancelled
there, so the owner drops its unwritten batch just as it would for a direct caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from groundwire.server.context import require_tenant
from groundwire.server.pipeline.remote_retrieval import Hop, remote_error
from groundwire.v1 import documents_pb2, documents_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc


class ForwardingRetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    """Retrieve, answered by the shard's owner."""

    def __init__(self, hop: Hop) -> None:
        self._hop = hop

    async def Retrieve(
        self,
        request: retrieval_pb2.RetrieveRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> retrieval_pb2.RetrieveResponse:
        try:
            return await self._hop.retrieval.Retrieve(
                request,
                metadata=self._hop.metadata(require_tenant(), context),
                timeout=self._hop.timeout(context),
            )
        except grpc.aio.AioRpcError as error:
            raise remote_error(error) from None


class ForwardingDocumentServicer(documents_pb2_grpc.DocumentServiceServicer):
    """IngestDocuments and DeleteDocuments, carried out by the shard's owner."""

    def __init__(self, hop: Hop) -> None:
        self._hop = hop

    async def IngestDocuments(
        self,
        request_iterator: AsyncIterator[documents_pb2.IngestDocumentsRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> documents_pb2.IngestDocumentsResponse:
        call = self._hop.documents.IngestDocuments(  # type: ignore[call-arg]
            metadata=self._hop.metadata(require_tenant(), context),
            timeout=self._hop.timeout(context),
        )
        try:
            async for request in request_iterator:
                if call.done():
                    break  # the owner ended the call (an error): reported below
                await call.write(request)
            await call.done_writing()
            return await call
        except grpc.aio.AioRpcError as error:
            raise remote_error(error) from None
        except BaseException:
            if call.done() and not call.cancelled():
                # The owner ended the call first (a write raced its end): its outcome stands.
                ended = await _finished_error(call)
                if ended is not None:
                    raise remote_error(ended) from None
            # The caller's stream broke or went away: the owner must see a cancelled
            # stream (its pending batch dropped), never a clean end that commits it.
            call.cancel()
            raise

    async def DeleteDocuments(
        self,
        request: documents_pb2.DeleteDocumentsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> documents_pb2.DeleteDocumentsResponse:
        try:
            return await self._hop.documents.DeleteDocuments(
                request,
                metadata=self._hop.metadata(require_tenant(), context),
                timeout=self._hop.timeout(context),
            )
        except grpc.aio.AioRpcError as error:
            raise remote_error(error) from None


async def _finished_error(call: Any) -> grpc.aio.AioRpcError | None:
    """The error a finished call ended with, if it ended with one."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    except BaseException:
        return None
    return None
