"""Typed errors of the groundwire SDK, decoded from the server's rich ``google.rpc.Status``.

Every failed call raises a :class:`GroundwireError` (or one of its subclasses, chosen by the
gRPC status code) instead of a raw :class:`grpc.RpcError`; the original error is kept as
``__cause__``. The server attaches a ``google.rpc.ErrorInfo`` (domain ``groundwire.v1``, a
reason from the ``ErrorReason`` enum, ``correlation_id`` in its metadata) to every failure,
plus a ``google.rpc.BadRequest``, ``google.rpc.QuotaFailure`` or ``google.rpc.RetryInfo``
where they apply::

    try:
        client.retrieve("")
    except InvalidArgument as error:
        for violation in error.field_violations:
            print(violation.field, violation.description)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "CORRELATION_ID_KEY",
    "ERROR_DOMAIN",
    "REASON_UNSPECIFIED",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "GroundwireError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "QuotaViolation",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "cancelled_locally",
    "from_rpc_error",
    "from_status",
]

#: The ``ErrorInfo.domain`` of every error groundwire sends.
ERROR_DOMAIN = "groundwire.v1"
#: The reason of an error that carried no ``ErrorInfo`` (for example one raised by the
#: transport, or a call the client cancelled itself).
REASON_UNSPECIFIED = "ERROR_REASON_UNSPECIFIED"
#: The metadata key of the correlation id, in requests, response headers and trailers.
CORRELATION_ID_KEY = "x-correlation-id"
_DETAILS_KEY = "grpc-status-details-bin"
_CODES_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One offending request field of a ``google.rpc.BadRequest``."""

    #: The field's proto path, for example ``temperature`` or ``retrieval.top_k``.
    field: str
    #: Why the value was rejected.
    description: str


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    """One spent quota of a ``google.rpc.QuotaFailure`` (reason ``ERROR_REASON_QUOTA_EXCEEDED``)."""

    #: The quota's name: ``requests_per_minute``, ``llm_tokens_per_minute`` or
    #: ``spend_micros_per_day`` (the names ``GetCapabilities`` lists).
    subject: str
    #: What was exceeded, in words.
    description: str


class GroundwireError(Exception):
    """A failed groundwire call: the gRPC status and the rich details the server attached.

    Attributes:
        code: The gRPC status code.
        message: The status message (``grpc.RpcError.details()``).
        reason: The ``ErrorInfo.reason``, a name of the ``ErrorReason`` enum such as
            ``ERROR_REASON_INVALID_FIELD``; :data:`REASON_UNSPECIFIED` when the status carried
            no ``ErrorInfo``. Switch on this, not on the message.
        domain: The ``ErrorInfo.domain`` (``groundwire.v1``), or empty.
        metadata: The ``ErrorInfo.metadata``.
        correlation_id: The id to quote when reporting the failure: the ``ErrorInfo``'s, else
            the one the server echoed in the trailers, else the one the client sent.
        field_violations: The offending fields of a ``BadRequest`` detail, if any.
        quota_violations: The spent quotas of a ``QuotaFailure`` detail, if any.
        retry_after: The delay a ``RetryInfo`` detail suggests before retrying, in seconds.
        status: The decoded ``google.rpc.Status``, or ``None`` when there was none.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = REASON_UNSPECIFIED,
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        field_violations: Iterable[FieldViolation] = (),
        quota_violations: Iterable[QuotaViolation] = (),
        retry_after: float | None = None,
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.correlation_id = correlation_id
        self.field_violations: list[FieldViolation] = list(field_violations)
        self.quota_violations: list[QuotaViolation] = list(quota_violations)
        self.retry_after = retry_after
        self.status = status

    @property
    def retryable(self) -> bool:
        """True when the same call may succeed later (UNAVAILABLE or RESOURCE_EXHAUSTED)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        extras = []
        if self.reason != REASON_UNSPECIFIED:
            extras.append(self.reason)
        extras += [f"{v.field}: {v.description}" for v in self.field_violations]
        extras += [f"{v.subject}: {v.description}" for v in self.quota_violations]
        if self.retry_after is not None:
            extras.append(f"retry after {self.retry_after:g}s")
        if self.correlation_id:
            extras.append(f"correlation id {self.correlation_id}")
        return f"{text} ({'; '.join(extras)})" if extras else text

    def describe(self) -> str:
        """The error for a person to read, one fact a line (``str()`` packs them in one line).

        The code and message first, then each offending field and spent quota indented, the
        suggested retry delay, and last the reason and the correlation id to quote::

            INVALID_ARGUMENT: invalid request: top_k: must be between 1 and 100
              top_k: must be between 1 and 100
              reason ERROR_REASON_INVALID_FIELD, correlation id 3f9c…
        """
        lines = [f"{self.code.name}: {self.message}"]
        lines += [f"  {v.field}: {v.description}" for v in self.field_violations]
        lines += [f"  quota {v.subject}: {v.description}" for v in self.quota_violations]
        if self.retry_after is not None:
            lines.append(f"  retry after {self.retry_after:g} s")
        tail = []
        if self.reason != REASON_UNSPECIFIED:
            tail.append(f"reason {self.reason}")
        if self.correlation_id:
            tail.append(f"correlation id {self.correlation_id}")
        if tail:
            lines.append(f"  {', '.join(tail)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, message={self.message!r}, "
            f"reason={self.reason!r}, correlation_id={self.correlation_id!r})"
        )


class Cancelled(GroundwireError):
    """The call was cancelled (gRPC CANCELLED), usually by the client itself."""


class InvalidArgument(GroundwireError):
    """A request field is missing, malformed, out of range or too large (INVALID_ARGUMENT).

    ``field_violations`` names each offending field.
    """


class DeadlineExceeded(GroundwireError):
    """The call's deadline expired before the work could finish (DEADLINE_EXCEEDED)."""


class NotFound(GroundwireError):
    """Something the call named does not exist (NOT_FOUND)."""


class AlreadyExists(GroundwireError):
    """Something the call would create already exists (ALREADY_EXISTS)."""


class PermissionDenied(GroundwireError):
    """The caller may not do this (PERMISSION_DENIED)."""


class ResourceExhausted(GroundwireError):
    """A rate limit or quota was hit (RESOURCE_EXHAUSTED); see ``retry_after``."""


class FailedPrecondition(GroundwireError):
    """The server is not in a state to serve the call (FAILED_PRECONDITION)."""


class Aborted(GroundwireError):
    """The call was aborted (ABORTED)."""


class Unimplemented(GroundwireError):
    """The server does not implement this call (UNIMPLEMENTED)."""


class Internal(GroundwireError):
    """An unexpected server fault (INTERNAL); quote ``correlation_id`` when reporting it."""


class Unavailable(GroundwireError):
    """The server or one of its dependencies is unavailable (UNAVAILABLE); retry with backoff."""


class Unauthenticated(GroundwireError):
    """The call carried no credentials, or ones the server does not accept (UNAUTHENTICATED)."""


_CLASSES: dict[grpc.StatusCode, type[GroundwireError]] = {
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def _error_class(code: grpc.StatusCode) -> type[GroundwireError]:
    return _CLASSES.get(code, GroundwireError)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def from_status(
    status: status_pb2.Status,
    *,
    correlation_id: str | None = None,
) -> GroundwireError:
    """The typed error for a ``google.rpc.Status`` message (its code must not be OK).

    ``correlation_id`` is used when the status carries none in its ``ErrorInfo``.
    """
    number = int(status.code)
    code = _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
    reason, domain = REASON_UNSPECIFIED, ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    quotas: list[QuotaViolation] = []
    retry_after: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = str(info.reason) or REASON_UNSPECIFIED
            domain = str(info.domain)
            metadata = {str(k): str(v) for k, v in info.metadata.items()}
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations += [
                FieldViolation(str(v.field), str(v.description))
                for v in bad_request.field_violations
            ]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota_failure = error_details_pb2.QuotaFailure()
            detail.Unpack(quota_failure)
            quotas += [
                QuotaViolation(str(v.subject), str(v.description)) for v in quota_failure.violations
            ]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            if retry.HasField("retry_delay"):
                delay = retry.retry_delay
                retry_after = int(delay.seconds) + int(delay.nanos) / 1e9
    return _error_class(code)(
        code,
        str(status.message),
        reason=reason,
        domain=domain,
        metadata=metadata,
        correlation_id=metadata.get("correlation_id") or correlation_id,
        field_violations=violations,
        quota_violations=quotas,
        retry_after=retry_after,
        status=status,
    )


def _trailing_metadata(error: grpc.RpcError) -> list[tuple[str, str | bytes]]:
    try:
        trailers = error.trailing_metadata()
    except Exception:  # an RpcError that is not a call carries no metadata
        return []
    # Sync calls give (key, value) namedtuples, grpc.aio a Metadata of pairs.
    pairs = cast(Iterable[tuple[str, str | bytes]], trailers or ())
    return [(str(key), value) for key, value in pairs]


def from_rpc_error(error: grpc.RpcError, *, correlation_id: str | None = None) -> GroundwireError:
    """The typed error for a failed call (sync or ``grpc.aio``), with ``error`` as its cause.

    The rich status is read from the ``grpc-status-details-bin`` trailer with
    ``grpc_status.rpc_status.from_call``; without one (or when it contradicts the call's own
    code) the error is built from the gRPC code and message alone. ``correlation_id``, the id
    the client sent, is the last fallback for :attr:`GroundwireError.correlation_id`.
    """
    trailers = _trailing_metadata(error)
    echoed = next((_text(v) for k, v in trailers if k == CORRELATION_ID_KEY), None)
    fallback = echoed or correlation_id
    status: status_pb2.Status | None = None
    if any(key == _DETAILS_KEY for key, _ in trailers):
        try:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
        except Exception:  # a malformed or inconsistent status: use the code alone
            status = None
    if status is not None:
        result = from_status(status, correlation_id=fallback)
    else:
        try:
            code = error.code()
            message = error.details() or ""
        except Exception:  # not a call at all
            code, message = grpc.StatusCode.UNKNOWN, str(error)
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.UNKNOWN
        result = _error_class(code)(code, message, correlation_id=fallback)
    result.__cause__ = error
    return result


def cancelled_locally(correlation_id: str | None, cause: BaseException | None = None) -> Cancelled:
    """The error for a call the client cancelled itself (there is no server status)."""
    error = Cancelled(
        grpc.StatusCode.CANCELLED,
        "the call was cancelled by the client",
        correlation_id=correlation_id,
    )
    error.__cause__ = cause
    return error
