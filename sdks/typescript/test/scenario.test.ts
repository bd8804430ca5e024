// The live scenario, the same 8 steps as in every groundwire SDK. It needs a running server:
//
//   cd <repo> && .venv/bin/python -m tests.e2e.live    # prints the variables below
//   export GROUNDWIRE_TEST_ADDRESS=127.0.0.1:PORT GROUNDWIRE_TEST_API_KEY=sdk-ts-... \
//          GROUNDWIRE_TEST_UPSTREAM=http://127.0.0.1:PORT/v1
//   npm test
//
// Without GROUNDWIRE_TEST_ADDRESS and GROUNDWIRE_TEST_API_KEY the scenario is skipped. The server
// may use any OpenAI-compatible upstream: the checks that need a scripted answer (the exact
// text, a slow answer to cancel, the stack's catalog and prices) run only when
// GROUNDWIRE_TEST_UPSTREAM offers the scripted upstream's control endpoints (probed first);
// otherwise they are skipped with a line naming the reason.

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
// Asks an unscripted upstream for an answer long enough to cancel midway.
const LONG_QUERY = "Explain in detail, in at least 400 words, why volcanoes erupt.";

function controlUrl(endpoint: string): string {
  return `${UPSTREAM.replace(/\/+$/, "").replace(/\/v1$/, "")}/_scripted/${endpoint}`;
}

/** Why the upstream is not the scripted one, or undefined when its control endpoints answer. */
async function probeUpstream(): Promise<string | undefined> {
  if (!UPSTREAM) return "GROUNDWIRE_TEST_UPSTREAM is not set";
  const url = controlUrl("requests");
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
    if (!response.ok) return `${url} answered HTTP ${response.status}: not a scripted upstream`;
    const listed: unknown = await response.json();
    if (Array.isArray(listed)) return undefined;
    return `${url} answered no request list: not a scripted upstream`;
  } catch (err) {
    return `${url} gave no scripted answer (${String(err)})`;
  }
}

// Set before the tests run; undefined when the upstream is the scripted one.
let unscripted: string | undefined = "not probed";
const scripted = (): boolean => unscripted === undefined;

/** The scripted answer from the scripted upstream, any text from another. */
function checkAnswer(text: string): void {
  if (scripted()) assert.equal(text, DEFAULT_ANSWER);
  else assert.ok(text.trim().length > 0, "the answer is empty");
}

/** STOP, or (a real model) its token limit. */
function checkFinish(reason: FinishReason | undefined): void {
  if (!scripted() && reason === FinishReason.MAX_TOKENS) return;
  assert.equal(reason, FinishReason.STOP);
}

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
  const response = await fetch(controlUrl("script"), {
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

  before(async () => {
    unscripted = await probeUpstream();
    if (unscripted !== undefined) {
      console.log(`skipping the checks that need the scripted upstream: ${unscripted}`);
    }
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
    // The live stack's catalog; another upstream comes with its own.
    if (scripted()) {
      assert.ok(
        caps.models.some((model) => model.name === "deepseek-v4-flash"),
        `models: ${caps.models.map((m) => m.name).join(", ")}`,
      );
    }
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
    checkAnswer(answer.text);
    const sourceIds = new Set(answer.start?.sources.map((source) => source.chunkId));
    assert.ok(sourceIds.size > 0, "no sources");
    for (const citation of answer.citations.filter((c) => c.valid)) {
      assert.ok(sourceIds.has(citation.chunkId), `citation ${citation.chunkId} not among sources`);
    }
    const end = answer.end;
    assert.ok(end);
    checkFinish(end.finishReason);
    assert.ok((end.usage?.completionTokens ?? 0) > 0, "completion_tokens");
    // Prices come from the catalog, which another upstream brings.
    if (scripted()) {
      assert.ok((end.cost?.micros ?? 0n) > 0n, "cost micros");
      assert.equal(end.cost?.currency, "USD");
    }
  });

  test("5. cancel after the first delta ends the stream promptly with CANCELLED", async () => {
    let query = "why do volcanoes erupt";
    if (scripted()) {
      const tokens = ["Slow"];
      for (let i = 1; i < 200; i++) tokens.push(` token${i}`);
      await queueUpstreamScript(tokens, 0.02);
    } else {
      console.log(`skipping the scripted slow answer (asking for a long one): ${unscripted}`);
      query = LONG_QUERY;
    }
    const controller = new AbortController();
    const started = performance.now();
    let abortedAt = 0;
    let deltas = 0;
    let firstDelta = "";
    await assert.rejects(
      async () => {
        for await (const { frame } of client.generate(
          { query, grounding: { case: "retrieval", value: { topK: 3 } }, bypassCache: true },
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
    if (scripted()) {
      assert.ok(firstDelta.startsWith("Slow"), `the slow script was not used: ${firstDelta}`);
    }
    const cancelMs = ended - abortedAt;
    console.log(
      `cancel: first delta after ${(abortedAt - started).toFixed(1)} ms, stream ended ${cancelMs.toFixed(1)} ms after abort`,
    );
    assert.ok(cancelMs < 1000, `the stream took ${cancelMs} ms to end after the abort`);
    // A real model may take seconds to its first token.
    if (scripted()) assert.ok(ended - started < 5000, "the cancelled call took 5 s or more");
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
    checkAnswer(text);
    checkFinish((await result.end).finishReason);
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
      checkFinish(answer.end?.finishReason);
      checkAnswer(answer.text);
    }
    durations.sort((a, b) => a - b);
    console.log(
      `GENERATE_STREAM_MS language=typescript n=${durations.length} ` +
        `p50=${percentile(durations, 50).toFixed(1)} p90=${percentile(durations, 90).toFixed(1)}`,
    );
  });
});
