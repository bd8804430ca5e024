"""Our exceptions as ``google.rpc.Status``: the one place errors become gRPC statuses."""

from __future__ import annotations

from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from groundwire.clients.errors import GroundwireError, InvalidArgumentError, QuotaExceededError
from groundwire.v1 import errors_pb2

ERROR_DOMAIN = "groundwire.v1"


def _reason_name(reason: str) -> str:
    # Validate against the contract's enum so a typo cannot reach a caller.
    errors_pb2.ErrorReason.Value(reason)
    return reason


def build_status(error: GroundwireError, correlation_id: str) -> status_pb2.Status:
    """The rich status for ``error``: ErrorInfo always, BadRequest and RetryInfo where apt."""
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
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
                    field=v.field, description=v.description
                )
                for v in error.violations
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
