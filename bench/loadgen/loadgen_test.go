package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func events(t *testing.T, stream string) []string {
	t.Helper()
	reader := newSSEReader(strings.NewReader(stream))
	var out []string
	for {
		data, err := reader.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, string(data))
	}
}

func TestSSEReaderFollowsTheEventStreamFormat(t *testing.T) {
	long := strings.Repeat("x", 40_000) // longer than the reader's buffer
	cases := []struct {
		name, stream string
		want         []string
	}{
		{"one event per blank line", "data: a\n\ndata: b\n\n", []string{"a", "b"}},
		{"CRLF endings", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"a", "b"}},
		{"data lines joined", "data: a\ndata: b\n\n", []string{"a\nb"}},
		{"no space after the colon", "data:a\n\n", []string{"a"}},
		{"only one space removed", "data:  a\n\n", []string{" a"}},
		{"comments and other fields skipped", ": ping\nevent: x\nid: 3\nretry: 5\ndata: a\n\n", []string{"a"}},
		{"blank lines without data dispatch nothing", "\n\n: c\n\ndata: a\n\n", []string{"a"}},
		{"an empty data field is an event", "data:\n\n", []string{""}},
		{"a cut-off event is dropped", "data: a\n\ndata: b\n", []string{"a"}},
		{"a line longer than the buffer", "data: " + long + "\n\n", []string{long}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := events(t, c.stream)
			if len(got) != len(c.want) {
				t.Fatalf("got %d events %q, want %q", len(got), got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Errorf("event %d = %q, want %q", i, got[i], c.want[i])
				}
			}
		})
	}
}

// The Python upstream's events for the same completion (ChunkEncoder, printed by Python).
func TestChunkEncoderMatchesThePythonUpstream(t *testing.T) {
	const head = `data: {"id":"chatcmpl-0","object":"chat.completion.chunk","created":1700000000,"model":"deepseek-v4-flash","system_fingerprint":null,"choices":[`
	enc := newChunkEncoder("chatcmpl-0", 1700000000, "deepseek-v4-flash", true)
	cases := map[string][2]string{
		"role": {string(enc.role()),
			head + `{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"},
		"content": {string(enc.content(" w0")),
			head + `{"index":0,"delta":{"content":" w0"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"},
		"escaped content": {string(enc.content("é\"<\n😀")),
			head + `{"index":0,"delta":{"content":"\u00e9\"<\n\ud83d\ude00"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"},
		"finish": {string(enc.finish("stop")),
			head + `{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}` + "\n\n"},
		"usage": {string(enc.usage(usageJSON(10, 2, 0))),
			head + `],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":0}}}` + "\n\n"},
	}
	for name, c := range cases {
		if c[0] != c[1] {
			t.Errorf("%s:\n got %s\nwant %s", name, c[0], c[1])
		}
	}
	plain := newChunkEncoder("chatcmpl-0", 1700000000, "m", false)
	if got := string(plain.content("a")); !strings.HasSuffix(got, `"finish_reason":null}]}`+"\n\n") {
		t.Errorf("without usage the chunk ends %q", got[len(got)-30:])
	}
}

func scriptedServer(t *testing.T, base script) (*httptest.Server, *upstream) {
	t.Helper()
	u := newUpstream(base, 0, 500)
	server := httptest.NewServer(u)
	t.Cleanup(server.Close)
	return server, u
}

func requestBody(t *testing.T, extra map[string]any) []byte {
	t.Helper()
	body := map[string]any{
		"model":          "deepseek-v4-flash",
		"messages":       []any{map[string]any{"role": "user", "content": "two words"}},
		"stream":         true,
		"stream_options": map[string]any{"include_usage": true},
	}
	for k, v := range extra {
		body[k] = v
	}
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func post(t *testing.T, url string, payload any) int {
	t.Helper()
	raw, _ := json.Marshal(payload)
	resp, err := http.Post(url, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func tokens(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = " w"
	}
	return out
}

func TestDirectCallStreamsTheScriptedAnswer(t *testing.T) {
	server, u := scriptedServer(t, script{Tokens: tokens(8), TTFTS: 0.02, InterTokenS: 0.001})
	call := directCaller(newHTTPClient(), server.URL+"/v1", requestBody(t, nil), 8, 10*time.Second)
	got := call(context.Background(), 0)
	if got.Outcome != outcomeOK || got.Kind != "" {
		t.Fatalf("outcome %s %q %s", got.Outcome, got.Kind, got.Detail)
	}
	if got.Tokens != 8 || got.TextFrames != 8 || len(got.GapsUS) != 7 || got.Route != "direct" {
		t.Errorf("tokens %d, text frames %d, gaps %d, route %q", got.Tokens, got.TextFrames, len(got.GapsUS), got.Route)
	}
	// role, 8 contents, finish, usage: [DONE] is not a frame.
	if got.Frames != 11 {
		t.Errorf("frames %d, want 11", got.Frames)
	}
	if got.TTFT < 0.02 || got.LastText < got.TTFT || got.Total < got.LastText {
		t.Errorf("ttft %.4f, last text %.4f, total %.4f", got.TTFT, got.LastText, got.Total)
	}
	records := u.summaries()
	if len(records) != 1 || records[0]["completed"] != true || records[0]["tokens_sent"] != int64(8) {
		t.Errorf("recorded %v", records)
	}
	// A second call reuses the connection; a wrong token count is a failure of its own kind.
	strict := directCaller(newHTTPClient(), server.URL+"/v1", requestBody(t, nil), 9, 10*time.Second)
	if got := strict(context.Background(), 1); got.Outcome != outcomeError || got.Kind != "8 tokens, not 9" {
		t.Errorf("outcome %s %q", got.Outcome, got.Kind)
	}
}

func TestUpstreamAnswersQueuedScriptsThenTheDefault(t *testing.T) {
	server, u := scriptedServer(t, script{Tokens: tokens(3)})
	if code := post(t, server.URL+"/_scripted/script", map[string]any{
		"model": nil, "scripts": []any{map[string]any{"status": 500}, map[string]any{"status": 429, "retry_after_s": 1.5}},
	}); code != 200 {
		t.Fatalf("script: HTTP %d", code)
	}
	call := directCaller(newHTTPClient(), server.URL+"/v1", requestBody(t, nil), 3, 10*time.Second)
	kinds := []string{}
	for i := range 3 {
		got := call(context.Background(), i)
		kinds = append(kinds, got.Outcome+" "+got.Kind)
	}
	want := []string{"error HTTP 500", "error HTTP 429", "ok "}
	if strings.Join(kinds, "|") != strings.Join(want, "|") {
		t.Errorf("outcomes %q, want %q", kinds, want)
	}
	if n := len(u.summaries()); n != 3 {
		t.Errorf("%d requests recorded, want 3", n)
	}
	if code := post(t, server.URL+"/_scripted/reset", map[string]any{}); code != 200 || len(u.summaries()) != 0 {
		t.Errorf("reset: HTTP %d, %d requests left", code, len(u.summaries()))
	}
	// A default set over the control endpoint replaces the flags' one until reset.
	post(t, server.URL+"/_scripted/script", map[string]any{
		"model": "deepseek-v4-flash", "scripts": []any{map[string]any{"tokens": []string{"a", "b"}}}, "default": true,
	})
	if got := call(context.Background(), 0); got.Kind != "2 tokens, not 3" {
		t.Errorf("after a new default: %s %q", got.Outcome, got.Kind)
	}
	// Scripts the Go upstream does not play are refused, not ignored.
	if code := post(t, server.URL+"/_scripted/script", map[string]any{
		"model": nil, "scripts": []any{map[string]any{"hang": true}},
	}); code != 400 {
		t.Errorf("an unsupported script: HTTP %d, want 400", code)
	}
}

func TestUpstreamFailsEveryNthRequestFromItsFlags(t *testing.T) {
	u := newUpstream(script{Tokens: tokens(2)}, 3, 503)
	server := httptest.NewServer(u)
	defer server.Close()
	call := directCaller(newHTTPClient(), server.URL+"/v1", requestBody(t, nil), 2, 10*time.Second)
	var kinds []string
	for i := range 6 {
		kinds = append(kinds, call(context.Background(), i).Kind)
	}
	want := []string{"", "", "HTTP 503", "", "", "HTTP 503"}
	if strings.Join(kinds, "|") != strings.Join(want, "|") {
		t.Errorf("kinds %q, want %q", kinds, want)
	}
}

func TestUpstreamStopsAtMaxTokensWithFinishLength(t *testing.T) {
	server, _ := scriptedServer(t, script{Tokens: tokens(10)})
	resp, err := http.Post(server.URL+"/v1/chat/completions", "application/json",
		bytes.NewReader(requestBody(t, map[string]any{"max_tokens": 4})))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	raw, _ := io.ReadAll(resp.Body)
	got := events(t, string(raw))
	// role, 4 contents, finish, usage, [DONE]
	if len(got) != 8 || got[7] != "[DONE]" {
		t.Fatalf("%d events: %q", len(got), got)
	}
	if !strings.Contains(got[5], `"finish_reason":"length"`) {
		t.Errorf("finish event %s", got[5])
	}
	if !strings.Contains(got[6], `"prompt_tokens":2,"completion_tokens":4`) {
		t.Errorf("usage event %s", got[6])
	}
}

func TestUpstreamRecordsAClientThatLeavesMidAnswer(t *testing.T) {
	server, u := scriptedServer(t, script{Tokens: tokens(2000), InterTokenS: 0.005})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, server.URL+"/v1/chat/completions",
		bytes.NewReader(requestBody(t, nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	reader := newSSEReader(resp.Body)
	for range 3 {
		if _, err := reader.Next(); err != nil {
			t.Fatal(err)
		}
	}
	cancelledAt := monotonic()
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		records := u.summaries()
		if at, ok := records[0]["disconnected_at"].(float64); ok {
			if at < cancelledAt || records[0]["completed"] != false {
				t.Errorf("disconnected at %.6f, cancelled at %.6f, record %v", at, cancelledAt, records[0])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no disconnect recorded: %v", records[0])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunSliceRunsEveryCallOnItsWorkers(t *testing.T) {
	server, _ := scriptedServer(t, script{Tokens: tokens(4)})
	call := directCaller(newHTTPClient(), server.URL+"/v1", requestBody(t, nil), 4, 10*time.Second)
	result := runSlice(context.Background(), call, sliceSpec{Calls: 10, Concurrency: 3,
		Deadline: time.Minute, Stagger: 10 * time.Millisecond})
	if result.Started != 10 {
		t.Errorf("started %d of 10", result.Started)
	}
	for i, c := range result.Calls {
		if c == nil || c.Index != i || c.Outcome != outcomeOK {
			t.Errorf("call %d: %+v", i, c)
		}
	}
	summary := aggregate("direct", 3, result)
	if summary.OK != 10 || summary.Tokens != 40 || summary.Routes["direct"] != 10 || len(summary.Errors) != 0 {
		t.Errorf("aggregate %+v", summary)
	}
	// No call starts after the deadline.
	late := runSlice(context.Background(), call, sliceSpec{Calls: 10, Concurrency: 2, Deadline: 0})
	if late.Started != 0 {
		t.Errorf("started %d calls after the deadline", late.Started)
	}
}

func TestRunSliceEndsWhenTheCallsRunOutNotWhenTheLastRetryDelayDoes(t *testing.T) {
	// Every call is refused with a minute's RetryInfo delay: once all the calls are taken,
	// the workers still waiting out their delays have nothing to retry and the slice ends.
	refuse := func(_ context.Context, index int) Call {
		return Call{Index: index, Outcome: outcomeRefused, RetryAfterMS: 60_000}
	}
	result := runSlice(context.Background(), refuse, sliceSpec{Calls: 3, Concurrency: 3,
		Deadline: 5 * time.Minute})
	if result.Started != 3 {
		t.Errorf("started %d of 3", result.Started)
	}
	if result.Wall > 30*time.Second {
		t.Errorf("the slice waited %v for retry delays after its last call", result.Wall)
	}
}
