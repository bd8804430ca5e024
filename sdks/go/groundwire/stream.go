package groundwire

import (
	"context"
	"errors"
	"io"
	"iter"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	groundwirev1 "github.com/groundwire/groundwire/sdks/go/gen/groundwire/v1"
)

// Stream reads the frames of one Generate answer: one start frame, then delta and
// citation frames interleaved, then one end frame. A Stream is not safe for concurrent
// use by several goroutines, except Close, which may be called from any goroutine.
type Stream struct {
	stream grpc.ServerStreamingClient[groundwirev1.GenerateResponse]
	cancel context.CancelFunc
	sentID string
	info   *CallInfo

	start   *groundwirev1.StartFrame
	end     *groundwirev1.EndFrame
	err     error // set once the stream is over: io.EOF or the final error
	trailer metadata.MD
}

// Next returns the next frame. After the end frame it returns io.EOF, or — when the
// answer failed after it started — the *Error the server reported after the end frame.
// A stream that ends without an end frame returns ErrIncompleteStream. Once Next has
// returned an error it returns the same error forever.
func (s *Stream) Next() (*groundwirev1.GenerateResponse, error) {
	if s.err != nil {
		return nil, s.err
	}
	frame, err := s.stream.Recv()
	if err == nil {
		switch f := frame.GetFrame().(type) {
		case *groundwirev1.GenerateResponse_Start:
			s.start = f.Start
		case *groundwirev1.GenerateResponse_End:
			s.end = f.End
		}
		return frame, nil
	}
	s.finish(err)
	return nil, s.err
}

// finish records the final error, releases the call and fills the CallInfo.
func (s *Stream) finish(err error) {
	header, _ := s.stream.Header()
	s.trailer = s.stream.Trailer()
	echoed := echoedCorrelationID(header, s.trailer)
	switch {
	case errors.Is(err, io.EOF) && s.end == nil:
		s.err = ErrIncompleteStream
	case errors.Is(err, io.EOF):
		s.err = io.EOF
	default:
		s.err = convertError(err, s.sentID, echoed)
	}
	s.cancel()
	if s.info != nil {
		*s.info = CallInfo{
			RequestCorrelationID: s.sentID, CorrelationID: echoed,
			Header: header, Trailer: s.trailer,
		}
	}
}

// Frames returns an iterator over the remaining frames. It stops after the last frame
// on a clean end, and yields one (nil, err) pair on failure (err is never io.EOF).
//
//	for frame, err := range stream.Frames() {
//		if err != nil { return err }
//		...
//	}
func (s *Stream) Frames() iter.Seq2[*groundwirev1.GenerateResponse, error] {
	return func(yield func(*groundwirev1.GenerateResponse, error) bool) {
		for {
			frame, err := s.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(frame, nil) {
				return
			}
		}
	}
}

// Text reads the rest of the stream and returns the concatenated delta text. It returns
// nil at a clean end, else the error that ended the stream (with the text so far).
func (s *Stream) Text() (string, error) {
	var b strings.Builder
	for frame, err := range s.Frames() {
		if err != nil {
			return b.String(), err
		}
		b.WriteString(frame.GetDelta().GetText())
	}
	return b.String(), nil
}

// Header returns the response header metadata, waiting for it if needed.
func (s *Stream) Header() (metadata.MD, error) {
	md, err := s.stream.Header()
	if err != nil {
		return md, convertError(err, s.sentID, "")
	}
	return md, nil
}

// Trailer returns the trailer metadata; it is available once Next has returned an error.
func (s *Stream) Trailer() metadata.MD { return s.trailer }

// CorrelationID returns the correlation id the server echoed in its header metadata
// (waiting for the header if needed), or the id the client sent when it has none.
func (s *Stream) CorrelationID() string {
	md, _ := s.stream.Header()
	if id := echoedCorrelationID(md, s.trailer); id != "" {
		return id
	}
	return s.sentID
}

// RequestCorrelationID returns the correlation id the client sent.
func (s *Stream) RequestCorrelationID() string { return s.sentID }

// Start returns the start frame once it has been read, else nil.
func (s *Stream) Start() *groundwirev1.StartFrame { return s.start }

// End returns the end frame once it has been read, else nil.
func (s *Stream) End() *groundwirev1.EndFrame { return s.end }

// Close cancels the call if it is still running and releases its resources. The server
// ends the answer with FINISH_REASON_CANCELLED and stops paying for upstream tokens.
// It is safe to call Close more than once and after the stream has ended.
func (s *Stream) Close() error {
	s.cancel()
	return nil
}
