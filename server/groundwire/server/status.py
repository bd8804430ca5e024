"""Our exceptions as ``google.rpc.Status``: the one place errors become gRPC statuses."""

from __future__ import annotations

from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from groundwire.clients.errors import GroundwireError, InvalidArgumentError, QuotaExceededError
from groundwire.v1 import errors_pb2

ERROR_DOMAIN = "groundwire.v1"
# A status travels in trailers, and gRPC clients refuse trailers over 8 KiB by default
# (the call fails RESOURCE_EXHAUSTED, "received metadata size exceeds soft limit", and the
# caller never sees our status). Texts that may echo a caller's input are cut to these many
# UTF-8 bytes, and a request that breaks one rule thousands of times (4,000 empty stop
# strings) gets its first violations only. Worst case: the message percent-encoded (3 bytes
# a byte) plus the details in base64, about 5.6 KiB.
MAX_MESSAGE_BYTES = 768
MAX_FIELD_BYTES = 128
MAX_DESCRIPTION_BYTES = 256
MAX_VIOLATIONS = 4


def _reason_name(reason: str) -> str:
    # Validate against the contract's enum so a typo cannot reach a caller.
    errors_pb2.ErrorReason.Value(reason)
    return reason


def _bounded(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary), marked."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "…"


def build_status(error: GroundwireError, correlation_id: str) -> status_pb2.Status:
    """The rich status for ``error``: ErrorInfo always, BadRequest and RetryInfo where apt."""
    status = status_pb2.Status(
        code=error.code.value[0], message=_bounded(error.message, MAX_MESSAGE_BYTES)
    )
    info = error_details_pb2.ErrorInfo(
        reason=_reason_name(error.reason),
        domain=ERROR_DOMAIN,
        metadata={"correlation_id": correlation_id},
    )
    status.details.add().Pack(info)
    if isinstance(error, InvalidArgumentError):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_bounded(v.field, MAX_FIELD_BYTES),
                    description=_bounded(v.description, MAX_DESCRIPTION_BYTES),
                )
                for v in error.violations[:MAX_VIOLATIONS]
            ]
        )
        status.details.add().Pack(bad_request)
    if isinstance(error, QuotaExceededError):
        status.details.add().Pack(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=error.quota, description=error.description
                    )
                ]
            )
        )
    if error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after_s * 1000))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def internal_status(correlation_id: str) -> status_pb2.Status:
    """An INTERNAL status that says nothing of the fault but how to find it in the logs."""
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (correlation id {correlation_id})",
    )
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(
            reason="ERROR_REASON_INTERNAL",
            domain=ERROR_DOMAIN,
            metadata={"correlation_id": correlation_id},
        )
    )
    return status
