// Command loadgen is groundwire's load generator for Generate, and the scripted
// OpenAI-compatible upstream it streams from: both in Go, so that neither is the bottleneck
// at a thousand concurrent streams (a Python load generator or upstream is, well before
// the server is).
//
//	loadgen run -variant ours -address 127.0.0.1:50051 -request req.json -concurrency 256 -requests 1024
//	loadgen run -variant direct -upstream http://127.0.0.1:8089/v1 -body body.json -concurrency 256 -seconds 30
//	loadgen drive -request req.json -body body.json     # slices on stdin, JSON lines out
//	loadgen upstream -port 8089 -tokens 64 -ttft-ms 300 -itl-ms 5
//
// Variants: ours (Generate through the project's Go SDK) and direct (a plain Go SSE client
// POSTing the very OpenAI request our server sends to the same upstream). Every time is
// measured from issuing the call, so queueing anywhere counts. `groundwire bench` builds
// this program and drives it with `drive`; see README.md.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"sort"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	groundwirev1 "github.com/groundwire/groundwire/sdks/go/gen/groundwire/v1"
)

const usage = `usage: loadgen run|drive|upstream [flags]   (loadgen <command> -h for the flags)`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// LOADGEN_CPUPROFILE=path writes a CPU profile (go tool pprof) of the whole run.
	if path := os.Getenv("LOADGEN_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCommand(ctx, os.Args[2:], os.Stdout)
	case "drive":
		err = driveCommand(ctx, os.Args[2:], os.Stdin, os.Stdout)
	case "upstream":
		err = upstreamCommand(ctx, os.Args[2:], os.Stdout)
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// raiseOpenFiles lifts the soft open-files limit to the hard one (Go does so at start-up
// on Linux already; this says so when the hard limit is below what the run needs).
func raiseOpenFiles(need int) {
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		return
	}
	if limit.Cur < limit.Max {
		limit.Cur = limit.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit)
	}
	if uint64(need) > limit.Cur {
		fmt.Fprintf(os.Stderr, "loadgen: open-files limit %d is below the %d this run may need\n",
			limit.Cur, need)
	}
}

func readRequest(path string) (*groundwirev1.GenerateRequest, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	req := &groundwirev1.GenerateRequest{}
	if err := protojson.Unmarshal(raw, req); err != nil {
		return nil, fmt.Errorf("%s: not a GenerateRequest in protojson: %w", path, err)
	}
	return req, nil
}

func readBody(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !json.Valid(raw) {
		return nil, fmt.Errorf("%s: not JSON", path)
	}
	return raw, nil
}

// driver holds what the calls share across slices: the requests, the HTTP client (its
// idle connections) and one gRPC pool per server address.
type driver struct {
	request *groundwirev1.GenerateRequest
	body    []byte
	http    *http.Client
	pools   map[string]*grpcPool
	sizes   map[string]int
}

func newDriver(request *groundwirev1.GenerateRequest, body []byte) *driver {
	return &driver{request: request, body: body, http: newHTTPClient(),
		pools: map[string]*grpcPool{}, sizes: map[string]int{}}
}

// caller for one variant: "direct" streams from the upstream at address (a base URL), any
// other name is a groundwire server at address (host:port) reached over connections.
func (d *driver) caller(ctx context.Context, variant, address string, connections, expected int, timeout time.Duration) (caller, error) {
	if variant == "direct" {
		if d.body == nil {
			return nil, errors.New("direct needs the upstream request body (-body)")
		}
		return directCaller(d.http, address, d.body, expected, timeout), nil
	}
	if d.request == nil {
		return nil, errors.New("a server variant needs the Generate request (-request)")
	}
	connections = max(connections, 1)
	pool := d.pools[address]
	if pool == nil || d.sizes[address] != connections {
		if pool != nil {
			pool.Close()
		}
		var err error
		if pool, err = dialPool(ctx, address, connections); err != nil {
			return nil, err
		}
		d.pools[address], d.sizes[address] = pool, connections
	}
	return oursCaller(pool.pick, d.request, expected, timeout), nil
}

func (d *driver) close() {
	for _, pool := range d.pools {
		pool.Close()
	}
	d.http.CloseIdleConnections()
}

// command is one slice `drive` reads from its input, one JSON object a line.
type command struct {
	ID           int     `json:"id"`
	Variant      string  `json:"variant"`
	Address      string  `json:"address"`
	Calls        int     `json:"calls"`
	Concurrency  int     `json:"concurrency"`
	DeadlineS    float64 `json:"deadline_s"`
	StaggerS     float64 `json:"stagger_s"`
	ExpectTokens int     `json:"expect_tokens"`
	TimeoutS     float64 `json:"timeout_s"`
	Connections  int     `json:"connections"`
	Quiet        bool    `json:"quiet"` // report the figures, not every call (a warm-up)
	// Re-issue a refused call at once instead of after its RetryInfo delay.
	ImmediateRetry bool `json:"immediate_retry"`
}

type measuredLine struct {
	ID       int     `json:"id"`
	Measured bool    `json:"measured"`
	Started  int     `json:"started"`
	WallS    float64 `json:"wall_s"`
	CPUS     float64 `json:"cpu_s"`
}

type callLine struct {
	ID int `json:"id"`
	*Call
}

type doneLine struct {
	ID    int    `json:"id"`
	Done  bool   `json:"done"`
	Error string `json:"error,omitempty"`
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// driveCommand runs the slices read from in, one JSON command a line, until in ends. For
// each it writes a "measured" line as soon as the slice ends (its wall and CPU time, so the
// caller samples other processes' CPU right then), then one line per call, then "done".
// The calls are written only after the slice, so writing them costs no CPU during it.
func driveCommand(ctx context.Context, args []string, in io.Reader, out io.Writer) error {
	flags := flag.NewFlagSet("drive", flag.ContinueOnError)
	requestPath := flags.String("request", "", "the GenerateRequest, protojson (server variants)")
	bodyPath := flags.String("body", "", "the upstream chat-completions request, JSON (direct)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	d, err := driverFromFiles(*requestPath, *bodyPath)
	if err != nil {
		return err
	}
	defer d.close()
	lines := bufio.NewScanner(in)
	lines.Buffer(make([]byte, 64*1024), 1024*1024)
	w := bufio.NewWriterSize(out, 256*1024)
	encoder := json.NewEncoder(w)
	for lines.Scan() {
		var cmd command
		if err := json.Unmarshal(lines.Bytes(), &cmd); err != nil {
			return fmt.Errorf("bad command %q: %w", lines.Text(), err)
		}
		if err := d.runCommand(ctx, cmd, encoder, w); err != nil {
			_ = encoder.Encode(doneLine{ID: cmd.ID, Done: true, Error: err.Error()})
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return lines.Err()
}

func driverFromFiles(requestPath, bodyPath string) (*driver, error) {
	var request *groundwirev1.GenerateRequest
	var body []byte
	var err error
	if requestPath != "" {
		if request, err = readRequest(requestPath); err != nil {
			return nil, err
		}
	}
	if bodyPath != "" {
		if body, err = readBody(bodyPath); err != nil {
			return nil, err
		}
	}
	return newDriver(request, body), nil
}

func (d *driver) runCommand(ctx context.Context, cmd command, encoder *json.Encoder, w *bufio.Writer) error {
	if cmd.Calls < 1 || cmd.Concurrency < 1 {
		return fmt.Errorf("calls and concurrency must be at least 1")
	}
	if cmd.TimeoutS <= 0 {
		cmd.TimeoutS = 120
	}
	if cmd.DeadlineS <= 0 {
		cmd.DeadlineS = math.MaxInt32
	}
	raiseOpenFiles(cmd.Concurrency + 64)
	call, err := d.caller(ctx, cmd.Variant, cmd.Address, cmd.Connections, cmd.ExpectTokens, seconds(cmd.TimeoutS))
	if err != nil {
		return err
	}
	result := runSlice(ctx, call, sliceSpec{
		Calls: cmd.Calls, Concurrency: cmd.Concurrency,
		Deadline: seconds(cmd.DeadlineS), Stagger: seconds(cmd.StaggerS),
		ImmediateRetry: cmd.ImmediateRetry,
	})
	if err := encoder.Encode(measuredLine{ID: cmd.ID, Measured: true, Started: result.Started,
		WallS: result.Wall.Seconds(), CPUS: result.CPU.Seconds()}); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if !cmd.Quiet {
		for _, c := range result.Calls {
			if c != nil {
				if err := encoder.Encode(callLine{ID: cmd.ID, Call: c}); err != nil {
					return err
				}
			}
		}
	}
	return encoder.Encode(doneLine{ID: cmd.ID, Done: true})
}

// runCommand runs one level of one variant and prints every call (-per-call) or the
// aggregate figures.
func runCommand(ctx context.Context, args []string, out io.Writer) error {
	flags := flag.NewFlagSet("run", flag.ContinueOnError)
	variant := flags.String("variant", "ours", "ours (Generate through the Go SDK) or direct (SSE straight to the upstream)")
	address := flags.String("address", "127.0.0.1:50051", "the groundwire server (ours)")
	upstream := flags.String("upstream", "http://127.0.0.1:8089/v1", "the upstream's base URL (direct)")
	requestPath := flags.String("request", "", "the GenerateRequest, protojson (ours)")
	bodyPath := flags.String("body", "", "the upstream chat-completions request, JSON (direct)")
	concurrency := flags.Int("concurrency", 32, "concurrent streams")
	requests := flags.Int("requests", 0, "calls (0: 4 per stream)")
	duration := flags.Float64("seconds", 0, "no call starts after this many seconds (0: no limit)")
	stagger := flags.Float64("stagger-s", 0, "spread the streams' starts over this many seconds")
	tokens := flags.Int("tokens", 0, "tokens every answer must have (0: any)")
	connections := flags.Int("connections", 0, "gRPC connections (0: min(concurrency, 64))")
	warmup := flags.Int("warmup", -1, "untimed calls first (-1: one per stream)")
	timeout := flags.Float64("timeout-s", 120, "deadline of each call")
	perCall := flags.Bool("per-call", false, "print every call as a JSON line instead of the aggregate")
	immediate := flags.Bool("immediate-retry", false, "re-issue a refused call at once, not after its RetryInfo delay")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *concurrency < 1 {
		return errors.New("-concurrency must be at least 1")
	}
	if *requests <= 0 {
		*requests = 4 * *concurrency
	}
	if *connections <= 0 {
		*connections = min(*concurrency, 64)
	}
	d, err := driverFromFiles(*requestPath, *bodyPath)
	if err != nil {
		return err
	}
	defer d.close()
	target := *address
	if *variant == "direct" {
		target = *upstream
	}
	raiseOpenFiles(*concurrency + 64)
	call, err := d.caller(ctx, *variant, target, *connections, *tokens, seconds(*timeout))
	if err != nil {
		return err
	}
	if *warmup < 0 {
		*warmup = *concurrency
	}
	if *warmup > 0 {
		runSlice(ctx, call, sliceSpec{Calls: *warmup, Concurrency: *concurrency, Deadline: math.MaxInt64})
	}
	deadline := time.Duration(math.MaxInt64)
	if *duration > 0 {
		deadline = seconds(*duration)
	}
	result := runSlice(ctx, call, sliceSpec{Calls: *requests, Concurrency: *concurrency,
		Deadline: deadline, Stagger: seconds(*stagger), ImmediateRetry: *immediate})
	encoder := json.NewEncoder(out)
	if *perCall {
		for _, c := range result.Calls {
			if c != nil {
				if err := encoder.Encode(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	encoder.SetIndent("", "  ")
	return encoder.Encode(aggregate(*variant, *concurrency, result))
}

// summary is the aggregate `run` prints: times in milliseconds from issuing the call.
type summary struct {
	Variant       string             `json:"variant"`
	Concurrency   int                `json:"concurrency"`
	Started       int                `json:"started"`
	OK            int                `json:"ok"`
	Refused       map[string]int     `json:"refused"`
	Errors        map[string]int     `json:"errors"`
	Routes        map[string]int     `json:"routes"`
	WallS         float64            `json:"wall_s"`
	TTFT          map[string]float64 `json:"ttft_ms"`
	ITL           map[string]float64 `json:"itl_ms"`
	Total         map[string]float64 `json:"total_ms"`
	RefusalMS     map[string]float64 `json:"refusal_ms"`
	Tokens        int                `json:"tokens"`
	TokensPerS    float64            `json:"aggregate_tokens_per_s"`
	StreamsPerS   float64            `json:"streams_per_s"`
	CPUMSPerCall  float64            `json:"loadgen_cpu_ms_per_call"`
	ErrorExamples []string           `json:"error_samples"`
}

func aggregate(variant string, concurrency int, r sliceResult) summary {
	s := summary{Variant: variant, Concurrency: concurrency, Started: r.Started,
		Refused: map[string]int{}, Errors: map[string]int{}, Routes: map[string]int{},
		WallS: r.Wall.Seconds(), ErrorExamples: []string{}}
	var ttft, itl, total, refusals []float64
	for _, c := range r.Calls {
		switch {
		case c == nil:
		case c.Outcome == outcomeOK:
			s.OK++
			s.Routes[c.Route]++
			s.Tokens += c.Tokens
			ttft = append(ttft, c.TTFT*1000)
			total = append(total, c.Total*1000)
			if c.Tokens > 1 {
				itl = append(itl, (c.LastText-c.TTFT)*1000/float64(c.Tokens-1))
			}
		case c.Outcome == outcomeRefused:
			s.Refused[c.Kind]++
			refusals = append(refusals, c.Total*1000)
		default:
			s.Errors[c.Kind]++
			if len(s.ErrorExamples) < 5 && c.Detail != "" {
				s.ErrorExamples = append(s.ErrorExamples, c.Detail)
			}
		}
	}
	s.TTFT, s.ITL, s.Total, s.RefusalMS = stats(ttft), stats(itl), stats(total), stats(refusals)
	if wall := r.Wall.Seconds(); wall > 0 {
		s.TokensPerS = float64(s.Tokens) / wall
		s.StreamsPerS = float64(s.OK) / wall
	}
	if r.Started > 0 {
		s.CPUMSPerCall = r.CPU.Seconds() * 1000 / float64(r.Started)
	}
	return s
}

// stats are p50, p99 and max, interpolated linearly between the closest ranks (numpy's
// default, as the Python benchmark's percentile); empty without values.
func stats(values []float64) map[string]float64 {
	if len(values) == 0 {
		return map[string]float64{}
	}
	return map[string]float64{
		"p50": percentile(values, 50), "p99": percentile(values, 99), "max": slices.Max(values),
	}
}

func percentile(values []float64, p float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	ordered := slices.Clone(values)
	sort.Float64s(ordered)
	position := float64(len(ordered)-1) * p / 100
	low := int(math.Floor(position))
	high := min(low+1, len(ordered)-1)
	return ordered[low] + (ordered[high]-ordered[low])*(position-float64(low))
}
