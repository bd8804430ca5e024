package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// The Go scripted upstream: the OpenAI streaming protocol exactly as the Python scripted
// upstream (testing/groundwire/testing/scripted_llm.py) speaks it for the benchmark, byte
// for byte in every SSE event, and the same control endpoints (/_scripted/reset, script,
// requests), so the benchmark scripts either one alike. It implements the scripts the
// benchmark uses (tokens, delays, error statuses, finish reason, usage); hangs, stalls and
// cut connections stay with the Python one, which the tests use.

// defaultAnswerTokens is the Python upstream's DEFAULT_ANSWER_TOKENS.
var defaultAnswerTokens = []string{"The", " sources", " say", " so", " [1", "]", "."}

// script is what the upstream does for one request (the Python Script's fields it knows).
type script struct {
	Tokens        []string `json:"tokens"` // nil: defaultAnswerTokens
	TTFTS         float64  `json:"ttft_s"`
	InterTokenS   float64  `json:"inter_token_s"`
	Status        int      `json:"status"` // anything but 200: an OpenAI-shaped error
	RetryAfterS   *float64 `json:"retry_after_s"`
	FinishReason  string   `json:"finish_reason"`
	Usage         *bool    `json:"usage"`
	PromptTokens  *int     `json:"prompt_tokens"`
	CachedTokens  int      `json:"cached_tokens"`
	ResponseModel *string  `json:"response_model"`
}

func (s *script) normalise() {
	if s.Status == 0 {
		s.Status = http.StatusOK
	}
	if s.FinishReason == "" {
		s.FinishReason = "stop"
	}
}

func parseScript(raw json.RawMessage) (script, error) {
	var s script
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&s); err != nil {
		return s, fmt.Errorf("script not supported by the Go upstream: %w", err)
	}
	s.normalise()
	return s, nil
}

// monotonic is CLOCK_MONOTONIC in seconds: Python's time.monotonic(), so the benchmark
// compares our times with its own.
func monotonic() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return math.NaN()
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

// record is one chat-completion request as the upstream saw it; updated while answered.
type record struct {
	index          int
	model          string
	headers        map[string]string
	stream         bool
	messageCount   int
	receivedAt     float64
	firstTokenAt   atomic.Uint64 // math.Float64bits; 0: none yet
	tokensSent     atomic.Int64
	completed      atomic.Bool
	disconnectedAt atomic.Uint64 // math.Float64bits; 0: not disconnected
}

func floatOrNil(bits uint64) any {
	if bits == 0 {
		return nil
	}
	return math.Float64frombits(bits)
}

func (r *record) summary() map[string]any {
	disconnected := r.disconnectedAt.Load()
	return map[string]any{
		"index": r.index, "model": r.model, "headers": r.headers, "stream": r.stream,
		"message_count": r.messageCount, "received_at": r.receivedAt,
		"first_token_at": floatOrNil(r.firstTokenAt.Load()), "tokens_sent": r.tokensSent.Load(),
		"completed": r.completed.Load(), "disconnected": disconnected != 0,
		"disconnected_at": floatOrNil(disconnected),
	}
}

func (r *record) disconnect() {
	if !r.completed.Load() {
		r.disconnectedAt.CompareAndSwap(0, math.Float64bits(monotonic()))
	}
}

// upstream is the scripted upstream's state: queued scripts and defaults by model (""
// stands for Python's None: any model) and the recorded requests.
type upstream struct {
	base      script // the flags' default; survives reset
	failEvery int    // the flags' failures: every Nth request answers failStatus
	failWith  int

	mu       sync.Mutex
	queues   map[string][]script
	defaults map[string]script
	records  []*record
	served   int // requests answered by the flags' default, for failEvery
}

func newUpstream(base script, failEvery, failStatus int) *upstream {
	base.normalise()
	return &upstream{base: base, failEvery: failEvery, failWith: failStatus,
		queues: map[string][]script{}, defaults: map[string]script{}}
}

func (u *upstream) reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.queues = map[string][]script{}
	u.defaults = map[string]script{}
	u.records = nil
	u.served = 0
}

// next records a request for model and picks its script: the model's queue, the queue for
// any model, the model's default, the default for any model, else the flags' default.
func (u *upstream) next(model string, rec *record) script {
	u.mu.Lock()
	defer u.mu.Unlock()
	rec.index = len(u.records)
	u.records = append(u.records, rec)
	for _, key := range []string{model, ""} {
		if queue := u.queues[key]; len(queue) > 0 {
			u.queues[key] = queue[1:]
			return queue[0]
		}
	}
	for _, key := range []string{model, ""} {
		if s, ok := u.defaults[key]; ok {
			return s
		}
	}
	u.served++
	if u.failEvery > 0 && u.served%u.failEvery == 0 {
		return script{Status: u.failWith, TTFTS: u.base.TTFTS, FinishReason: "stop"}
	}
	return u.base
}

func (u *upstream) summaries() []map[string]any {
	u.mu.Lock()
	records := append([]*record(nil), u.records...)
	u.mu.Unlock()
	out := make([]map[string]any, len(records))
	for i, r := range records {
		out[i] = r.summary()
	}
	return out
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v1/chat/completions" || r.URL.Path == "/chat/completions":
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, "use POST", nil)
			return
		}
		u.chat(w, r)
	case strings.HasPrefix(r.URL.Path, "/_scripted/"):
		u.control(w, r)
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path), nil)
	}
}

func (u *upstream) control(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + r.URL.Path
	switch route {
	case "GET /_scripted/requests":
		writeJSON(w, http.StatusOK, u.summaries())
	case "POST /_scripted/reset":
		u.reset()
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	case "POST /_scripted/script":
		var data struct {
			Model   *string           `json:"model"`
			Scripts []json.RawMessage `json:"scripts"`
			Default bool              `json:"default"`
		}
		if err := json.NewDecoder(r.Body).Decode(&data); err != nil || len(data.Scripts) == 0 {
			writeError(w, http.StatusBadRequest, "need a model (string or null) and at least one script", nil)
			return
		}
		scripts := make([]script, 0, len(data.Scripts))
		for _, raw := range data.Scripts {
			s, err := parseScript(raw)
			if err != nil {
				writeError(w, http.StatusBadRequest, err.Error(), nil)
				return
			}
			scripts = append(scripts, s)
		}
		model := ""
		if data.Model != nil {
			model = *data.Model
		}
		u.mu.Lock()
		if data.Default {
			u.defaults[model] = scripts[0]
		} else {
			u.queues[model] = append(u.queues[model], scripts...)
		}
		u.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	default:
		writeError(w, http.StatusNotFound, "no route for "+route, nil)
	}
}

// chatRequest is the part of a chat-completions request the upstream reads.
type chatRequest struct {
	Model         any `json:"model"`
	Stream        bool
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           *int              `json:"max_tokens"`
	MaxCompletionTokens *int              `json:"max_completion_tokens"`
	Messages            []json.RawMessage `json:"messages"`
}

// countPromptWords is the whitespace-separated words of all message contents (text parts
// included), as the Python upstream counts prompt tokens.
func countPromptWords(messages []json.RawMessage) int {
	count := 0
	for _, raw := range messages {
		var m struct {
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		var text string
		if json.Unmarshal(m.Content, &text) == nil {
			count += len(strings.Fields(text))
			continue
		}
		var parts []struct {
			Text *string `json:"text"`
		}
		if json.Unmarshal(m.Content, &parts) == nil {
			for _, p := range parts {
				if p.Text != nil {
					count += len(strings.Fields(*p.Text))
				}
			}
		}
	}
	return count
}

func (u *upstream) chat(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var body chatRequest
	if err := json.Unmarshal(raw, &body); err != nil {
		writeError(w, http.StatusBadRequest, "body is not valid JSON", nil)
		return
	}
	model, ok := body.Model.(string)
	if !ok {
		writeError(w, http.StatusBadRequest, "model must be a string", nil)
		return
	}
	headers := make(map[string]string, len(r.Header))
	for name, values := range r.Header {
		headers[strings.ToLower(name)] = strings.Join(values, ", ")
	}
	rec := &record{model: model, headers: headers, stream: body.Stream,
		messageCount: len(body.Messages), receivedAt: monotonic()}
	s := u.next(model, rec)
	ctx := r.Context()
	go func() {
		// The connection's context ends when the client goes away (or the answer is done):
		// a client that leaves mid-answer is recorded then, not at the next failed write.
		<-ctx.Done()
		rec.disconnect()
	}()
	u.respond(ctx, w, s, rec, body)
}

// sleepUntil waits until due, or returns false when ctx ends first.
func sleepUntil(ctx context.Context, timer *time.Timer, due time.Time) bool {
	delay := time.Until(due)
	if delay <= 0 {
		return ctx.Err() == nil
	}
	timer.Reset(delay)
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		timer.Stop()
		return false
	}
}

func (u *upstream) respond(ctx context.Context, w http.ResponseWriter, s script, rec *record, body chatRequest) {
	tokens := s.Tokens
	if tokens == nil {
		tokens = defaultAnswerTokens
	}
	finish := s.FinishReason
	limit := body.MaxCompletionTokens
	if limit == nil || *limit == 0 {
		limit = body.MaxTokens
	}
	if limit != nil && *limit < len(tokens) {
		tokens, finish = tokens[:max(*limit, 0)], "length"
	}
	prompt := countPromptWords(body.Messages)
	if s.PromptTokens != nil {
		prompt = *s.PromptTokens
	}
	model := rec.model
	if s.ResponseModel != nil {
		model = *s.ResponseModel
	}
	id := "chatcmpl-" + strconv.Itoa(rec.index)
	created := time.Now().Unix()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	start := time.Now()
	ttft := seconds(s.TTFTS)

	if s.Status != http.StatusOK {
		if !sleepUntil(ctx, timer, start.Add(ttft)) {
			return
		}
		writeError(w, s.Status, fmt.Sprintf("scripted error %d", s.Status), s.RetryAfterS)
		rec.completed.Store(true)
		return
	}
	usage := usageJSON(prompt, len(tokens), s.CachedTokens)
	if !body.Stream {
		// A whole answer takes as long as its stream would have.
		due := start.Add(ttft + seconds(s.InterTokenS)*time.Duration(max(len(tokens)-1, 0)))
		if !sleepUntil(ctx, timer, due) {
			return
		}
		writeJSON(w, http.StatusOK, completionBody(id, created, model, strings.Join(tokens, ""), finish, usage))
		rec.firstTokenAt.Store(math.Float64bits(monotonic()))
		rec.tokensSent.Store(int64(len(tokens)))
		rec.completed.Store(true)
		return
	}

	includeUsage := body.StreamOptions != nil && body.StreamOptions.IncludeUsage
	enc := newChunkEncoder(id, created, model, includeUsage)
	flusher, _ := w.(http.Flusher)
	header := w.Header()
	header.Set("Content-Type", "text/event-stream; charset=utf-8")
	header.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	// write buffers an event; flush sends what is buffered (one HTTP chunk, one write).
	write := func(event []byte) bool {
		_, err := w.Write(event)
		return err == nil
	}
	flush := func() bool {
		if flusher != nil {
			flusher.Flush()
		}
		return ctx.Err() == nil
	}
	flush()
	// Tokens follow a fixed schedule from the first one, so a busy machine delays a token
	// without stretching the whole answer (as the Python upstream does). The events are
	// flushed before each wait: on schedule, every token leaves at its own time; behind it,
	// the tokens already due leave together in one write, as the kernel's socket buffer
	// would merge them anyway, instead of a system call each that would put the upstream
	// further behind.
	if !sleepUntil(ctx, timer, time.Now().Add(ttft)) {
		return
	}
	due := time.Now()
	for i, token := range tokens {
		if i == 0 {
			if !write(enc.role()) {
				return
			}
		} else if s.InterTokenS > 0 {
			due = due.Add(seconds(s.InterTokenS))
			if time.Until(due) > 0 && (!flush() || !sleepUntil(ctx, timer, due)) {
				return
			}
		}
		if !write(enc.content(token)) {
			return
		}
		if i == 0 {
			if !flush() {
				return
			}
			rec.firstTokenAt.Store(math.Float64bits(monotonic()))
		}
		rec.tokensSent.Add(1)
	}
	if len(tokens) == 0 && !write(enc.role()) {
		return
	}
	ok := write(enc.finish(finish))
	if includeUsage && (s.Usage == nil || *s.Usage) {
		ok = ok && write(enc.usage(usage))
	}
	if ok && write([]byte("data: [DONE]\n\n")) && flush() {
		rec.completed.Store(true)
	}
}

// chunkEncoder builds the SSE events of one streamed completion, as the Python upstream's
// ChunkEncoder does (constant parts encoded once per response).
type chunkEncoder struct {
	head, tail, contentPrefix, contentSuffix []byte
}

func newChunkEncoder(id string, created int64, model string, includeUsage bool) *chunkEncoder {
	head := fmt.Appendf(nil, `data: {"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,"system_fingerprint":null,"choices":[`,
		pyJSONString(id), created, pyJSONString(model))
	tail := []byte("}\n\n")
	if includeUsage {
		// OpenAI sends "usage": null on every chunk but the last when usage was requested.
		tail = []byte(`,"usage":null}` + "\n\n")
	}
	return &chunkEncoder{
		head: head, tail: tail,
		contentPrefix: append(append([]byte(nil), head...), `{"index":0,"delta":{"content":`...),
		contentSuffix: append([]byte(`},"logprobs":null,"finish_reason":null}]`), tail...),
	}
}

func (e *chunkEncoder) choice(delta, finish string) []byte {
	b := append([]byte(nil), e.head...)
	b = fmt.Appendf(b, `{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]`, delta, finish)
	return append(b, e.tail...)
}

func (e *chunkEncoder) role() []byte {
	return e.choice(`{"role":"assistant","content":""}`, "null")
}

func (e *chunkEncoder) content(piece string) []byte {
	b := make([]byte, 0, len(e.contentPrefix)+len(piece)+8+len(e.contentSuffix))
	b = append(b, e.contentPrefix...)
	b = appendPyJSONString(b, piece)
	return append(b, e.contentSuffix...)
}

func (e *chunkEncoder) finish(reason string) []byte {
	return e.choice("{}", pyJSONString(reason))
}

func (e *chunkEncoder) usage(usage []byte) []byte {
	b := append([]byte(nil), e.head...)
	b = append(b, `],"usage":`...)
	b = append(b, usage...)
	return append(b, "}\n\n"...)
}

func usageJSON(prompt, completion, cached int) []byte {
	return fmt.Appendf(nil,
		`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":%d}}`,
		prompt, completion, prompt+completion, cached)
}

// pyJSONString is s as Python's json.dumps writes it (ensure_ascii: every non-ASCII
// character as \uXXXX, surrogate pairs above the BMP), so our events match the Python
// upstream's byte for byte.
func pyJSONString(s string) string { return string(appendPyJSONString(nil, s)) }

func appendPyJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"':
			b = append(b, '\\', '"')
		case r == '\\':
			b = append(b, '\\', '\\')
		case r == '\n':
			b = append(b, '\\', 'n')
		case r == '\r':
			b = append(b, '\\', 'r')
		case r == '\t':
			b = append(b, '\\', 't')
		case r == '\b':
			b = append(b, '\\', 'b')
		case r == '\f':
			b = append(b, '\\', 'f')
		case r < 0x20 || (r >= 0x7f && r <= 0xffff) || r == utf8.RuneError:
			b = append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		case r > 0xffff:
			hi, lo := utf16.EncodeRune(r)
			for _, u := range [2]rune{hi, lo} {
				b = append(b, '\\', 'u', hex[u>>12&0xf], hex[u>>8&0xf], hex[u>>4&0xf], hex[u&0xf])
			}
		default:
			b = append(b, byte(r))
		}
	}
	return append(b, '"')
}

func completionBody(id string, created int64, model, content, finish string, usage []byte) any {
	return map[string]any{
		"id": id, "object": "chat.completion", "created": created, "model": model,
		"system_fingerprint": nil,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": content, "refusal": nil},
			"logprobs":      nil,
			"finish_reason": finish,
		}},
		"usage": json.RawMessage(usage),
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		status, raw = http.StatusInternalServerError, []byte(`{"error":"encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.WriteHeader(status)
	_, _ = w.Write(raw)
}

// errorKinds are OpenAI's error types and codes by status, as the Python upstream sends.
var errorKinds = map[int][2]string{
	400: {"invalid_request_error", ""}, 401: {"authentication_error", "invalid_api_key"},
	403: {"permission_error", ""}, 404: {"not_found_error", "not_found"},
	405: {"invalid_request_error", "method_not_allowed"}, 408: {"timeout_error", "timeout"},
	409: {"conflict_error", ""}, 413: {"invalid_request_error", "request_too_large"},
	422: {"invalid_request_error", ""}, 429: {"rate_limit_error", "rate_limit_exceeded"},
}

// writeError answers an OpenAI-shaped error, with Retry-After (whole seconds, rounded up)
// and retry-after-ms when retryAfterS is given.
func writeError(w http.ResponseWriter, status int, message string, retryAfterS *float64) {
	kind, ok := errorKinds[status]
	if !ok {
		kind = [2]string{"api_error", ""}
		if status >= 500 {
			kind[0] = "server_error"
		}
	}
	var code any
	if kind[1] != "" {
		code = kind[1]
	}
	if retryAfterS != nil {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(*retryAfterS))))
		w.Header().Set("Retry-After-Ms", strconv.Itoa(int(math.Round(*retryAfterS*1000))))
	}
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"message": message, "type": kind[0], "param": nil, "code": code}})
}

// upstreamCommand serves the scripted upstream until SIGTERM or SIGINT.
func upstreamCommand(ctx context.Context, args []string, out io.Writer) error {
	flags := flag.NewFlagSet("upstream", flag.ContinueOnError)
	host := flags.String("host", "127.0.0.1", "address to bind")
	port := flags.Int("port", 8089, "port to bind (0: any free one)")
	tokens := flags.Int("tokens", -1, "answer with N tokens \" w0\" .. (-1: the Python upstream's default answer)")
	ttftMS := flags.Float64("ttft-ms", 0, "time to the first token")
	itlMS := flags.Float64("itl-ms", 0, "time between tokens")
	failEvery := flags.Int("fail-every", 0, "every Nth request answers -fail-status instead (0: none)")
	failStatus := flags.Int("fail-status", 500, "HTTP status of those failures")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *failStatus < 400 || *failStatus > 599 {
		return errors.New("-fail-status must be an HTTP error status (400-599)")
	}
	base := script{TTFTS: *ttftMS / 1000, InterTokenS: *itlMS / 1000}
	if *tokens >= 0 {
		base.Tokens = make([]string, *tokens)
		for i := range base.Tokens {
			base.Tokens[i] = " w" + strconv.Itoa(i)
		}
	}
	raiseOpenFiles(4096)
	listener, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		return err
	}
	server := &http.Server{Handler: newUpstream(base, *failEvery, *failStatus)}
	fmt.Fprintf(out, "listening on http://%s/v1\n", listener.Addr())
	go func() {
		<-ctx.Done()
		_ = server.Close()
	}()
	if err := server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
