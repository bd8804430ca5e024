package groundwire

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	groundwirev1 "github.com/groundwire/groundwire/sdks/go/gen/groundwire/v1"
)

func invalidTemperature(t *testing.T) error {
	t.Helper()
	st, err := status.New(codes.InvalidArgument, "temperature must be between 0 and 2").WithDetails(
		&errdetails.ErrorInfo{
			Reason:   "ERROR_REASON_INVALID_FIELD",
			Domain:   ErrorDomain,
			Metadata: map[string]string{"correlation_id": "abc123"},
		},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "temperature", Description: "must be between 0 and 2"},
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestFromErrorInvalidField(t *testing.T) {
	orig := invalidTemperature(t)
	err := FromError(orig)

	var gwErr *Error
	if !errors.As(err, &gwErr) {
		t.Fatalf("errors.As(*Error) failed for %T", err)
	}
	if gwErr.Code != codes.InvalidArgument {
		t.Errorf("Code = %v, want InvalidArgument", gwErr.Code)
	}
	if gwErr.Reason != "ERROR_REASON_INVALID_FIELD" || gwErr.Domain != ErrorDomain {
		t.Errorf("Reason, Domain = %q, %q", gwErr.Reason, gwErr.Domain)
	}
	if gwErr.ErrorReason() != groundwirev1.ErrorReason_ERROR_REASON_INVALID_FIELD {
		t.Errorf("ErrorReason() = %v", gwErr.ErrorReason())
	}
	if gwErr.CorrelationID != "abc123" {
		t.Errorf("CorrelationID = %q, want abc123", gwErr.CorrelationID)
	}
	if gwErr.Message != "temperature must be between 0 and 2" {
		t.Errorf("Message = %q", gwErr.Message)
	}
	want := []FieldViolation{{Field: "temperature", Description: "must be between 0 and 2"}}
	if len(gwErr.FieldViolations) != 1 || gwErr.FieldViolations[0] != want[0] {
		t.Errorf("FieldViolations = %+v, want %+v", gwErr.FieldViolations, want)
	}
	if _, ok := gwErr.Field("temperature"); !ok {
		t.Error("Field(temperature) not found")
	}
	if gwErr.RetryAfter != 0 || gwErr.Retryable() {
		t.Errorf("RetryAfter = %v, Retryable = %v; want 0, false", gwErr.RetryAfter, gwErr.Retryable())
	}
	// The original status stays reachable.
	if !errors.Is(err, orig) || errors.Unwrap(err) != orig {
		t.Error("the original error is not reachable through Unwrap")
	}
	if status.Code(err) != codes.InvalidArgument || gwErr.Status.Code() != codes.InvalidArgument {
		t.Errorf("status.Code = %v", status.Code(err))
	}
	if len(gwErr.Status.Details()) != 2 {
		t.Errorf("Status has %d details, want 2", len(gwErr.Status.Details()))
	}
	for _, part := range []string{"InvalidArgument", "ERROR_REASON_INVALID_FIELD", "temperature", "abc123"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("Error() = %q lacks %q", err.Error(), part)
		}
	}
	// Converting twice changes nothing.
	if again := FromError(err); again != err {
		t.Error("FromError(*Error) returned a new error")
	}
}

func TestFromErrorRetryInfo(t *testing.T) {
	st, err := status.New(codes.Unavailable, "no model could answer").WithDetails(
		&errdetails.ErrorInfo{Reason: "ERROR_REASON_LLM_UNAVAILABLE", Domain: ErrorDomain},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
	)
	if err != nil {
		t.Fatal(err)
	}
	var gwErr *Error
	if !errors.As(convertError(st.Err(), "sent", "echoed"), &gwErr) {
		t.Fatal("not an *Error")
	}
	if gwErr.RetryAfter != 1500*time.Millisecond || !gwErr.Retryable() {
		t.Errorf("RetryAfter = %v, Retryable = %v", gwErr.RetryAfter, gwErr.Retryable())
	}
	if gwErr.ErrorReason() != groundwirev1.ErrorReason_ERROR_REASON_LLM_UNAVAILABLE {
		t.Errorf("ErrorReason() = %v", gwErr.ErrorReason())
	}
	// No correlation_id in the ErrorInfo metadata: the echoed id is used.
	if gwErr.CorrelationID != "echoed" {
		t.Errorf("CorrelationID = %q, want echoed", gwErr.CorrelationID)
	}
}

func TestFromErrorQuotaFailure(t *testing.T) {
	st, err := status.New(codes.ResourceExhausted, "quota exceeded: 60 requests per minute").WithDetails(
		&errdetails.ErrorInfo{Reason: "ERROR_REASON_QUOTA_EXCEEDED", Domain: ErrorDomain},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{
			{Subject: "requests_per_minute", Description: "60 requests per minute"},
		}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(12 * time.Second)},
	)
	if err != nil {
		t.Fatal(err)
	}
	var gwErr *Error
	if !errors.As(FromError(st.Err()), &gwErr) {
		t.Fatal("not an *Error")
	}
	if gwErr.ErrorReason() != groundwirev1.ErrorReason_ERROR_REASON_QUOTA_EXCEEDED {
		t.Errorf("ErrorReason() = %v", gwErr.ErrorReason())
	}
	want := QuotaViolation{Subject: "requests_per_minute", Description: "60 requests per minute"}
	if len(gwErr.QuotaViolations) != 1 || gwErr.QuotaViolations[0] != want {
		t.Errorf("QuotaViolations = %+v, want %+v", gwErr.QuotaViolations, want)
	}
	if gwErr.RetryAfter != 12*time.Second || !gwErr.Retryable() {
		t.Errorf("RetryAfter = %v, Retryable = %v", gwErr.RetryAfter, gwErr.Retryable())
	}
}

func TestFromErrorWithoutDetails(t *testing.T) {
	var gwErr *Error
	if !errors.As(convertError(status.Error(codes.Unavailable, "connection refused"), "sent", ""), &gwErr) {
		t.Fatal("not an *Error")
	}
	if gwErr.Reason != "" || gwErr.CorrelationID != "sent" || gwErr.Code != codes.Unavailable {
		t.Errorf("got %+v", gwErr)
	}
	if gwErr.ErrorReason() != groundwirev1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		t.Errorf("ErrorReason() = %v", gwErr.ErrorReason())
	}
}

func TestFromErrorContextAndPlainErrors(t *testing.T) {
	if FromError(nil) != nil {
		t.Error("FromError(nil) != nil")
	}
	if err := FromError(io.ErrUnexpectedEOF); err != io.ErrUnexpectedEOF {
		t.Errorf("a plain error was changed: %v", err)
	}
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{status.Error(codes.Canceled, "context canceled"), codes.Canceled},
		{context.Canceled, codes.Canceled},
		{status.Error(codes.DeadlineExceeded, "deadline"), codes.DeadlineExceeded},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
	} {
		err := FromError(tc.err)
		var gwErr *Error
		if !errors.As(err, &gwErr) || gwErr.Code != tc.code {
			t.Errorf("FromError(%v) = %v, want code %v", tc.err, err, tc.code)
			continue
		}
		ctxErr := context.Canceled
		if tc.code == codes.DeadlineExceeded {
			ctxErr = context.DeadlineExceeded
		}
		if !errors.Is(err, ctxErr) {
			t.Errorf("errors.Is(%v, %v) = false", err, ctxErr)
		}
	}
}

func TestNewCorrelationID(t *testing.T) {
	a, b := NewCorrelationID(), NewCorrelationID()
	if len(a) != 32 || a == b || strings.Trim(a, "0123456789abcdef") != "" {
		t.Errorf("ids %q, %q", a, b)
	}
	ctx := WithCorrelationID(context.Background(), "mine")
	if id, ok := CorrelationIDFromContext(ctx); !ok || id != "mine" {
		t.Errorf("CorrelationIDFromContext = %q, %v", id, ok)
	}
	if _, ok := CorrelationIDFromContext(context.Background()); ok {
		t.Error("found an id in an empty context")
	}
}
