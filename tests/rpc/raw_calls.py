"""Calls that send raw bytes, as a broken or hostile client would.

A client stream goes through grpc's synchronous API in a worker thread: when the server ends
a client stream early (it refused a message), grpc.aio's client may report ``INTERNAL:
Internal error from Core`` instead of the server's status if a later write fails first
(grpc/grpc#36066). The synchronous client reports the server's status, so a test sees what
the server sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc


def same(data: bytes) -> bytes:
    """The identity serializer: bytes go on the wire as they are."""
    return data


async def stream_unary(
    target: str,
    method: str,
    messages: Sequence[bytes],
    metadata: Sequence[tuple[str, str]],
    call_timeout_s: float,
) -> bytes:
    """Send ``messages`` as a client stream to ``method``; the response's bytes, or the
    call's ``grpc.RpcError`` (also a ``grpc.Call``: code, details, trailing metadata)."""

    def call() -> bytes:
        with grpc.insecure_channel(target) as channel:
            multi = channel.stream_unary(
                method, request_serializer=same, response_deserializer=same
            )
            response: bytes = multi(iter(messages), metadata=metadata, timeout=call_timeout_s)
            return response

    return await asyncio.to_thread(call)
