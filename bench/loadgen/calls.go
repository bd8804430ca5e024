package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"

	groundwirev1 "github.com/groundwire/groundwire/sdks/go/gen/groundwire/v1"
	"github.com/groundwire/groundwire/sdks/go/groundwire"
)

// Outcomes of a call.
const (
	outcomeOK      = "ok"
	outcomeRefused = "refused" // RESOURCE_EXHAUSTED with ErrorInfo reason OverloadedReason
	outcomeError   = "error"
)

// OverloadedReason is the ErrorInfo reason of a server that refuses a call because it is
// full. Matched by name, so a server (or generated code) without it simply never refuses.
const OverloadedReason = "ERROR_REASON_OVERLOADED"

// Call is what one call measured, times in seconds from issuing it. A failed or refused
// call has its outcome, kind and total (the time to the failure) set, and nothing else.
type Call struct {
	Index   int    `json:"i"`
	Outcome string `json:"outcome"`
	// Kind names a failure as the Python benchmark counts them ("gRPC UNAVAILABLE",
	// "HTTP 500", "no end frame", "finish upstream_error", "63 tokens, not 64"), or the
	// reason of a refusal.
	Kind         string             `json:"kind,omitempty"`
	Detail       string             `json:"detail,omitempty"`
	RetryAfterMS float64            `json:"retry_after_ms,omitempty"`
	TTFT         float64            `json:"ttft_s"`
	LastText     float64            `json:"last_text_s"`
	Total        float64            `json:"total_s"`
	Tokens       int                `json:"tokens"`
	Frames       int                `json:"frames"`
	TextFrames   int                `json:"text_frames"`
	GapsUS       []int64            `json:"gaps_us,omitempty"` // between text frames
	Route        string             `json:"route,omitempty"`   // start frame's; "direct"
	Server       map[string]float64 `json:"server,omitempty"`  // end.timings, seconds
}

// clock collects a stream's text arrival times from the moment the call is issued.
type clock struct {
	started    time.Time
	first      time.Duration
	last       time.Duration
	frames     int
	textFrames int
	gaps       []int64
}

func newClock() *clock { return &clock{started: time.Now(), first: -1} }

func (c *clock) frame(hasText bool) {
	c.frames++
	if !hasText {
		return
	}
	now := time.Since(c.started)
	if c.first < 0 {
		c.first = now
	} else {
		c.gaps = append(c.gaps, (now - c.last).Microseconds())
	}
	c.last = now
	c.textFrames++
}

// result is the call's figures: a failure when there was no text or not the expected
// number of tokens (expected 0: any number).
func (c *clock) result(index, tokens, expected int, route string) Call {
	total := time.Since(c.started).Seconds()
	if c.first < 0 {
		return Call{Index: index, Outcome: outcomeError, Kind: "no text", Total: total}
	}
	if expected > 0 && tokens != expected {
		kind := fmt.Sprintf("%d tokens, not %d", tokens, expected)
		return Call{Index: index, Outcome: outcomeError, Kind: kind, Total: total}
	}
	return Call{
		Index: index, Outcome: outcomeOK, TTFT: c.first.Seconds(), LastText: c.last.Seconds(),
		Total: total, Tokens: tokens, Frames: c.frames, TextFrames: c.textFrames,
		GapsUS: c.gaps, Route: route,
	}
}

func (c *clock) failed(index int, kind string, err error) Call {
	call := Call{Index: index, Outcome: outcomeError, Kind: kind, Total: time.Since(c.started).Seconds()}
	if err != nil {
		call.Detail = truncate(err.Error(), 300)
	}
	return call
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// caller runs call number index and reports what it measured; it never panics on a
// failed call.
type caller func(ctx context.Context, index int) Call

// chunk is the part of an OpenAI chat.completion.chunk the direct baseline reads.
type chunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

// directCaller streams body (an OpenAI chat-completions request) to baseURL + "/chat/
// completions" over plain HTTP/1.1 and reads the SSE answer: the baseline without our
// server. Tokens are the usage chunk's completion_tokens, else the chunks with content.
func directCaller(client *http.Client, baseURL string, body []byte, expected int, timeout time.Duration) caller {
	url := strings.TrimSuffix(baseURL, "/") + "/chat/completions"
	return func(ctx context.Context, index int) Call {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		clk := newClock()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return clk.failed(index, "bad request", err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Authorization", "Bearer benchmark")
		resp, err := client.Do(req)
		if err != nil {
			return clk.failed(index, transportKind(err), err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			_, _ = io.Copy(io.Discard, resp.Body) // so the connection is reused
			return clk.failed(index, fmt.Sprintf("HTTP %d", resp.StatusCode), nil)
		}
		events := newSSEReader(resp.Body)
		counted, usage := 0, -1
		done := false
		for !done {
			data, err := events.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return clk.failed(index, transportKind(err), err)
			}
			if string(data) == "[DONE]" {
				done = true
				continue
			}
			var c chunk
			if err := json.Unmarshal(data, &c); err != nil {
				return clk.failed(index, "bad chunk", err)
			}
			hasText := len(c.Choices) > 0 && c.Choices[0].Delta.Content != ""
			clk.frame(hasText)
			if hasText {
				counted++
			}
			if c.Usage != nil {
				usage = c.Usage.CompletionTokens
			}
		}
		if done {
			// Drain to the end of the body so the connection goes back to the pool.
			_, _ = io.Copy(io.Discard, resp.Body)
		}
		tokens := counted
		if usage >= 0 {
			tokens = usage
		}
		return clk.result(index, tokens, expected, "direct")
	}
}

// transportKind names a failure below HTTP.
func transportKind(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "stream cut"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	}
	return "transport error"
}

// grpcCodeNames are the canonical (upper-case) names of gRPC codes, as Python's grpc
// spells them.
var grpcCodeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
	codes.Unauthenticated: "UNAUTHENTICATED",
}

func grpcCodeName(code codes.Code) string {
	if name, ok := grpcCodeNames[code]; ok {
		return name
	}
	return code.String()
}

// serverTimings are the end frame's timings the benchmark keeps, by the Python names.
func serverTimings(t *groundwirev1.GenerationTimings) map[string]float64 {
	return map[string]float64{
		"overhead":             t.GetOverhead().AsDuration().Seconds(),
		"first_token":          t.GetFirstToken().AsDuration().Seconds(),
		"upstream_first_token": t.GetUpstreamFirstToken().AsDuration().Seconds(),
		"total":                t.GetTotal().AsDuration().Seconds(),
	}
}

// oursCaller runs Generate through the Go SDK on the client pick returns. A refusal
// (RESOURCE_EXHAUSTED, OverloadedReason) is its own outcome; an answer that is not the
// LLM's (route degraded), does not finish with STOP or lacks its end frame is a failure.
func oursCaller(pick func(index int) *groundwire.Client, req *groundwirev1.GenerateRequest, expected int, timeout time.Duration) caller {
	return func(ctx context.Context, index int) Call {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		clk := newClock()
		stream, err := pick(index).Generate(ctx, req)
		if err != nil {
			return grpcFailure(clk, index, err)
		}
		defer stream.Close()
		for {
			frame, err := stream.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return grpcFailure(clk, index, err)
			}
			delta, isDelta := frame.GetFrame().(*groundwirev1.GenerateResponse_Delta)
			clk.frame(isDelta && delta.Delta.GetText() != "")
		}
		end := stream.End()
		route := "no start"
		if start := stream.Start(); start != nil {
			route = strings.ToLower(strings.TrimPrefix(start.GetRoute().String(), "ROUTE_"))
		}
		if route == "degraded" {
			return clk.failed(index, "route degraded", nil)
		}
		if end.GetFinishReason() != groundwirev1.FinishReason_FINISH_REASON_STOP {
			reason := strings.TrimPrefix(end.GetFinishReason().String(), "FINISH_REASON_")
			return clk.failed(index, "finish "+strings.ToLower(reason), nil)
		}
		call := clk.result(index, int(end.GetUsage().GetCompletionTokens()), expected, route)
		if call.Outcome == outcomeOK {
			call.Server = serverTimings(end.GetTimings())
		}
		return call
	}
}

func grpcFailure(clk *clock, index int, err error) Call {
	if errors.Is(err, groundwire.ErrIncompleteStream) {
		return clk.failed(index, "no end frame", err)
	}
	var gwErr *groundwire.Error
	if !errors.As(err, &gwErr) {
		return clk.failed(index, "transport error", err)
	}
	if gwErr.Code == codes.ResourceExhausted && gwErr.Reason == OverloadedReason {
		call := clk.failed(index, gwErr.Reason, nil)
		call.Outcome = outcomeRefused
		call.RetryAfterMS = float64(gwErr.RetryAfter.Microseconds()) / 1000
		return call
	}
	return clk.failed(index, "gRPC "+grpcCodeName(gwErr.Code), err)
}
