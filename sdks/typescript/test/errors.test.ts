// Unit tests, no server: error decoding from ConnectError details and from a real
// `grpc-status-details-bin` trailer, and the client's behaviour over an in-memory transport.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../src/gen/google/rpc/status_pb.js";
import {
  baseUrlFor,
  createClient,
  ErrorReason,
  FinishReason,
  GenerationService,
  GroundwireError,
  Route,
  type GenerateResponse,
} from "../src/index.js";

function invalidTemperature(): ConnectError {
  return new ConnectError("temperature must be between 0 and 2", Code.InvalidArgument, undefined, [
    {
      desc: ErrorInfoSchema,
      value: {
        reason: "ERROR_REASON_INVALID_FIELD",
        domain: "groundwire.v1",
        metadata: { correlation_id: "cid-123" },
      },
    },
    {
      desc: BadRequestSchema,
      value: {
        fieldViolations: [{ field: "temperature", description: "must be between 0 and 2" }],
      },
    },
  ]);
}

describe("GroundwireError", () => {
  test("decodes ErrorInfo and BadRequest from a ConnectError", () => {
    const err = GroundwireError.from(invalidTemperature());
    assert.ok(err instanceof GroundwireError);
    assert.ok(err instanceof Error);
    assert.equal(err.name, "GroundwireError");
    assert.equal(err.code, Code.InvalidArgument);
    assert.equal(err.codeName, "INVALID_ARGUMENT");
    assert.equal(err.reason, "ERROR_REASON_INVALID_FIELD");
    assert.equal(err.reasonCode, ErrorReason.INVALID_FIELD);
    assert.equal(err.domain, "groundwire.v1");
    assert.equal(err.correlationId, "cid-123");
    assert.deepEqual(err.fieldViolations, [
      { field: "temperature", description: "must be between 0 and 2" },
    ]);
    assert.equal(err.retryAfterMs, undefined);
    assert.equal(err.retryable, false);
    assert.equal(err.rawMessage, "temperature must be between 0 and 2");
    assert.match(err.message, /^\[INVALID_ARGUMENT ERROR_REASON_INVALID_FIELD\] temperature/);
    assert.match(err.message, /correlation id cid-123/);
    assert.ok(err.cause instanceof ConnectError);
  });

  test("decodes a google.rpc.Status from the grpc-status-details-bin trailer", () => {
    const status = create(StatusSchema, {
      code: Code.Unavailable,
      message: "every model failed",
      details: [
        anyPack(
          ErrorInfoSchema,
          create(ErrorInfoSchema, {
            reason: "ERROR_REASON_LLM_UNAVAILABLE",
            domain: "groundwire.v1",
            metadata: { correlation_id: "cid-retry" },
          }),
        ),
        anyPack(
          RetryInfoSchema,
          create(RetryInfoSchema, { retryDelay: { seconds: 2n, nanos: 500_000_000 } }),
        ),
      ],
    });
    const trailer = new Headers({
      "grpc-status": String(Code.Unavailable),
      "grpc-message": "every model failed",
      "grpc-status-details-bin": Buffer.from(toBinary(StatusSchema, status))
        .toString("base64")
        .replace(/=+$/, ""),
    });
    const connectError = findTrailerError(trailer);
    assert.ok(connectError);
    const err = GroundwireError.from(connectError);
    assert.equal(err.code, Code.Unavailable);
    assert.equal(err.codeName, "UNAVAILABLE");
    assert.equal(err.reason, "ERROR_REASON_LLM_UNAVAILABLE");
    assert.equal(err.reasonCode, ErrorReason.LLM_UNAVAILABLE);
    assert.equal(err.correlationId, "cid-retry");
    assert.equal(err.retryAfterMs, 2500);
    assert.equal(err.retryable, true);
    assert.deepEqual(err.fieldViolations, []);
  });

  test("decodes QuotaFailure into quotaViolations", () => {
    const err = GroundwireError.from(
      new ConnectError("quota exceeded", Code.ResourceExhausted, undefined, [
        {
          desc: ErrorInfoSchema,
          value: { reason: "ERROR_REASON_QUOTA_EXCEEDED", domain: "groundwire.v1" },
        },
        {
          desc: QuotaFailureSchema,
          value: {
            violations: [
              { subject: "requests_per_minute", description: "60 requests per minute" },
            ],
          },
        },
        { desc: RetryInfoSchema, value: { retryDelay: { seconds: 12n, nanos: 0 } } },
      ]),
    );
    assert.equal(err.reasonCode, ErrorReason.QUOTA_EXCEEDED);
    assert.deepEqual(err.quotaViolations, [
      { subject: "requests_per_minute", description: "60 requests per minute" },
    ]);
    assert.equal(err.retryAfterMs, 12000);
    assert.equal(err.retryable, true);
  });

  test("accepts the short reason spelling", () => {
    const err = GroundwireError.from(
      new ConnectError("no", Code.Unauthenticated, undefined, [
        { desc: ErrorInfoSchema, value: { reason: "MISSING_CREDENTIALS", domain: "groundwire.v1" } },
      ]),
    );
    assert.equal(err.reasonCode, ErrorReason.MISSING_CREDENTIALS);
    assert.equal(err.codeName, "UNAUTHENTICATED");
  });

  test("falls back to response metadata, then to the sent correlation id", () => {
    const fromHeader = GroundwireError.from(
      new ConnectError("boom", Code.Internal, { "x-correlation-id": "cid-header" }),
      "cid-sent",
    );
    assert.equal(fromHeader.correlationId, "cid-header");
    assert.equal(fromHeader.reason, "");
    assert.equal(fromHeader.domain, "");
    const fromSent = GroundwireError.from(new ConnectError("boom", Code.Internal), "cid-sent");
    assert.equal(fromSent.correlationId, "cid-sent");
  });

  test("an AbortError becomes CANCELLED, other errors UNKNOWN; a GroundwireError stays", () => {
    const abort = new Error("This operation was aborted");
    abort.name = "AbortError";
    assert.equal(GroundwireError.from(abort).codeName, "CANCELLED");
    assert.equal(GroundwireError.from(new TypeError("x")).code, Code.Unknown);
    const err = GroundwireError.from(invalidTemperature());
    assert.equal(GroundwireError.from(err), err);
  });
});

describe("baseUrlFor", () => {
  test("uses TLS unless insecure; an explicit scheme wins", () => {
    assert.equal(baseUrlFor("api.example.com:443"), "https://api.example.com:443");
    assert.equal(baseUrlFor("127.0.0.1:50051", true), "http://127.0.0.1:50051");
    assert.equal(baseUrlFor("http://127.0.0.1:50051/", false), "http://127.0.0.1:50051");
  });
});

// An in-memory GenerationService: checks the metadata the client sends, then plays frames.
function fakeServer(frames: GenerateResponse["frame"][], failAfter?: ConnectError) {
  const seen: Headers[] = [];
  const aborted: boolean[] = [];
  const transport = createRouterTransport((router) => {
    router.service(GenerationService, {
      async *generate(request, context) {
        seen.push(context.requestHeader);
        context.signal.addEventListener("abort", () => aborted.push(true));
        context.responseHeader.set(
          "x-correlation-id",
          context.requestHeader.get("x-correlation-id") ?? "",
        );
        if (request.temperature !== undefined && request.temperature > 2) {
          throw invalidTemperature();
        }
        for (const frame of frames) {
          yield { frame };
        }
        if (failAfter) {
          throw failAfter;
        }
      },
    });
  });
  return { transport, seen, aborted };
}

const answerFrames: GenerateResponse["frame"][] = [
  { case: "start", value: { route: Route.PRIMARY, model: "m", sources: [{ number: 1, chunkId: "c1" }] } },
  { case: "delta", value: { text: "Hello" } },
  { case: "delta", value: { text: " [1]." } },
  { case: "citation", value: { number: 1, start: 6, end: 9, chunkId: "c1", valid: true } },
  { case: "end", value: { finishReason: FinishReason.STOP, cost: { currency: "USD", micros: 5n } } },
] as GenerateResponse["frame"][];

describe("client over an in-memory transport", () => {
  test("sends auth and correlation id; generateText yields deltas and the end frame", async () => {
    const { transport, seen } = fakeServer(answerFrames);
    const client = createClient({ address: "in-memory", apiKey: "k", transport });
    let echoed: string | null = null;
    const result = client.generateText(
      { query: "q" },
      { correlationId: "my-cid", onHeader: (h: Headers) => (echoed = h.get("x-correlation-id")) },
    );
    let text = "";
    for await (const delta of result.text) {
      text += delta;
    }
    assert.equal(text, "Hello [1].");
    assert.equal((await result.start).model, "m");
    assert.equal((await result.end).finishReason, FinishReason.STOP);
    assert.equal(result.citations.length, 1);
    assert.equal(result.correlationId, "my-cid");
    assert.equal(echoed, "my-cid");
    assert.equal(seen[0]?.get("authorization"), "Bearer k");
    assert.equal(seen[0]?.get("x-correlation-id"), "my-cid");
  });

  test("a random correlation id is sent when none is given", async () => {
    const { transport, seen } = fakeServer(answerFrames);
    const client = createClient({ address: "in-memory", transport });
    const stream = client.generate({ query: "q" });
    const cases: string[] = [];
    for await (const response of stream) {
      cases.push(response.frame.case ?? "none");
    }
    assert.deepEqual(cases, ["start", "delta", "delta", "citation", "end"]);
    assert.match(stream.correlationId, /^[0-9a-f-]{36}$/);
    assert.equal(seen[0]?.get("x-correlation-id"), stream.correlationId);
    assert.equal(seen[0]?.has("authorization"), false);
  });

  test("an error from a stream is a GroundwireError", async () => {
    const { transport } = fakeServer(answerFrames);
    const client = createClient({ address: "in-memory", transport });
    await assert.rejects(
      async () => {
        for await (const _ of client.generate({ query: "q", temperature: 5 })) {
          // no frames expected
        }
      },
      (err: unknown) =>
        err instanceof GroundwireError &&
        err.codeName === "INVALID_ARGUMENT" &&
        err.fieldViolations[0]?.field === "temperature",
    );
  });

  test("generateText: a failure after the end frame resolves end, then throws", async () => {
    const midStream = new ConnectError("upstream failed", Code.Unavailable);
    const { transport } = fakeServer(answerFrames, midStream);
    const client = createClient({ address: "in-memory", transport });
    const result = client.generateText({ query: "q" });
    const deltas: string[] = [];
    await assert.rejects(
      async () => {
        for await (const delta of result.text) deltas.push(delta);
      },
      (err: unknown) => err instanceof GroundwireError && err.codeName === "UNAVAILABLE",
    );
    assert.deepEqual(deltas, ["Hello", " [1]."]);
    assert.equal((await result.end).finishReason, FinishReason.STOP);
  });

  test("generateText: stopping early cancels the call and rejects end with CANCELLED", async () => {
    const { transport, aborted } = fakeServer(answerFrames);
    // No deadline: the in-memory server keeps its own deadline timer after a cancel.
    const client = createClient({ address: "in-memory", transport, defaultTimeoutMs: 0 });
    const result = client.generateText({ query: "q" });
    for await (const _ of result.text) break;
    await assert.rejects(result.end, (err: unknown) =>
      err instanceof GroundwireError && err.codeName === "CANCELLED",
    );
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(aborted, [true]);
  });
});
