package groundwire_test

// The live SDK scenario, the same in every language. It runs against a real server:
//
//	cd /work/sdk && .venv/bin/python -m tests.e2e.live   # prints the variables
//	export GROUNDWIRE_TEST_ADDRESS=... GROUNDWIRE_TEST_API_KEY=... GROUNDWIRE_TEST_UPSTREAM=...
//	go test -run Scenario -v ./groundwire/
//
// Without GROUNDWIRE_TEST_ADDRESS and GROUNDWIRE_TEST_API_KEY it is skipped. The server may use
// any OpenAI-compatible upstream: the checks that need a scripted answer (the exact text, its
// [1] citation, a slow answer to cancel, the stack's catalog and prices) run only when
// GROUNDWIRE_TEST_UPSTREAM offers the scripted upstream's control endpoints (probed at the
// start); otherwise they are skipped with a log line naming the reason.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	groundwirev1 "github.com/groundwire/groundwire/sdks/go/gen/groundwire/v1"
	"github.com/groundwire/groundwire/sdks/go/groundwire"
)

// defaultAnswer is what the scripted upstream answers unless told otherwise.
const defaultAnswer = "The sources say so [1]."

// longQuery asks an unscripted upstream for an answer long enough to cancel midway.
const longQuery = "Explain in detail, in at least 400 words, why volcanoes erupt."

type liveEnv struct {
	address, apiKey, upstream string
	// unscripted says why the scripted checks are skipped; empty when the upstream is scripted.
	unscripted string
}

func (e liveEnv) scripted() bool { return e.unscripted == "" }

func scenarioEnv(t *testing.T) liveEnv {
	t.Helper()
	env := liveEnv{
		address:  os.Getenv("GROUNDWIRE_TEST_ADDRESS"),
		apiKey:   os.Getenv("GROUNDWIRE_TEST_API_KEY"),
		upstream: os.Getenv("GROUNDWIRE_TEST_UPSTREAM"),
	}
	if env.address == "" || env.apiKey == "" {
		t.Skip("live scenario skipped: set GROUNDWIRE_TEST_ADDRESS and GROUNDWIRE_TEST_API_KEY, and " +
			"GROUNDWIRE_TEST_UPSTREAM for the scripted checks (start a stack with " +
			"`.venv/bin/python -m tests.e2e.live` from the repository root and export its `go` variables)")
	}
	env.unscripted = probeUpstream(env.upstream)
	if !env.scripted() {
		t.Logf("skipping the checks that need the scripted upstream: %s", env.unscripted)
	}
	return env
}

// probeUpstream returns why upstream is not the scripted upstream, or "" when its control
// endpoints answer.
func probeUpstream(upstream string) string {
	if upstream == "" {
		return "GROUNDWIRE_TEST_UPSTREAM is not set"
	}
	url := controlURL(upstream, "requests")
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return fmt.Sprintf("%s gave no scripted answer (%v)", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("%s answered %s: not a scripted upstream", url, resp.Status)
	}
	var listed []json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&listed); err != nil {
		return fmt.Sprintf("%s answered no request list: not a scripted upstream", url)
	}
	return ""
}

func controlURL(upstream, endpoint string) string {
	return strings.TrimSuffix(strings.TrimSuffix(upstream, "/"), "/v1") + "/_scripted/" + endpoint
}

// checkAnswer wants the scripted answer from the scripted upstream, any text from another.
func checkAnswer(t *testing.T, env liveEnv, text string) {
	t.Helper()
	if env.scripted() && text != defaultAnswer {
		t.Errorf("answer = %q, want %q", text, defaultAnswer)
	}
	if !env.scripted() && strings.TrimSpace(text) == "" {
		t.Error("the answer is empty")
	}
}

// finished says whether an answer ended well: STOP, or (a real model) its token limit.
func finished(env liveEnv, reason groundwirev1.FinishReason) bool {
	return reason == groundwirev1.FinishReason_FINISH_REASON_STOP ||
		(!env.scripted() && reason == groundwirev1.FinishReason_FINISH_REASON_MAX_TOKENS)
}

func u32(v uint32) *uint32   { return &v }
func f32(v float32) *float32 { return &v }

func retrievalGrounding(topK uint32) *groundwirev1.GenerateRequest_Retrieval {
	return &groundwirev1.GenerateRequest_Retrieval{Retrieval: &groundwirev1.RetrieveRequest{TopK: u32(topK)}}
}

func TestScenario(t *testing.T) {
	env := scenarioEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client, err := groundwire.Dial(ctx, env.address, groundwire.WithAPIKey(env.apiKey), groundwire.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	t.Run("1_health_and_capabilities", func(t *testing.T) {
		serving, err := client.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if serving != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health = %v, want SERVING", serving)
		}
		caps, err := client.Capabilities(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range caps.GetModels() {
			names = append(names, m.GetName())
		}
		if len(names) == 0 {
			t.Errorf("models = %v, want some", names)
		}
		// The live stack's catalog; another upstream comes with its own.
		if env.scripted() && !slices.Contains(names, "deepseek-v4-flash") {
			t.Errorf("models = %v, want a list including deepseek-v4-flash", names)
		}
		if !caps.GetFeatures()["generation"] {
			t.Errorf("features = %v, want generation=true", caps.GetFeatures())
		}
	})

	t.Run("2_ingest", func(t *testing.T) {
		docs := []*groundwirev1.Document{
			{DocId: "volcano", Title: "Why volcanoes erupt", Text: "Volcanoes erupt when molten rock called magma " +
				"rises toward the surface. Gas dissolved in the magma expands as the pressure drops, and the " +
				"growing pressure blasts the magma out through vents in the crust."},
			{DocId: "sourdough", Title: "Sourdough bread", Text: "Sourdough bread is leavened by a starter of wild " +
				"yeast and lactic acid bacteria. The bacteria give the bread its sour taste. A long, slow " +
				"fermentation develops flavour and an open crumb."},
			{DocId: "tides", Title: "Ocean tides", Text: "Tides are the regular rise and fall of the sea. They are " +
				"caused mainly by the gravitational pull of the Moon, and to a lesser extent the Sun. Most " +
				"coasts see two high tides and two low tides each day."},
		}
		summary, err := client.Ingest(ctx, docs)
		if err != nil {
			t.Fatal(err)
		}
		if summary.GetCreated()+summary.GetUnchanged() != 3 || summary.GetFailed() != 0 {
			t.Errorf("summary = %v, want 3 created or unchanged and 0 failed", summary)
		}
	})

	t.Run("3_retrieve", func(t *testing.T) {
		resp, err := client.Retrieve(ctx, &groundwirev1.RetrieveRequest{Query: "why do volcanoes erupt", TopK: u32(3)})
		if err != nil {
			t.Fatal(err)
		}
		chunks := resp.GetChunks()
		if len(chunks) == 0 || chunks[0].GetDocId() != "volcano" {
			t.Fatalf("chunks = %v, want volcano first", chunks)
		}
	})

	t.Run("4_generate_frames", func(t *testing.T) {
		stream, err := client.Generate(ctx, &groundwirev1.GenerateRequest{
			Query: "why do volcanoes erupt", Grounding: retrievalGrounding(3), BypassCache: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		var all []*groundwirev1.GenerateResponse
		for frame, err := range stream.Frames() {
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, frame)
		}
		if len(all) < 2 || all[0].GetStart() == nil || all[len(all)-1].GetEnd() == nil {
			t.Fatalf("frames = %v, want start first and end last", all)
		}
		sourceIDs := map[string]bool{}
		for _, s := range all[0].GetStart().GetSources() {
			sourceIDs[s.GetChunkId()] = true
		}
		var text strings.Builder
		citations := 0
		for _, frame := range all[1 : len(all)-1] {
			switch f := frame.GetFrame().(type) {
			case *groundwirev1.GenerateResponse_Delta:
				text.WriteString(f.Delta.GetText())
			case *groundwirev1.GenerateResponse_Citation:
				citations++
				if f.Citation.GetValid() && !sourceIDs[f.Citation.GetChunkId()] {
					t.Errorf("citation %v names a chunk that is not among the sources", f.Citation)
				}
			default:
				t.Errorf("unexpected frame between start and end: %v", frame)
			}
		}
		checkAnswer(t, env, text.String())
		if env.scripted() && citations == 0 {
			t.Error("no citation frame for the [1] marker")
		}
		end := all[len(all)-1].GetEnd()
		if !finished(env, end.GetFinishReason()) {
			t.Errorf("finish reason = %v, want STOP", end.GetFinishReason())
		}
		if end.GetUsage().GetCompletionTokens() == 0 {
			t.Errorf("usage = %v, want completion tokens > 0", end.GetUsage())
		}
		// Prices come from the catalog, which another upstream brings.
		if env.scripted() && (end.GetCost().GetMicros() <= 0 || end.GetCost().GetCurrency() != "USD") {
			t.Errorf("cost = %v, want micros > 0 in USD", end.GetCost())
		}
	})

	t.Run("5_cancel", func(t *testing.T) {
		query := "why do volcanoes erupt"
		if env.scripted() {
			tokens := make([]string, 200)
			for i := range tokens {
				tokens[i] = fmt.Sprintf(" w%d", i)
			}
			queueScript(t, env.upstream, tokens, 0.02)
		} else {
			t.Logf("skipping the scripted slow answer (asking for a long one instead): %s", env.unscripted)
			query = longQuery
		}

		callCtx, cancelCall := context.WithCancel(ctx)
		defer cancelCall()
		stream, err := client.Generate(callCtx, &groundwirev1.GenerateRequest{
			Query: query, Grounding: retrievalGrounding(3), BypassCache: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		for {
			frame, err := stream.Next()
			if err != nil {
				t.Fatalf("stream ended before the first delta: %v", err)
			}
			if frame.GetDelta() != nil {
				break
			}
		}
		cancelled := time.Now()
		cancelCall()
		for {
			_, err = stream.Next()
			if err != nil {
				break
			}
		}
		elapsed := time.Since(cancelled)
		var gwErr *groundwire.Error
		if !errors.As(err, &gwErr) || gwErr.Code != codes.Canceled || !errors.Is(err, context.Canceled) {
			t.Errorf("after cancel: %v, want a CANCELLED *groundwire.Error", err)
		}
		// The slow answer takes 4 s; ending well before that shows the cancel took effect.
		if elapsed > time.Second {
			t.Errorf("the stream took %v to end after cancel", elapsed)
		}
		t.Logf("stream ended %v after cancel", elapsed.Round(time.Microsecond))
	})

	t.Run("6_typed_error", func(t *testing.T) {
		stream, err := client.Generate(ctx, &groundwirev1.GenerateRequest{
			Query: "why do volcanoes erupt", Temperature: f32(5.0), BypassCache: true,
		})
		if err == nil {
			defer stream.Close()
			_, err = stream.Text()
		}
		var gwErr *groundwire.Error
		if !errors.As(err, &gwErr) {
			t.Fatalf("error = %v, want a *groundwire.Error", err)
		}
		if gwErr.Code != codes.InvalidArgument {
			t.Errorf("code = %v, want InvalidArgument", gwErr.Code)
		}
		if gwErr.Reason != "ERROR_REASON_INVALID_FIELD" {
			t.Errorf("reason = %q, want ERROR_REASON_INVALID_FIELD", gwErr.Reason)
		}
		if _, ok := gwErr.Field("temperature"); !ok {
			t.Errorf("field violations = %v, want one on temperature", gwErr.FieldViolations)
		}
		if gwErr.CorrelationID == "" {
			t.Error("the error carries no correlation id")
		}
		t.Logf("typed error: %v", gwErr)
	})

	t.Run("7_correlation_id", func(t *testing.T) {
		id := "go-scenario-" + groundwire.NewCorrelationID()[:12]
		callCtx := groundwire.WithCorrelationID(ctx, id)

		var info groundwire.CallInfo
		if _, err := client.Capabilities(callCtx, groundwire.CaptureCallInfo(&info)); err != nil {
			t.Fatal(err)
		}
		if got := info.Header.Get(groundwire.CorrelationHeader); len(got) != 1 || got[0] != id {
			t.Errorf("unary header %s = %q, want %q", groundwire.CorrelationHeader, got, id)
		}

		stream, err := client.Generate(callCtx, &groundwirev1.GenerateRequest{
			Query: "why do volcanoes erupt", Grounding: retrievalGrounding(3), BypassCache: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		header, err := stream.Header()
		if err != nil {
			t.Fatal(err)
		}
		if got := header.Get(groundwire.CorrelationHeader); len(got) != 1 || got[0] != id {
			t.Errorf("stream header %s = %q, want %q", groundwire.CorrelationHeader, got, id)
		}
		text, err := stream.Text()
		if err != nil {
			t.Fatal(err)
		}
		checkAnswer(t, env, text)
	})

	t.Run("8_timing", func(t *testing.T) {
		const n = 20
		req := &groundwirev1.GenerateRequest{
			Query: "why do volcanoes erupt",
			Grounding: &groundwirev1.GenerateRequest_Context{Context: &groundwirev1.ContextPassages{
				Passages: []*groundwirev1.ContextPassage{{
					Id: "p1", Title: "Why volcanoes erupt",
					Text: "Volcanoes erupt when magma rises and the gas dissolved in it expands.",
				}},
			}},
			BypassCache: true,
		}
		durations := make([]time.Duration, 0, n)
		for range n {
			began := time.Now()
			text, end, err := client.GenerateText(ctx, req)
			elapsed := time.Since(began)
			if err != nil {
				t.Fatal(err)
			}
			if !finished(env, end.GetFinishReason()) {
				t.Fatalf("answer %q, end %v", text, end)
			}
			checkAnswer(t, env, text)
			durations = append(durations, elapsed)
		}
		slices.Sort(durations)
		fmt.Printf("GENERATE_STREAM_MS language=go n=%d p50=%.1f p90=%.1f\n",
			n, ms(percentile(durations, 50)), ms(percentile(durations, 90)))
	})
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// queueScript makes the scripted upstream answer its next request with tokens.
func queueScript(t *testing.T, upstream string, tokens []string, interTokenS float64) {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"model":   nil,
		"scripts": []map[string]any{{"tokens": tokens, "inter_token_s": interTokenS}},
		"default": false,
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(controlURL(upstream, "script"), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("queueing the script: %s: %s", resp.Status, reply)
	}
}
