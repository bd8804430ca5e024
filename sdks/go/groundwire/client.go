package groundwire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	groundwirev1 "github.com/groundwire/groundwire/sdks/go/gen/groundwire/v1"
)

// Version is the version of this SDK, sent in the user agent.
const Version = "0.1.0"

// Client talks to one groundwire server. It is safe for concurrent use; create one and
// share it, and Close it when done.
type Client struct {
	conn *grpc.ClientConn
	opts options

	health       healthpb.HealthClient
	capabilities groundwirev1.CapabilitiesServiceClient
	documents    groundwirev1.DocumentServiceClient
	retrieval    groundwirev1.RetrievalServiceClient
	generation   groundwirev1.GenerationServiceClient
}

// Dial creates a client for the server at address ("host:port", or any gRPC target).
// It uses TLS unless WithInsecure is given. The connection is established in the
// background; Dial does not wait for it, so an unreachable server surfaces as an
// UNAVAILABLE *Error on the first call. ctx only guards Dial itself.
func Dial(ctx context.Context, address string, opts ...Option) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := defaultOptions()
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	if o.insecure {
		creds = insecure.NewCredentials()
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("groundwire-go/" + Version),
	}
	dialOpts = append(dialOpts, o.dialOptions...)
	conn, err := grpc.NewClient(address, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("groundwire: dial %s: %w", address, err)
	}
	conn.Connect()
	return &Client{
		conn:         conn,
		opts:         o,
		health:       healthpb.NewHealthClient(conn),
		capabilities: groundwirev1.NewCapabilitiesServiceClient(conn),
		documents:    groundwirev1.NewDocumentServiceClient(conn),
		retrieval:    groundwirev1.NewRetrievalServiceClient(conn),
		generation:   groundwirev1.NewGenerationServiceClient(conn),
	}, nil
}

// Close closes the connection. Calls in flight fail with CANCELED.
func (c *Client) Close() error { return c.conn.Close() }

// Conn returns the underlying connection, for the generated clients of RPCs this package
// does not wrap. Calls made on it get neither credentials nor correlation ids from Client.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// outgoing adds credentials, the correlation id and the default deadline to ctx. The
// returned cancel must always be called.
func (c *Client) outgoing(ctx context.Context) (context.Context, context.CancelFunc, string) {
	id, ok := CorrelationIDFromContext(ctx)
	if !ok {
		id = NewCorrelationID()
	}
	kv := []string{CorrelationHeader, id}
	if c.opts.apiKey != "" {
		kv = append(kv, "authorization", "Bearer "+c.opts.apiKey)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	var cancel context.CancelFunc
	if _, has := ctx.Deadline(); !has && c.opts.defaultTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.opts.defaultTimeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	return ctx, cancel, id
}

// unary runs one unary call with credentials, correlation id, deadline, call info and
// error conversion.
func (c *Client) unary(ctx context.Context, opts []CallOption,
	call func(ctx context.Context, grpcOpts []grpc.CallOption) error,
) error {
	co := collectCallOptions(opts)
	ctx, cancel, sentID := c.outgoing(ctx)
	defer cancel()
	var header, trailer metadata.MD
	grpcOpts := append([]grpc.CallOption{grpc.Header(&header), grpc.Trailer(&trailer)}, co.grpc...)
	err := call(ctx, grpcOpts)
	echoed := echoedCorrelationID(header, trailer)
	if co.info != nil {
		*co.info = CallInfo{
			RequestCorrelationID: sentID, CorrelationID: echoed,
			Header: header, Trailer: trailer,
		}
	}
	return convertError(err, sentID, echoed)
}

// Health runs the standard gRPC health check for the whole server (service "") and
// returns its serving status; healthpb.HealthCheckResponse_SERVING means ready.
func (c *Client) Health(ctx context.Context, opts ...CallOption) (healthpb.HealthCheckResponse_ServingStatus, error) {
	var resp *healthpb.HealthCheckResponse
	err := c.unary(ctx, opts, func(ctx context.Context, g []grpc.CallOption) (err error) {
		resp, err = c.health.Check(ctx, &healthpb.HealthCheckRequest{}, g...)
		return err
	})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, err
	}
	return resp.GetStatus(), nil
}

// Capabilities returns the server's models, tiers, limits and feature flags.
func (c *Client) Capabilities(ctx context.Context, opts ...CallOption) (*groundwirev1.GetCapabilitiesResponse, error) {
	var resp *groundwirev1.GetCapabilitiesResponse
	err := c.unary(ctx, opts, func(ctx context.Context, g []grpc.CallOption) (err error) {
		resp, err = c.capabilities.GetCapabilities(ctx, &groundwirev1.GetCapabilitiesRequest{}, g...)
		return err
	})
	return resp, err
}

// Retrieve returns the chunks of the caller's corpus that best match req.Query.
func (c *Client) Retrieve(ctx context.Context, req *groundwirev1.RetrieveRequest, opts ...CallOption) (*groundwirev1.RetrieveResponse, error) {
	var resp *groundwirev1.RetrieveResponse
	err := c.unary(ctx, opts, func(ctx context.Context, g []grpc.CallOption) (err error) {
		resp, err = c.retrieval.Retrieve(ctx, req, g...)
		return err
	})
	return resp, err
}

// Delete removes documents and all their chunks by doc id; unknown ids are ignored.
func (c *Client) Delete(ctx context.Context, docIDs []string, opts ...CallOption) (*groundwirev1.DeleteDocumentsResponse, error) {
	var resp *groundwirev1.DeleteDocumentsResponse
	err := c.unary(ctx, opts, func(ctx context.Context, g []grpc.CallOption) (err error) {
		resp, err = c.documents.DeleteDocuments(ctx, &groundwirev1.DeleteDocumentsRequest{DocIds: docIDs}, g...)
		return err
	})
	return resp, err
}

// Ingest streams docs to the server, which chunks, embeds and upserts each one
// idempotently, and returns the summary. A bad document does not fail the call: it is
// counted in Failed and described in Failures.
func (c *Client) Ingest(ctx context.Context, docs []*groundwirev1.Document, opts ...CallOption) (*groundwirev1.IngestDocumentsResponse, error) {
	co := collectCallOptions(opts)
	ctx, cancel, sentID := c.outgoing(ctx)
	defer cancel()
	var echoed string
	resp, err := func() (*groundwirev1.IngestDocumentsResponse, error) {
		stream, err := c.documents.IngestDocuments(ctx, co.grpc...)
		if err != nil {
			return nil, err
		}
		defer func() {
			cancel() // the call is over (or abandoned): Header must not wait
			header, _ := stream.Header()
			trailer := stream.Trailer()
			echoed = echoedCorrelationID(header, trailer)
			if co.info != nil {
				*co.info = CallInfo{
					RequestCorrelationID: sentID, CorrelationID: echoed,
					Header: header, Trailer: trailer,
				}
			}
		}()
		for _, doc := range docs {
			// io.EOF means the server has ended the call; CloseAndRecv returns its status.
			if err := stream.Send(&groundwirev1.IngestDocumentsRequest{Document: doc}); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, err
			}
		}
		return stream.CloseAndRecv()
	}()
	if err != nil {
		return nil, convertError(err, sentID, echoed)
	}
	return resp, nil
}

// Generate starts streaming an answer to req. Read the frames with Stream.Next or
// Stream.Frames; errors the server reports before the first frame (a bad request, no
// model available) arrive from the first Next, not from Generate. Always Close the stream.
//
// The stream's deadline is ctx's, else the client's default timeout; cancelling ctx
// cancels the stream.
func (c *Client) Generate(ctx context.Context, req *groundwirev1.GenerateRequest, opts ...CallOption) (*Stream, error) {
	co := collectCallOptions(opts)
	ctx, cancel, sentID := c.outgoing(ctx)
	stream, err := c.generation.Generate(ctx, req, co.grpc...)
	if err != nil {
		cancel()
		err = convertError(err, sentID, "")
		if co.info != nil {
			*co.info = CallInfo{RequestCorrelationID: sentID}
		}
		return nil, err
	}
	return &Stream{stream: stream, cancel: cancel, sentID: sentID, info: co.info}, nil
}

// GenerateText runs Generate to the end and returns the answer text and the end frame.
// When the answer fails after it started, the text so far and the end frame (whose
// FinishReason and Detail say what happened) are returned together with the error.
func (c *Client) GenerateText(ctx context.Context, req *groundwirev1.GenerateRequest, opts ...CallOption) (string, *groundwirev1.EndFrame, error) {
	stream, err := c.Generate(ctx, req, opts...)
	if err != nil {
		return "", nil, err
	}
	defer stream.Close()
	text, err := stream.Text()
	return text, stream.End(), err
}
