package groundwire

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	groundwirev1 "github.com/groundwire/groundwire/sdks/go/gen/groundwire/v1"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every error groundwire returns.
const ErrorDomain = "groundwire.v1"

// ErrIncompleteStream is returned by GenerateText (and Stream.Next wraps it) when a
// Generate stream ended cleanly but without its end frame.
var ErrIncompleteStream = errors.New("groundwire: generate stream ended without an end frame")

// FieldViolation names one bad request field (from a google.rpc.BadRequest detail).
type FieldViolation struct {
	// Field is the proto path of the field, for example `temperature` or `retrieval.top_k`.
	Field string
	// Description says what is wrong with it.
	Description string
}

// QuotaViolation names one spent quota (from a google.rpc.QuotaFailure detail, reason
// ERROR_REASON_QUOTA_EXCEEDED).
type QuotaViolation struct {
	// Subject is the quota's name: requests_per_minute, llm_tokens_per_minute or
	// spend_micros_per_day, as GetCapabilities lists them.
	Subject string
	// Description says what was exceeded.
	Description string
}

// Error is a failed call: its gRPC status and the details groundwire attaches to it.
// Every Client method returns gRPC failures as *Error; read it with errors.As:
//
//	var gwErr *groundwire.Error
//	if errors.As(err, &gwErr) && gwErr.Reason == "ERROR_REASON_INVALID_FIELD" { ... }
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the status message, meant for humans.
	Message string
	// Reason is the google.rpc.ErrorInfo reason: the name of a groundwirev1.ErrorReason
	// value such as "ERROR_REASON_INVALID_FIELD". Empty when the status had no ErrorInfo
	// (for example a transport failure or a client-side cancel).
	Reason string
	// Domain is the ErrorInfo domain, "groundwire.v1" for the server's errors.
	Domain string
	// Metadata is the ErrorInfo metadata.
	Metadata map[string]string
	// CorrelationID is the `correlation_id` of the ErrorInfo metadata, else the id the
	// server echoed in its metadata, else the id the client sent.
	CorrelationID string
	// FieldViolations lists the offending fields of an INVALID_ARGUMENT error.
	FieldViolations []FieldViolation
	// QuotaViolations lists the spent quotas of a RESOURCE_EXHAUSTED error with reason
	// ERROR_REASON_QUOTA_EXCEEDED.
	QuotaViolations []QuotaViolation
	// RetryAfter is the suggested delay from a google.rpc.RetryInfo detail; zero if none.
	RetryAfter time.Duration
	// Status is the original gRPC status, with all its details.
	Status *status.Status

	err error // the error as the transport returned it
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "groundwire: %s", e.Code)
	if e.Reason != "" {
		fmt.Fprintf(&b, " (%s)", e.Reason)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	for _, v := range e.FieldViolations {
		if violation := v.Field + ": " + v.Description; !strings.Contains(e.Message, violation) {
			fmt.Fprintf(&b, "; %s", violation)
		}
	}
	if e.CorrelationID != "" {
		fmt.Fprintf(&b, " [correlation id %s]", e.CorrelationID)
	}
	return b.String()
}

// Unwrap returns the error as the gRPC transport returned it.
func (e *Error) Unwrap() error { return e.err }

// GRPCStatus makes status.FromError and status.Code work on an *Error.
func (e *Error) GRPCStatus() *status.Status { return e.Status }

// Is reports a CANCELLED error as context.Canceled and a DEADLINE_EXCEEDED one as
// context.DeadlineExceeded, so errors.Is(err, context.Canceled) works after a cancel.
func (e *Error) Is(target error) bool {
	switch target {
	case context.Canceled:
		return e.Code == codes.Canceled
	case context.DeadlineExceeded:
		return e.Code == codes.DeadlineExceeded
	}
	return false
}

// ErrorReason returns Reason as the generated enum; ERROR_REASON_UNSPECIFIED when it is
// empty or unknown to this client.
func (e *Error) ErrorReason() groundwirev1.ErrorReason {
	return groundwirev1.ErrorReason(groundwirev1.ErrorReason_value[e.Reason])
}

// Field returns the violation of the named field, if there is one.
func (e *Error) Field(field string) (FieldViolation, bool) {
	for _, v := range e.FieldViolations {
		if v.Field == field {
			return v, true
		}
	}
	return FieldViolation{}, false
}

// Retryable reports whether the call may succeed if repeated later: UNAVAILABLE and
// RESOURCE_EXHAUSTED errors, and any error carrying a RetryInfo detail.
func (e *Error) Retryable() bool {
	return e.Code == codes.Unavailable || e.Code == codes.ResourceExhausted || e.RetryAfter > 0
}

// FromError converts err into an *Error when it carries a gRPC status (or is a context
// error); it returns nil for nil and other errors unchanged. Client methods already do
// this; it is exported for code that calls the generated stubs directly.
func FromError(err error) error {
	return convertError(err, "", "")
}

// convertError builds an *Error; sentID and echoedID fill CorrelationID when the status
// carries none.
func convertError(err error, sentID, echoedID string) error {
	if err == nil {
		return nil
	}
	var gwErr *Error
	if errors.As(err, &gwErr) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		st = status.FromContextError(err)
	}
	e := &Error{Code: st.Code(), Message: st.Message(), Status: st, err: err}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			e.Reason, e.Domain, e.Metadata = d.GetReason(), d.GetDomain(), d.GetMetadata()
			e.CorrelationID = d.GetMetadata()["correlation_id"]
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations,
					FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				e.QuotaViolations = append(e.QuotaViolations,
					QuotaViolation{Subject: v.GetSubject(), Description: v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			if d.GetRetryDelay() != nil {
				e.RetryAfter = d.GetRetryDelay().AsDuration()
			}
		}
	}
	if e.CorrelationID == "" {
		e.CorrelationID = echoedID
	}
	if e.CorrelationID == "" {
		e.CorrelationID = sentID
	}
	return e
}
