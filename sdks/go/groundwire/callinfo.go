package groundwire

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// CorrelationHeader is the metadata key carrying the correlation id, in requests and in the
// server's header and trailer metadata.
const CorrelationHeader = "x-correlation-id"

type correlationKey struct{}

// WithCorrelationID returns a context whose calls carry id as their correlation id
// (`x-correlation-id`). Without it, each call gets a fresh random id. The server accepts
// printable ids of at most 128 characters and replaces others with its own.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey{}, id)
}

// CorrelationIDFromContext returns the id set by WithCorrelationID, if any.
func CorrelationIDFromContext(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(correlationKey{}).(string)
	return id, ok && id != ""
}

// NewCorrelationID returns a fresh random correlation id: 32 lowercase hex characters.
func NewCorrelationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// CallInfo describes one finished (or, for a stream, started) call. Pass a pointer to it
// with CaptureCallInfo to have a method fill it in, also when the call fails.
type CallInfo struct {
	// RequestCorrelationID is the correlation id the client sent: the one from
	// WithCorrelationID, or the one it generated.
	RequestCorrelationID string
	// CorrelationID is the id the server echoed in its header (or trailer) metadata; the
	// server replaces ids it does not accept, so quote this one when reporting problems.
	// Empty when the server sent none.
	CorrelationID string
	// Header and Trailer are the response metadata.
	Header, Trailer metadata.MD
}

// CallOption adjusts a single call.
type CallOption interface{ apply(*callOptions) }

type callOptions struct {
	info *CallInfo
	grpc []grpc.CallOption
}

type callOptionFunc func(*callOptions)

func (f callOptionFunc) apply(o *callOptions) { f(o) }

// CaptureCallInfo fills *info when the call finishes. For Generate, the Stream offers the
// same through its own methods, and info is filled when the stream ends.
func CaptureCallInfo(info *CallInfo) CallOption {
	return callOptionFunc(func(o *callOptions) { o.info = info })
}

// WithGRPCCallOptions passes raw gRPC call options through to the call.
func WithGRPCCallOptions(opts ...grpc.CallOption) CallOption {
	return callOptionFunc(func(o *callOptions) { o.grpc = append(o.grpc, opts...) })
}

func collectCallOptions(opts []CallOption) callOptions {
	var co callOptions
	for _, o := range opts {
		if o != nil {
			o.apply(&co)
		}
	}
	return co
}

// echoedCorrelationID is the id the server echoed, preferring the header.
func echoedCorrelationID(header, trailer metadata.MD) string {
	if v := header.Get(CorrelationHeader); len(v) > 0 {
		return v[0]
	}
	if v := trailer.Get(CorrelationHeader); len(v) > 0 {
		return v[0]
	}
	return ""
}
