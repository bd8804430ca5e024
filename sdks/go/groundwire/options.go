package groundwire

import (
	"time"

	"google.golang.org/grpc"
)

// DefaultTimeout is the deadline given to a call whose context has none, unless
// WithDefaultTimeout says otherwise.
const DefaultTimeout = 60 * time.Second

// Option configures a Client; pass options to Dial.
type Option func(*options)

type options struct {
	apiKey         string
	insecure       bool
	defaultTimeout time.Duration
	dialOptions    []grpc.DialOption
}

func defaultOptions() options {
	return options{defaultTimeout: DefaultTimeout}
}

// WithAPIKey sends key as `authorization: Bearer <key>` on every call.
func WithAPIKey(key string) Option {
	return func(o *options) { o.apiKey = key }
}

// WithInsecure uses a plaintext connection instead of TLS. Use it only on loopback or
// inside a service mesh that encrypts traffic for you. The API key is still sent.
func WithInsecure() Option {
	return func(o *options) { o.insecure = true }
}

// WithDefaultTimeout sets the deadline given to calls whose context has none (for Generate,
// the time allowed for the whole stream). Zero or a negative value means no default
// deadline. The default is DefaultTimeout.
func WithDefaultTimeout(d time.Duration) Option {
	return func(o *options) { o.defaultTimeout = d }
}

// WithDialOptions appends raw gRPC dial options, applied after the client's own (so a
// grpc.WithTransportCredentials here replaces the default TLS or insecure credentials).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}
