"""Our own error tree. Vendor exceptions are re-raised as these (``raise ... from exc``).

Each error knows its ``reason`` (the name of a ``groundwire.v1.ErrorReason`` value) and the
gRPC status code it becomes; the mapping to ``google.rpc.Status`` happens in exactly one
place, the server's error interceptor.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: its proto path (``top_k``, ``filter.must[0].field``) and why."""

    field: str
    description: str


class GroundwireError(Exception):
    """Base of every error we raise on purpose."""

    reason: str = "ERROR_REASON_INTERNAL"
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class InvalidArgumentError(GroundwireError):
    """A request field is missing, malformed or out of range."""

    reason = "ERROR_REASON_INVALID_FIELD"
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation], *, reason: str | None = None) -> None:
        fields = ", ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {fields}")
        self.violations = violations
        if reason is not None:
            self.reason = reason

    @classmethod
    def of(cls, field: str, description: str) -> InvalidArgumentError:
        """One violation."""
        return cls([FieldViolation(field, description)])


class MalformedRequestError(GroundwireError):
    """The request body (or one message of a client stream) did not decode as the RPC's
    message: not protobuf, truncated, or a string field that is not valid UTF-8."""

    reason = "ERROR_REASON_MALFORMED_REQUEST"
    code = grpc.StatusCode.INVALID_ARGUMENT


class QuotaExceededError(GroundwireError):
    """One of the tenant's quotas is spent until ``retry_after_s`` from now.

    ``quota`` is the quota's name (``requests_per_minute``, ``llm_tokens_per_minute``,
    ``spend_micros_per_day``), sent as the ``QuotaFailure`` violation's subject.
    """

    reason = "ERROR_REASON_QUOTA_EXCEEDED"
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, quota: str, description: str, *, retry_after_s: float) -> None:
        super().__init__(f"quota exceeded: {description}", retry_after_s=retry_after_s)
        self.quota = quota
        self.description = description


class UnauthenticatedError(GroundwireError):
    """The call carried no credentials, or credentials the server does not accept."""

    code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.reason = (
            "ERROR_REASON_MISSING_CREDENTIALS" if missing else "ERROR_REASON_INVALID_CREDENTIALS"
        )


class UpstreamUnavailableError(GroundwireError):
    """A system we depend on could not be reached or failed; safe to retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class EmbedderUnavailableError(UpstreamUnavailableError):
    """The embedding model or endpoint failed."""

    reason = "ERROR_REASON_EMBEDDER_UNAVAILABLE"


class VectorStoreUnavailableError(UpstreamUnavailableError):
    """The vector store failed."""

    reason = "ERROR_REASON_VECTOR_STORE_UNAVAILABLE"


class LLMUnavailableError(UpstreamUnavailableError):
    """Every LLM route failed before the first token."""

    reason = "ERROR_REASON_LLM_UNAVAILABLE"


class LLMCallError(LLMUnavailableError):
    """One call to one LLM endpoint failed. The pipeline routes around these; a caller sees
    one only as the cause of a later error.

    ``kind`` says what happened: ``rate_limited`` (HTTP 429), ``server_error`` (5xx),
    ``client_error`` (another 4xx), ``timeout`` (no bytes for too long), ``connection``
    (refused, reset), ``stream_cut`` (the stream ended without its terminator),
    ``upstream_error`` (an error event inside the stream), ``first_token_timeout``.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.kind = kind
        self.status = status


class RateLimitedError(GroundwireError):
    """An upstream rate limit that no fallback could absorb."""

    reason = "ERROR_REASON_RATE_LIMITED"
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class CacheError(GroundwireError):
    """Redis failed. Never reaches a caller: the cache wrapper bypasses itself instead."""

    code = grpc.StatusCode.UNAVAILABLE


class EmbedderMismatchError(GroundwireError):
    """The stored collection was built with another embedder or dimension."""

    reason = "ERROR_REASON_EMBEDDER_MISMATCH"
    code = grpc.StatusCode.FAILED_PRECONDITION


class SparseScopeUnavailableError(GroundwireError):
    """The Qdrant server cannot keep sparse scores to the tenant's own documents (before
    1.19, without a shard per tenant), so sparse and hybrid searches are refused. No retry
    helps: an operator must upgrade Qdrant or re-create the collection in distributed mode.
    The contract has no reason of its own for it yet; the vector store cannot serve it."""

    reason = "ERROR_REASON_VECTOR_STORE_UNAVAILABLE"
    code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceededError(GroundwireError):
    """The work could not finish before the call's deadline."""

    reason = "ERROR_REASON_DEADLINE_EXCEEDED"
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotImplementedRPCError(GroundwireError):
    """The RPC is in the contract but not implemented by this server yet."""

    reason = "ERROR_REASON_NOT_IMPLEMENTED"
    code = grpc.StatusCode.UNIMPLEMENTED


class ShuttingDownError(GroundwireError):
    """The server is draining and refuses new calls."""

    reason = "ERROR_REASON_SHUTTING_DOWN"
    code = grpc.StatusCode.UNAVAILABLE
