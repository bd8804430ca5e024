// Command ask asks a groundwire server a question, streams the answer to stdout, then
// prints the cited sources, the route, the token usage and the cost.
//
//	go run ./examples/ask -address 127.0.0.1:50051 -insecure -api-key "$KEY" why do volcanoes erupt
//
// Flags fall back to the environment: GROUNDWIRE_ADDRESS, GROUNDWIRE_API_KEY,
// GROUNDWIRE_QUESTION (and GROUNDWIRE_INSECURE=1).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	groundwirev1 "github.com/groundwire/groundwire/sdks/go/gen/groundwire/v1"
	"github.com/groundwire/groundwire/sdks/go/groundwire"
)

func main() {
	address := flag.String("address", envOr("GROUNDWIRE_ADDRESS", "127.0.0.1:50051"), "server address, host:port")
	apiKey := flag.String("api-key", os.Getenv("GROUNDWIRE_API_KEY"), "API key")
	plaintext := flag.Bool("insecure", os.Getenv("GROUNDWIRE_INSECURE") == "1",
		"plaintext connection instead of TLS (implied for a loopback address)")
	question := flag.String("question", os.Getenv("GROUNDWIRE_QUESTION"), "the question (or give it as arguments)")
	topK := flag.Uint("top-k", 5, "how many chunks to retrieve as sources")
	timeout := flag.Duration("timeout", 60*time.Second, "deadline for the whole answer")
	flag.Parse()
	if isLoopback(*address) {
		*plaintext = true
	}
	if rest := strings.Join(flag.Args(), " "); rest != "" {
		*question = rest
	}
	if strings.TrimSpace(*question) == "" {
		fmt.Fprintln(os.Stderr, "usage: ask [flags] <question>")
		flag.PrintDefaults()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := ask(ctx, *address, *apiKey, *plaintext, *question, uint32(*topK)); err != nil {
		fmt.Fprintln(os.Stderr)
		var gwErr *groundwire.Error
		if errors.As(err, &gwErr) {
			fmt.Fprintf(os.Stderr, "error: %s (reason %s, correlation id %s)\n",
				gwErr.Message, orDash(gwErr.Reason), orDash(gwErr.CorrelationID))
			for _, v := range gwErr.FieldViolations {
				fmt.Fprintf(os.Stderr, "  %s: %s\n", v.Field, v.Description)
			}
			if gwErr.RetryAfter > 0 {
				fmt.Fprintf(os.Stderr, "  retry after %s\n", gwErr.RetryAfter)
			}
		} else {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

func ask(ctx context.Context, address, apiKey string, plaintext bool, question string, topK uint32) error {
	opts := []groundwire.Option{groundwire.WithAPIKey(apiKey)}
	if plaintext {
		opts = append(opts, groundwire.WithInsecure())
	}
	client, err := groundwire.Dial(ctx, address, opts...)
	if err != nil {
		return err
	}
	defer client.Close()

	stream, err := client.Generate(ctx, &groundwirev1.GenerateRequest{
		Query:     question,
		Grounding: &groundwirev1.GenerateRequest_Retrieval{Retrieval: &groundwirev1.RetrieveRequest{TopK: &topK}},
	})
	if err != nil {
		return err
	}
	defer stream.Close()

	cited := map[uint32]bool{}
	for frame, err := range stream.Frames() {
		if err != nil {
			return err
		}
		switch f := frame.GetFrame().(type) {
		case *groundwirev1.GenerateResponse_Delta:
			fmt.Print(f.Delta.GetText())
		case *groundwirev1.GenerateResponse_Citation:
			if f.Citation.GetValid() {
				cited[f.Citation.GetNumber()] = true
			}
		}
	}
	fmt.Println()

	start, end := stream.Start(), stream.End()
	fmt.Println("\nSources:")
	for _, src := range start.GetSources() {
		if !cited[src.GetNumber()] {
			continue
		}
		where := src.GetSourceUri()
		if where == "" {
			where = src.GetDocId()
		}
		fmt.Printf("  [%d] %s (%s)\n", src.GetNumber(), orDash(src.GetTitle()), orDash(where))
	}
	if len(cited) == 0 {
		fmt.Println("  (none cited)")
	}
	route := strings.TrimPrefix(start.GetRoute().String(), "ROUTE_")
	fmt.Printf("\nRoute: %s, model %s, attempt %d%s\n", route, orDash(start.GetModel()), start.GetAttempt(),
		map[bool]string{true: " (cache hit)", false: ""}[start.GetCacheHit()])
	usage := end.GetUsage()
	fmt.Printf("Finish: %s\n", strings.TrimPrefix(end.GetFinishReason().String(), "FINISH_REASON_"))
	fmt.Printf("Usage: %d prompt + %d completion tokens", usage.GetPromptTokens(), usage.GetCompletionTokens())
	if usage.CachedTokens != nil {
		fmt.Printf(" (%d cached)", usage.GetCachedTokens())
	}
	fmt.Println()
	fmt.Printf("Cost: %s %.6f\n", orDash(end.GetCost().GetCurrency()), float64(end.GetCost().GetMicros())/1e6)
	if d := end.GetTimings().GetTotal(); d != nil {
		fmt.Printf("Server time: %s (correlation id %s)\n", d.AsDuration().Round(time.Millisecond), stream.CorrelationID())
	}
	return nil
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

func isLoopback(address string) bool {
	host := address
	if i := strings.LastIndex(address, ":"); i >= 0 {
		host = address[:i]
	}
	host = strings.Trim(host, "[]")
	return host == "localhost" || strings.HasPrefix(host, "127.") || host == "::1"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
