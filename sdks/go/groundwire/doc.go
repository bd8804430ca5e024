// Package groundwire is a thin, idiomatic Go client for the groundwire gRPC service:
// grounded, cited answers over your own documents.
//
// It wraps the generated stubs of package groundwirev1
// (github.com/groundwire/groundwire/sdks/go/gen/groundwire/v1) and adds what every caller
// needs around them: API-key authentication, a correlation id on every call, a default
// deadline, a streaming reader for Generate, and typed errors decoded from the
// google.rpc.Status details the server sends.
//
//	client, err := groundwire.Dial(ctx, "groundwire.example.com:443", groundwire.WithAPIKey(key))
//	if err != nil { ... }
//	defer client.Close()
//
//	stream, err := client.Generate(ctx, &groundwirev1.GenerateRequest{Query: "why do volcanoes erupt?"})
//	if err != nil { ... }
//	defer stream.Close()
//	for frame, err := range stream.Frames() {
//		if err != nil { ... }
//		fmt.Print(frame.GetDelta().GetText())
//	}
//
// Every method returns errors as *Error when the server (or the transport) reported a gRPC
// status; use errors.As to read the reason, field violations and retry delay.
package groundwire
