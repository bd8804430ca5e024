"""Request bodies that do not decode, turned into MALFORMED_REQUEST instead of grpc's UNKNOWN.

gRPC runs a handler's request deserializer before any of our code: an exception there
escapes into grpc itself, which logs a traceback without a correlation id and answers
UNKNOWN, before authentication, so an anonymous caller could flood the error log. The
interceptor wraps every handler's deserializer with :func:`tolerant`, and its call wrapper
passes the request through :func:`decoded` (or a client stream through
:func:`decoded_stream`) before anything else runs, so the call fails INVALID_ARGUMENT with
reason MALFORMED_REQUEST through the one error path. upb refuses strings that are not valid
UTF-8 as a DecodeError, so those land here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import DecodeError

from groundwire.clients.errors import MalformedRequestError


class _Undecodable:
    """What :func:`tolerant` hands on instead of a message whose bytes did not decode (with
    the parser's words for why)."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` that returns an :class:`_Undecodable` where it would raise."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            # upb's own words ("Wire format was corrupt", "String field had bad UTF-8") name
            # only the contract's message type: safe and useful to the caller.
            return _Undecodable(str(exc))
        except Exception:  # any other deserializer fault is the same thing to the caller
            return _Undecodable("the message did not decode")

    return deserialize


def decoded(request: Any) -> Any:
    """``request`` as decoded, or MalformedRequestError when its bytes were not a message."""
    if isinstance(request, _Undecodable):
        raise MalformedRequestError(f"malformed request message: {request.detail}")
    return request


async def decoded_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client stream whose undecodable message raises MalformedRequestError where it is
    reached, so the messages before it are handled as for any stream that fails there."""
    position = 0
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise MalformedRequestError(
                f"malformed request message {position} of the stream: {request.detail}"
            )
        yield request
        position += 1
