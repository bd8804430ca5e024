package groundwire

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	groundwirev1 "github.com/groundwire/groundwire/sdks/go/gen/groundwire/v1"
)

// fakeServer is an in-process stand-in for groundwire: it echoes the correlation id like
// the real server and answers Generate by the request's query.
type fakeServer struct {
	groundwirev1.UnimplementedCapabilitiesServiceServer
	groundwirev1.UnimplementedGenerationServiceServer

	mu   sync.Mutex
	seen []metadata.MD // incoming metadata of every call
}

func (f *fakeServer) echo(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.seen = append(f.seen, md)
	f.mu.Unlock()
	id := "server-made"
	if v := md.Get(CorrelationHeader); len(v) > 0 {
		id = v[0]
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs(CorrelationHeader, id))
	_ = grpc.SetTrailer(ctx, metadata.Pairs(CorrelationHeader, id))
	return id
}

func (f *fakeServer) lastMD() metadata.MD {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[len(f.seen)-1]
}

func (f *fakeServer) GetCapabilities(ctx context.Context, _ *groundwirev1.GetCapabilitiesRequest) (*groundwirev1.GetCapabilitiesResponse, error) {
	f.echo(ctx)
	return &groundwirev1.GetCapabilitiesResponse{ServerVersion: "fake"}, nil
}

func frames(fs ...*groundwirev1.GenerateResponse) []*groundwirev1.GenerateResponse { return fs }

func startFrame() *groundwirev1.GenerateResponse {
	return &groundwirev1.GenerateResponse{Frame: &groundwirev1.GenerateResponse_Start{Start: &groundwirev1.StartFrame{
		Route: groundwirev1.Route_ROUTE_PRIMARY, Model: "m",
		Sources: []*groundwirev1.Source{{Number: 1, ChunkId: "c1"}},
	}}}
}

func deltaFrame(text string) *groundwirev1.GenerateResponse {
	return &groundwirev1.GenerateResponse{Frame: &groundwirev1.GenerateResponse_Delta{Delta: &groundwirev1.DeltaFrame{Text: text}}}
}

func endFrame(reason groundwirev1.FinishReason) *groundwirev1.GenerateResponse {
	return &groundwirev1.GenerateResponse{Frame: &groundwirev1.GenerateResponse_End{End: &groundwirev1.EndFrame{FinishReason: reason}}}
}

func (f *fakeServer) Generate(req *groundwirev1.GenerateRequest, stream grpc.ServerStreamingServer[groundwirev1.GenerateResponse]) error {
	id := f.echo(stream.Context())
	send := func(fs []*groundwirev1.GenerateResponse) error {
		for _, fr := range fs {
			if err := stream.Send(fr); err != nil {
				return err
			}
		}
		return nil
	}
	switch req.GetQuery() {
	case "ok":
		return send(frames(startFrame(), deltaFrame("Hello "),
			&groundwirev1.GenerateResponse{Frame: &groundwirev1.GenerateResponse_Citation{Citation: &groundwirev1.CitationFrame{
				Number: 1, Start: 6, End: 9, ChunkId: "c1", Valid: true,
			}}},
			deltaFrame("[1]."), endFrame(groundwirev1.FinishReason_FINISH_REASON_STOP)))
	case "bad":
		st, _ := status.New(codes.InvalidArgument, "bad temperature").WithDetails(
			&errdetails.ErrorInfo{Reason: "ERROR_REASON_INVALID_FIELD", Domain: ErrorDomain,
				Metadata: map[string]string{"correlation_id": id}},
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
				{Field: "temperature", Description: "must be between 0 and 2"}}})
		return st.Err()
	case "midstream":
		if err := send(frames(startFrame(), deltaFrame("Half"),
			endFrame(groundwirev1.FinishReason_FINISH_REASON_UPSTREAM_ERROR))); err != nil {
			return err
		}
		return status.Error(codes.Unavailable, "upstream failed")
	case "noend":
		return send(frames(startFrame(), deltaFrame("cut")))
	case "slow":
		if err := send(frames(startFrame(), deltaFrame("first"))); err != nil {
			return err
		}
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	return status.Error(codes.Unimplemented, "unknown query")
}

func newFakeClient(t *testing.T, opts ...Option) (*Client, *fakeServer) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	fake := &fakeServer{}
	groundwirev1.RegisterCapabilitiesServiceServer(srv, fake)
	groundwirev1.RegisterGenerationServiceServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	opts = append([]Option{
		WithInsecure(), WithAPIKey("secret"),
		WithDialOptions(grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return lis.DialContext(ctx)
		})),
	}, opts...)
	client, err := Dial(context.Background(), "passthrough:///bufnet", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client, fake
}

func TestMetadataAndCallInfo(t *testing.T) {
	client, fake := newFakeClient(t)
	ctx := context.Background()

	var info CallInfo
	if _, err := client.Capabilities(ctx, CaptureCallInfo(&info)); err != nil {
		t.Fatal(err)
	}
	md := fake.lastMD()
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer secret" {
		t.Errorf("authorization = %q", got)
	}
	sent := md.Get(CorrelationHeader)
	if len(sent) != 1 || len(sent[0]) != 32 {
		t.Fatalf("generated correlation id = %q", sent)
	}
	if info.RequestCorrelationID != sent[0] || info.CorrelationID != sent[0] {
		t.Errorf("CallInfo = %+v, sent %q", info, sent[0])
	}
	if info.Header.Get(CorrelationHeader)[0] != sent[0] {
		t.Errorf("header = %v", info.Header)
	}

	ctx = WithCorrelationID(ctx, "caller-chosen")
	if _, err := client.Capabilities(ctx, CaptureCallInfo(&info)); err != nil {
		t.Fatal(err)
	}
	if info.CorrelationID != "caller-chosen" || fake.lastMD().Get(CorrelationHeader)[0] != "caller-chosen" {
		t.Errorf("CallInfo = %+v", info)
	}
}

func TestGenerateText(t *testing.T) {
	client, _ := newFakeClient(t)
	text, end, err := client.GenerateText(context.Background(), &groundwirev1.GenerateRequest{Query: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	if text != "Hello [1]." || end.GetFinishReason() != groundwirev1.FinishReason_FINISH_REASON_STOP {
		t.Errorf("text %q, end %v", text, end)
	}
}

func TestStreamFramesAndHeader(t *testing.T) {
	client, _ := newFakeClient(t)
	ctx := WithCorrelationID(context.Background(), "stream-id")
	var info CallInfo
	stream, err := client.Generate(ctx, &groundwirev1.GenerateRequest{Query: "ok"}, CaptureCallInfo(&info))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	md, err := stream.Header()
	if err != nil || md.Get(CorrelationHeader)[0] != "stream-id" || stream.CorrelationID() != "stream-id" {
		t.Errorf("Header() = %v, %v", md, err)
	}
	var kinds []string
	for frame, err := range stream.Frames() {
		if err != nil {
			t.Fatal(err)
		}
		switch frame.GetFrame().(type) {
		case *groundwirev1.GenerateResponse_Start:
			kinds = append(kinds, "start")
		case *groundwirev1.GenerateResponse_Delta:
			kinds = append(kinds, "delta")
		case *groundwirev1.GenerateResponse_Citation:
			kinds = append(kinds, "citation")
		case *groundwirev1.GenerateResponse_End:
			kinds = append(kinds, "end")
		}
	}
	if want := "[start delta citation delta end]"; "["+strings.Join(kinds, " ")+"]" != want {
		t.Errorf("frames %v, want %s", kinds, want)
	}
	if _, err := stream.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("Next after the end = %v, want io.EOF", err)
	}
	if stream.Start().GetModel() != "m" || stream.End() == nil {
		t.Error("Start() or End() not recorded")
	}
	if info.CorrelationID != "stream-id" || stream.Trailer().Get(CorrelationHeader)[0] != "stream-id" {
		t.Errorf("CallInfo %+v, trailer %v", info, stream.Trailer())
	}
}

func TestGenerateErrors(t *testing.T) {
	client, _ := newFakeClient(t)
	ctx := context.Background()

	// An error before the first frame arrives from the first Next, typed.
	stream, err := client.Generate(WithCorrelationID(ctx, "bad-1"), &groundwirev1.GenerateRequest{Query: "bad"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Next()
	var gwErr *Error
	if !errors.As(err, &gwErr) || gwErr.Code != codes.InvalidArgument || gwErr.Reason != "ERROR_REASON_INVALID_FIELD" ||
		gwErr.CorrelationID != "bad-1" || len(gwErr.FieldViolations) != 1 || gwErr.FieldViolations[0].Field != "temperature" {
		t.Errorf("Next() error = %#v", err)
	}
	if _, again := stream.Next(); again != err {
		t.Error("the final error is not sticky")
	}

	// A failure after the first delta: text and end frame come with the error.
	text, end, err := client.GenerateText(ctx, &groundwirev1.GenerateRequest{Query: "midstream"})
	if !errors.As(err, &gwErr) || gwErr.Code != codes.Unavailable || text != "Half" ||
		end.GetFinishReason() != groundwirev1.FinishReason_FINISH_REASON_UPSTREAM_ERROR {
		t.Errorf("GenerateText = %q, %v, %v", text, end, err)
	}

	// A stream without its end frame is incomplete.
	if _, _, err := client.GenerateText(ctx, &groundwirev1.GenerateRequest{Query: "noend"}); !errors.Is(err, ErrIncompleteStream) {
		t.Errorf("GenerateText(noend) error = %v", err)
	}
}

func TestGenerateCancelAndDefaultTimeout(t *testing.T) {
	client, _ := newFakeClient(t, WithDefaultTimeout(200*time.Millisecond))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := client.Generate(ctx, &groundwirev1.GenerateRequest{Query: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		frame, err := stream.Next()
		if err != nil {
			t.Fatal(err)
		}
		if frame.GetDelta() != nil {
			break
		}
	}
	cancel()
	_, err = stream.Next()
	var gwErr *Error
	if !errors.As(err, &gwErr) || gwErr.Code != codes.Canceled || !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %v", err)
	}

	// No deadline on ctx: the default timeout applies.
	began := time.Now()
	_, _, err = client.GenerateText(context.Background(), &groundwirev1.GenerateRequest{Query: "slow"})
	if status.Code(err) != codes.DeadlineExceeded || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("default timeout: %v", err)
	}
	if elapsed := time.Since(began); elapsed > 2*time.Second {
		t.Errorf("default timeout took %v", elapsed)
	}
}
