// The live scenario, the same 8 steps as in every groundwire SDK. It needs a running server:
//
//   cd <repo> && .venv/bin/python -m tests.e2e.live    # prints the variables below
//   export GROUNDWIRE_TEST_ADDRESS=127.0.0.1:PORT GROUNDWIRE_TEST_API_KEY=sdk-ts-... \
//          GROUNDWIRE_TEST_UPSTREAM=http://127.0.0.1:PORT/v1
//   npm test
//
// Without those variables the scenario is skipped.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { performance } from "node:perf_hooks";
import {
  Code,
  createClient,
  ErrorReason,
  FinishReason,
  GroundwireError,
  type GenerateRequestInit,
  type GenerateResponse,
  type GroundwireClient,
  type StartFrame,
  type EndFrame,
  type CitationFrame,
} from "../src/index.js";

const ADDRESS = process.env["GROUNDWIRE_TEST_ADDRESS"] ?? "";
const API_KEY = process.env["GROUNDWIRE_TEST_API_KEY"] ?? "";
const UPSTREAM = process.env["GROUNDWIRE_TEST_UPSTREAM"] ?? "";
const MISSING = Object.entries({
  GROUNDWIRE_TEST_ADDRESS: ADDRESS,
  GROUNDWIRE_TEST_API_KEY: API_KEY,
  GROUNDWIRE_TEST_UPSTREAM: UPSTREAM,
})
  .filter(([, value]) => !value)
  .map(([name]) => name);
const SKIP =
  MISSING.length > 0
    ? `live scenario skipped: ${MISSING.join(", ")} not set ` +
      "(start a server with `.venv/bin/python -m tests.e2e.live` and export its typescript variables)"
    : false;
if (SKIP) {
  console.log(SKIP);
}

const DEFAULT_ANSWER = "The sources say so [1].";

const DOCUMENTS = [
  {
    docId: "volcano",
    title: "Why volcanoes erupt",
    sourceUri: "https://example.org/volcano",
    text:
      "Volcanoes erupt when magma rises from the mantle and pressure from dissolved gases builds up " +
      "beneath the crust. When the pressure exceeds the strength of the overlying rock, magma, ash " +
      "and gas burst out through vents. Explosive eruptions happen when gas-rich, viscous magma traps bubbles.",
  },
  {
    docId: "sourdough",
    title: "Baking sourdough bread",
    sourceUri: "https://example.org/sourdough",
    text:
      "Sourdough bread is leavened by a starter of wild yeast and lactic acid bacteria instead of " +
      "commercial yeast. The bacteria give the loaf its tangy flavour. A long, cool fermentation " +
      "develops the crumb and crust.",
  },
  {
    docId: "tides",
    title: "What causes ocean tides",
    sourceUri: "https://example.org/tides",
    text:
      "Ocean tides are caused by the gravitational pull of the Moon and, to a lesser degree, the Sun. " +
      "The Earth's rotation moves each coast through two tidal bulges a day, giving two high tides. " +
      "Spring tides occur when the Sun and Moon align.",
  },
];

interface ReadAnswer {
  cases: string[];
  start: StartFrame | undefined;
  text: string;
  citations: CitationFrame[];
  end: EndFrame | undefined;
}

async function readAnswer(frames: AsyncIterable<GenerateResponse>): Promise<ReadAnswer> {
  const answer: ReadAnswer = { cases: [], start: undefined, text: "", citations: [], end: undefined };
  for await (const { frame } of frames) {
    answer.cases.push(frame.case ?? "unset");
    switch (frame.case) {
      case "start":
        answer.start = frame.value;
        break;
      case "delta":
        answer.text += frame.value.text;
        break;
      case "citation":
        answer.citations.push(frame.value);
        break;
      case "end":
        answer.end = frame.value;
        break;
    }
  }
  return answer;
}

/** Queues a script on the scripted upstream for its next request. */
async function queueUpstreamScript(tokens: string[], interTokenS: number): Promise<void> {
  const base = UPSTREAM.replace(/\/v1\/?$/, "");
  const response = await fetch(`${base}/_scripted/script`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: null,
      scripts: [{ tokens, inter_token_s: interTokenS }],
      default: false,
    }),
  });
  assert.ok(response.ok, `queueing the upstream script: HTTP ${response.status}`);
}

function percentile(sorted: number[], p: number): number {
  // Nearest rank.
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1] ?? Number.NaN;
}

describe("groundwire live scenario (typescript)", { skip: SKIP }, () => {
  let client: GroundwireClient;

  before(() => {
    client = createClient({
      address: ADDRESS,
      apiKey: API_KEY,
      insecure: true,
      defaultTimeoutMs: 30_000,
    });
  });

  after(() => {
    client?.close();
  });

  test("1. health is SERVING; capabilities list deepseek-v4-flash and generation", async () => {
    assert.equal(await client.health(), "SERVING");
    const caps = await client.capabilities();
    assert.ok(caps.models.length > 0, "no models");
    assert.ok(
      caps.models.some((model) => model.name === "deepseek-v4-flash"),
      `models: ${caps.models.map((m) => m.name).join(", ")}`,
    );
    assert.equal(caps.features["generation"], true);
  });

  test("2. ingest three documents", async () => {
    const summary = await client.ingest(DOCUMENTS);
    assert.equal(summary.failed, 0, JSON.stringify(summary.failures));
    assert.equal(summary.created + summary.unchanged, 3, `summary: ${JSON.stringify(summary)}`);
  });

  test("3. retrieve: the first chunk is from volcano", async () => {
    const reply = await client.retrieve({ query: "why do volcanoes erupt", topK: 3 });
    assert.ok(reply.chunks.length > 0, "no chunks");
    assert.equal(reply.chunks[0]?.docId, "volcano");
  });

  test("4. generate: start, deltas, citations, end", async () => {
    const answer = await readAnswer(
      client.generate({
        query: "why do volcanoes erupt",
        grounding: { case: "retrieval", value: { topK: 3 } },
        bypassCache: true,
      }),
    );
    assert.equal(answer.cases[0], "start", `frames: ${answer.cases.join(",")}`);
    assert.equal(answer.cases.at(-1), "end", `frames: ${answer.cases.join(",")}`);
    assert.equal(answer.cases.filter((c) => c === "start").length, 1);
    assert.equal(answer.cases.filter((c) => c === "end").length, 1);
    assert.equal(answer.text, DEFAULT_ANSWER);
    const sourceIds = new Set(answer.start?.sources.map((source) => source.chunkId));
    assert.ok(sourceIds.size > 0, "no sources");
    for (const citation of answer.citations.filter((c) => c.valid)) {
      assert.ok(sourceIds.has(citation.chunkId), `citation ${citation.chunkId} not among sources`);
    }
    const end = answer.end;
    assert.ok(end);
    assert.equal(end.finishReason, FinishReason.STOP);
    assert.ok((end.usage?.completionTokens ?? 0) > 0, "completion_tokens");
    assert.ok((end.cost?.micros ?? 0n) > 0n, "cost micros");
    assert.equal(end.cost?.currency, "USD");
  });

  test("5. cancel after the first delta ends the stream promptly with CANCELLED", async () => {
    const tokens = ["Slow"];
    for (let i = 1; i < 200; i++) tokens.push(` token${i}`);
    await queueUpstreamScript(tokens, 0.02);
    const controller = new AbortController();
    const started = performance.now();
    let abortedAt = 0;
    let deltas = 0;
    let firstDelta = "";
    await assert.rejects(
      async () => {
        for await (const { frame } of client.generate(
          {
            query: "why do volcanoes erupt",
            grounding: { case: "retrieval", value: { topK: 3 } },
            bypassCache: true,
          },
          { signal: controller.signal },
        )) {
          if (frame.case === "delta" && ++deltas === 1) {
            firstDelta = frame.value.text;
            abortedAt = performance.now();
            controller.abort();
          }
        }
      },
      (err: unknown) => {
        assert.ok(err instanceof GroundwireError, `not a GroundwireError: ${String(err)}`);
        assert.equal(err.code, Code.Canceled);
        assert.equal(err.codeName, "CANCELLED");
        return true;
      },
    );
    const ended = performance.now();
    assert.equal(deltas, 1);
    assert.ok(firstDelta.startsWith("Slow"), `the slow script was not used: ${firstDelta}`);
    const cancelMs = ended - abortedAt;
    console.log(
      `cancel: first delta after ${(abortedAt - started).toFixed(1)} ms, stream ended ${cancelMs.toFixed(1)} ms after abort`,
    );
    assert.ok(cancelMs < 1000, `the stream took ${cancelMs} ms to end after the abort`);
    assert.ok(ended - started < 5000, "the cancelled call took 5 s or more");
  });

  test("6. a bad request is a typed INVALID_ARGUMENT error", async () => {
    await assert.rejects(
      async () => {
        for await (const _ of client.generate({
          query: "why do volcanoes erupt",
          temperature: 5.0,
          bypassCache: true,
        })) {
          // the error comes before any frame
        }
      },
      (err: unknown) => {
        assert.ok(err instanceof GroundwireError, `not a GroundwireError: ${String(err)}`);
        assert.equal(err.code, Code.InvalidArgument);
        assert.equal(err.codeName, "INVALID_ARGUMENT");
        assert.equal(err.reason, "ERROR_REASON_INVALID_FIELD");
        assert.equal(err.reasonCode, ErrorReason.INVALID_FIELD);
        assert.equal(err.domain, "groundwire.v1");
        assert.ok(err.correlationId, "no correlation id");
        assert.ok(
          err.fieldViolations.some((v) => v.field === "temperature"),
          `violations: ${JSON.stringify(err.fieldViolations)}`,
        );
        return true;
      },
    );
  });

  test("7. the correlation id is echoed in the response headers", async () => {
    const correlationId = `ts-scenario-${randomUUID()}`;
    let echoed: string | null = null;
    const result = client.generateText(
      {
        query: "why do volcanoes erupt",
        grounding: { case: "retrieval", value: { topK: 3 } },
        bypassCache: true,
      },
      { correlationId, onHeader: (headers: Headers) => (echoed = headers.get("x-correlation-id")) },
    );
    let text = "";
    for await (const delta of result.text) text += delta;
    assert.equal(echoed, correlationId);
    assert.equal(result.correlationId, correlationId);
    assert.equal(text, DEFAULT_ANSWER);
    assert.equal((await result.end).finishReason, FinishReason.STOP);
  });

  test("8. timing: 20 sequential Generate streams", async () => {
    const request: GenerateRequestInit = {
      query: "why do volcanoes erupt",
      grounding: {
        case: "context",
        value: {
          passages: [
            { id: "volcano-1", title: "Why volcanoes erupt", text: DOCUMENTS[0]?.text ?? "" },
          ],
        },
      },
      bypassCache: true,
    };
    const durations: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const answer = await readAnswer(client.generate(request));
      durations.push(performance.now() - t0);
      assert.equal(answer.end?.finishReason, FinishReason.STOP);
      assert.equal(answer.text, DEFAULT_ANSWER);
    }
    durations.sort((a, b) => a - b);
    console.log(
      `GENERATE_STREAM_MS language=typescript n=${durations.length} ` +
        `p50=${percentile(durations, 50).toFixed(1)} p90=${percentile(durations, 90).toFixed(1)}`,
    );
  });
});
