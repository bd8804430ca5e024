// Ask groundwire a question and print the answer as it streams, then its sources, route,
// usage and cost.
//
//   npm run example -- [--address host:port] [--api-key KEY] [--insecure | --tls] [question...]
//
// The address and key also come from GROUNDWIRE_ADDRESS / GROUNDWIRE_API_KEY (or the
// GROUNDWIRE_TEST_* variables of the live test stack). Loopback addresses use plaintext
// HTTP/2 unless --tls is given. Ctrl-C cancels the answer.

// In your own project: import { ... } from "@groundwire/sdk";
import {
  createClient,
  FinishReason,
  GroundwireError,
  Route,
  type CitationFrame,
} from "../src/index.js";

interface Args {
  address: string;
  apiKey: string | undefined;
  insecure: boolean | undefined;
  question: string;
}

function parseArgs(argv: string[]): Args {
  const env = process.env;
  let address = env["GROUNDWIRE_ADDRESS"] ?? env["GROUNDWIRE_TEST_ADDRESS"] ?? "127.0.0.1:50051";
  let apiKey = env["GROUNDWIRE_API_KEY"] ?? env["GROUNDWIRE_TEST_API_KEY"];
  let insecure: boolean | undefined;
  const words: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    if (arg === "--address") address = argv[++i] ?? address;
    else if (arg === "--api-key") apiKey = argv[++i];
    else if (arg === "--insecure") insecure = true;
    else if (arg === "--tls") insecure = false;
    else words.push(arg);
  }
  return { address, apiKey, insecure, question: words.join(" ") || "Why do volcanoes erupt?" };
}

function isLoopback(address: string): boolean {
  const host = address.replace(/^\w+:\/\//, "").replace(/:\d+$/, "");
  return ["localhost", "127.0.0.1", "[::1]", "::1"].includes(host);
}

function dollars(micros: bigint): string {
  return `$${(Number(micros) / 1e6).toFixed(6)}`;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const client = createClient({
    address: args.address,
    apiKey: args.apiKey,
    insecure: args.insecure ?? isLoopback(args.address),
    defaultTimeoutMs: 60_000,
  });
  const controller = new AbortController();
  process.once("SIGINT", () => controller.abort());

  const answer = client.generateText(
    { query: args.question, grounding: { case: "retrieval", value: { topK: 5 } } },
    { signal: controller.signal },
  );
  try {
    for await (const delta of answer.text) {
      process.stdout.write(delta);
    }
    process.stdout.write("\n");
    const start = await answer.start;
    const end = await answer.end;

    const cited = new Set(
      answer.citations.filter((c: CitationFrame) => c.valid).map((c: CitationFrame) => c.number),
    );
    console.log("\nSources:");
    for (const source of start.sources) {
      const mark = cited.has(source.number) ? "*" : " ";
      const where = source.sourceUri || source.docId || source.chunkId;
      console.log(`${mark}[${source.number}] ${source.title || "(untitled)"} — ${where} (score ${source.score.toFixed(3)})`);
    }
    console.log(
      `\nRoute: ${Route[start.route]}  model: ${start.model || "-"}  attempt: ${start.attempt}` +
        `${start.cacheHit ? "  (cache hit)" : ""}`,
    );
    console.log(`Finish: ${FinishReason[end.finishReason]}${end.detail ? ` (${end.detail})` : ""}`);
    const usage = end.usage;
    console.log(
      `Usage: ${usage?.promptTokens ?? "-"} prompt + ${usage?.completionTokens ?? "-"} completion tokens` +
        (usage?.cachedTokens !== undefined ? ` (${usage.cachedTokens} cached)` : ""),
    );
    if (end.cost) {
      console.log(`Cost: ${dollars(end.cost.micros)} ${end.cost.currency} (${end.cost.micros} micros)`);
    }
    console.log(`Correlation id: ${answer.correlationId}`);
    return 0;
  } catch (err) {
    if (err instanceof GroundwireError) {
      console.error(`\nerror: ${err.codeName}${err.reason ? ` ${err.reason}` : ""}: ${err.rawMessage}`);
      for (const violation of err.fieldViolations) {
        console.error(`  ${violation.field}: ${violation.description}`);
      }
      if (err.retryAfterMs !== undefined) console.error(`  retry after ${err.retryAfterMs} ms`);
      console.error(`  correlation id: ${err.correlationId ?? "-"}`);
      return 1;
    }
    throw err;
  } finally {
    client.close();
  }
}

main().then((code) => {
  process.exitCode = code;
});
