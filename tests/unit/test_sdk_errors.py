"""The SDK's typed errors, decoded from ``google.rpc.Status`` messages built by hand."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from groundwire.sdk import AsyncClient, Client, errors
from groundwire.sdk.errors import FieldViolation, GroundwireError

DETAILS_KEY = "grpc-status-details-bin"
CODES = {code.value[0]: code for code in grpc.StatusCode}


def _status(code: grpc.StatusCode, message: str, *details: object) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return status


def _error_info(reason: str, correlation_id: str = "cid-1") -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(
        reason=reason, domain="groundwire.v1", metadata={"correlation_id": correlation_id}
    )


class FakeCall(grpc.RpcError, grpc.Call):
    """What a failed sync call raises: an RpcError that is also a grpc.Call."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailers: Sequence[tuple[str, str | bytes]] = (),
    ) -> None:
        super().__init__()
        self._code, self._details, self._trailers = code, details, tuple(trailers)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:  # type: ignore[override]
        return self._trailers

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


def _sync_error(status: status_pb2.Status, *extra: tuple[str, str | bytes]) -> FakeCall:
    code = CODES[status.code]
    return FakeCall(code, status.message, [*extra, (DETAILS_KEY, status.SerializeToString())])


def _aio_error(status: status_pb2.Status) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        CODES[status.code],
        grpc.aio.Metadata(),
        grpc.aio.Metadata((DETAILS_KEY, status.SerializeToString())),
        status.message,
        None,
    )


def _bad_temperature() -> status_pb2.Status:
    return _status(
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid request: temperature: must be between 0 and 2",
        _error_info("ERROR_REASON_INVALID_FIELD", "cid-42"),
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="temperature", description="must be between 0 and 2"
                ),
                error_details_pb2.BadRequest.FieldViolation(
                    field="retrieval.top_k", description="must be at most 100"
                ),
            ]
        ),
    )


def test_invalid_argument_decodes_error_info_and_bad_request() -> None:
    cause = _sync_error(_bad_temperature())
    error = errors.from_rpc_error(cause, correlation_id="sent-id")
    assert isinstance(error, errors.InvalidArgument)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "invalid request: temperature: must be between 0 and 2"
    assert error.reason == "ERROR_REASON_INVALID_FIELD"
    assert error.domain == errors.ERROR_DOMAIN
    assert error.correlation_id == "cid-42"  # the ErrorInfo's wins over the one sent
    assert error.metadata == {"correlation_id": "cid-42"}
    assert error.field_violations == [
        FieldViolation("temperature", "must be between 0 and 2"),
        FieldViolation("retrieval.top_k", "must be at most 100"),
    ]
    assert error.retry_after is None
    assert not error.retryable
    assert error.__cause__ is cause
    assert (
        error.status is not None and error.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    )
    text = str(error)
    assert text.startswith("INVALID_ARGUMENT: invalid request")
    assert "ERROR_REASON_INVALID_FIELD" in text and "cid-42" in text


def test_aio_errors_decode_the_same_way() -> None:
    cause = _aio_error(_bad_temperature())
    error = errors.from_rpc_error(cause)
    assert isinstance(error, errors.InvalidArgument)
    assert error.reason == "ERROR_REASON_INVALID_FIELD"
    assert [v.field for v in error.field_violations] == ["temperature", "retrieval.top_k"]
    assert error.__cause__ is cause


def test_retry_info_becomes_retry_after() -> None:
    delay = duration_pb2.Duration(seconds=1, nanos=500_000_000)
    status = _status(
        grpc.StatusCode.UNAVAILABLE,
        "every model failed",
        _error_info("ERROR_REASON_LLM_UNAVAILABLE"),
        error_details_pb2.RetryInfo(retry_delay=delay),
    )
    error = errors.from_rpc_error(_sync_error(status))
    assert isinstance(error, errors.Unavailable)
    assert error.reason == "ERROR_REASON_LLM_UNAVAILABLE"
    assert error.retry_after == pytest.approx(1.5)
    assert error.retryable
    assert error.field_violations == []
    assert "retry after 1.5s" in str(error)


def test_rate_limited_is_resource_exhausted() -> None:
    status = _status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "rate limited",
        _error_info("ERROR_REASON_RATE_LIMITED"),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2)),
    )
    error = errors.from_status(status)
    assert isinstance(error, errors.ResourceExhausted)
    assert error.retry_after == 2.0
    assert error.retryable


def test_quota_failure_names_the_spent_quota() -> None:
    status = _status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "quota exceeded: 60 requests per minute",
        _error_info("ERROR_REASON_QUOTA_EXCEEDED", "cid-q"),
        error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject="requests_per_minute", description="60 requests per minute"
                )
            ]
        ),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=12)),
    )
    error = errors.from_status(status)
    assert isinstance(error, errors.ResourceExhausted)
    assert error.reason == "ERROR_REASON_QUOTA_EXCEEDED"
    assert error.quota_violations == [
        errors.QuotaViolation("requests_per_minute", "60 requests per minute")
    ]
    assert error.retry_after == 12.0
    assert "requests_per_minute: 60 requests per minute" in str(error)


def test_status_without_details_uses_the_code_and_the_echoed_correlation_id() -> None:
    cause = FakeCall(
        grpc.StatusCode.UNAUTHENTICATED, "invalid API key", [("x-correlation-id", "echoed")]
    )
    error = errors.from_rpc_error(cause, correlation_id="sent")
    assert isinstance(error, errors.Unauthenticated)
    assert error.reason == errors.REASON_UNSPECIFIED
    assert error.domain == ""
    assert error.correlation_id == "echoed"
    assert error.status is None
    assert str(error) == "UNAUTHENTICATED: invalid API key (correlation id echoed)"


def test_transport_error_falls_back_to_the_sent_correlation_id() -> None:
    error = errors.from_rpc_error(
        FakeCall(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), correlation_id="sent"
    )
    assert isinstance(error, errors.DeadlineExceeded)
    assert error.correlation_id == "sent"


def test_status_contradicting_the_call_is_ignored() -> None:
    # grpc_status refuses a details trailer whose code differs from the call's own.
    status = _status(grpc.StatusCode.INTERNAL, "boom", _error_info("ERROR_REASON_INTERNAL"))
    cause = FakeCall(
        grpc.StatusCode.UNAVAILABLE, "boom", [(DETAILS_KEY, status.SerializeToString())]
    )
    error = errors.from_rpc_error(cause)
    assert isinstance(error, errors.Unavailable)
    assert error.reason == errors.REASON_UNSPECIFIED


def test_malformed_details_trailer_is_ignored() -> None:
    cause = FakeCall(grpc.StatusCode.INTERNAL, "boom", [(DETAILS_KEY, b"\xff\xff not a proto")])
    error = errors.from_rpc_error(cause, correlation_id="sent")
    assert isinstance(error, errors.Internal)
    assert error.correlation_id == "sent"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.CANCELLED, errors.Cancelled),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.UNIMPLEMENTED, errors.Unimplemented),
        (grpc.StatusCode.INTERNAL, errors.Internal),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.DATA_LOSS, GroundwireError),
        (grpc.StatusCode.UNKNOWN, GroundwireError),
    ],
)
def test_subclass_by_code(code: grpc.StatusCode, cls: type[GroundwireError]) -> None:
    error = errors.from_status(_status(code, "x", _error_info("ERROR_REASON_INTERNAL")))
    assert type(error) is cls
    assert error.code is code


def test_unknown_numeric_code_is_unknown() -> None:
    error = errors.from_status(status_pb2.Status(code=99, message="from the future"))
    assert type(error) is GroundwireError
    assert error.code is grpc.StatusCode.UNKNOWN


def test_cancelled_locally() -> None:
    cause = RuntimeError("cancelled")
    error = errors.cancelled_locally("sent", cause)
    assert isinstance(error, errors.Cancelled)
    assert error.code is grpc.StatusCode.CANCELLED
    assert error.correlation_id == "sent"
    assert error.__cause__ is cause


def test_sync_client_raises_typed_errors() -> None:
    # Nothing listens on port 1: the transport's UNAVAILABLE arrives as a typed error.
    with Client("127.0.0.1:1", api_key="k", timeout=5) as client:
        with pytest.raises(errors.Unavailable) as caught:
            client.capabilities(correlation_id="mine")
        assert caught.value.correlation_id == "mine"
        assert isinstance(caught.value.__cause__, grpc.RpcError)
        stream = client.generate("Why?")
        with pytest.raises(errors.Unavailable):
            next(stream)
        assert stream.done and isinstance(stream.error, errors.Unavailable)


async def test_async_client_raises_typed_errors() -> None:
    async with AsyncClient("127.0.0.1:1", api_key="k", timeout=5) as client:
        with pytest.raises(errors.Unavailable) as caught:
            await client.retrieve("why", top_k=3)
        assert len(caught.value.correlation_id or "") == 32  # a generated uuid4().hex
        assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
        with pytest.raises(errors.Unavailable):
            async for _ in client.generate("Why?"):
                pass


def test_describe_puts_one_fact_on_each_line() -> None:
    error = errors.from_rpc_error(_sync_error(_bad_temperature()))
    assert error.describe().splitlines() == [
        "INVALID_ARGUMENT: invalid request: temperature: must be between 0 and 2",
        "  temperature: must be between 0 and 2",
        "  retrieval.top_k: must be at most 100",
        "  reason ERROR_REASON_INVALID_FIELD, correlation id cid-42",
    ]
    bare = GroundwireError(grpc.StatusCode.UNAVAILABLE, "down", retry_after=0.2)
    assert bare.describe() == "UNAVAILABLE: down\n  retry after 0.2 s"
