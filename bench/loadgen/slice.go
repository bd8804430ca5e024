package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/connectivity"

	"github.com/groundwire/groundwire/sdks/go/groundwire"
)

// sliceSpec is one run of calls: calls numbered 0..Calls-1 on Concurrency workers pulling
// from one counter; worker j starts j/Concurrency*Stagger late; no call starts after
// Deadline. The same shape as the Python benchmark's run_slice.
//
// A refused call's worker waits the RetryInfo delay the refusal carried before it issues its
// next call, as a mesh's retry policy does (gRPC's retry pushback, Envoy's rate-limited
// retry back-off); ImmediateRetry re-issues at once instead, a storm no real caller makes.
type sliceSpec struct {
	Calls          int
	Concurrency    int
	Deadline       time.Duration
	Stagger        time.Duration
	ImmediateRetry bool
}

// sliceResult is a slice's calls (by index; nil: never started) and its figures.
type sliceResult struct {
	Calls   []*Call
	Started int
	Wall    time.Duration
	CPU     time.Duration // this process's CPU during the slice
}

func runSlice(ctx context.Context, call caller, spec sliceSpec) sliceResult {
	out := sliceResult{Calls: make([]*Call, spec.Calls)}
	var next, started atomic.Int64
	workers := min(spec.Concurrency, spec.Calls)
	cpuBefore := processCPU()
	begin := time.Now()
	stopAt := begin.Add(spec.Deadline)
	// Closed once the last call has been taken: a worker waiting out a refusal's RetryInfo delay
	// then has nothing left to retry, and must not hold the slice's wall time open (a server
	// that stretches its delay under a storm would look slower than it is).
	exhausted := make(chan struct{})
	var exhaust sync.Once
	var wg sync.WaitGroup
	for j := range workers {
		delay := time.Duration(float64(spec.Stagger) * float64(j) / float64(spec.Concurrency))
		wg.Go(func() {
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return
				}
			}
			for {
				i := int(next.Add(1) - 1)
				if i >= spec.Calls-1 {
					exhaust.Do(func() { close(exhausted) })
				}
				if i >= spec.Calls || time.Now().After(stopAt) || ctx.Err() != nil {
					return
				}
				started.Add(1)
				result := call(ctx, i)
				out.Calls[i] = &result
				if result.Outcome == outcomeRefused && !spec.ImmediateRetry && result.RetryAfterMS > 0 {
					wait := time.Duration(result.RetryAfterMS * float64(time.Millisecond))
					select {
					case <-time.After(min(wait, time.Until(stopAt))):
					case <-exhausted:
						return
					case <-ctx.Done():
						return
					}
				}
			}
		})
	}
	wg.Wait()
	out.Wall = time.Since(begin)
	out.CPU = processCPU() - cpuBefore
	out.Started = int(started.Load())
	return out
}

// processCPU is this process's user + system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// grpcPool is several connections to one server, the calls spread over them in turn. One
// connection would pin every stream to one worker process of a server that shares its port
// among workers (SO_REUSEPORT balances connections, not calls), which no mesh of many
// callers does.
type grpcPool struct {
	clients []*groundwire.Client
	turn    atomic.Uint64
}

// dialPool opens size connections to address and waits until every one is ready, so the
// first measured calls pay no connection set-up.
func dialPool(ctx context.Context, address string, size int) (*grpcPool, error) {
	pool := &grpcPool{}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for range max(size, 1) {
		client, err := groundwire.Dial(ctx, address, groundwire.WithInsecure(),
			groundwire.WithDefaultTimeout(0))
		if err != nil {
			pool.Close()
			return nil, err
		}
		pool.clients = append(pool.clients, client)
	}
	for _, client := range pool.clients {
		conn := client.Conn()
		for state := conn.GetState(); state != connectivity.Ready; state = conn.GetState() {
			if !conn.WaitForStateChange(ctx, state) {
				pool.Close()
				return nil, fmt.Errorf("connection to %s not ready: %s", address, state)
			}
		}
	}
	return pool, nil
}

func (p *grpcPool) pick(int) *groundwire.Client {
	return p.clients[(p.turn.Add(1)-1)%uint64(len(p.clients))]
}

// Close closes every connection.
func (p *grpcPool) Close() {
	for _, client := range p.clients {
		_ = client.Close()
	}
}

// newHTTPClient is the direct baseline's client: one keep-alive connection per concurrent
// stream, no compression, HTTP/1.1 (what OpenAI SDKs speak to a plain-HTTP upstream).
func newHTTPClient() *http.Client {
	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no limit
		MaxIdleConnsPerHost: 100_000,
		IdleConnTimeout:     0,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		WriteBufferSize:     16 * 1024,
		ReadBufferSize:      16 * 1024,
	}
	return &http.Client{Transport: transport}
}
