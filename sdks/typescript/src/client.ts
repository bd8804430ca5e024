// The groundwire client: Connect-ES over its gRPC (HTTP/2) transport for Node.

import { randomUUID } from "node:crypto";
import type * as http2 from "node:http2";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient as createConnectClient,
  type CallOptions as ConnectCallOptions,
  type Client,
  type Transport,
} from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  CapabilitiesService,
  type GetCapabilitiesResponse,
} from "./gen/groundwire/v1/capabilities_pb.js";
import {
  DocumentService,
  type DeleteDocumentsResponse,
  type DocumentSchema,
  type IngestDocumentsRequestSchema,
  type IngestDocumentsResponse,
} from "./gen/groundwire/v1/documents_pb.js";
import {
  GenerationService,
  type CitationFrame,
  type EndFrame,
  type GenerateRequestSchema,
  type GenerateResponse,
  type StartFrame,
} from "./gen/groundwire/v1/generation_pb.js";
import {
  RetrievalService,
  type RetrieveRequestSchema,
  type RetrieveResponse,
} from "./gen/groundwire/v1/retrieval_pb.js";
import { CORRELATION_ID_HEADER, GroundwireError } from "./errors.js";
import { HealthService, ServingStatus, type HealthStatus } from "./health.js";

/** The default deadline of every call, in ms. */
export const DEFAULT_TIMEOUT_MS = 30_000;

/** A plain-object `GenerateRequest`, e.g. `{ query, grounding: { case: "retrieval", value: { topK: 3 } } }`. */
export type GenerateRequestInit = MessageInitShape<typeof GenerateRequestSchema>;
/** A plain-object `RetrieveRequest`. */
export type RetrieveRequestInit = MessageInitShape<typeof RetrieveRequestSchema>;
/** A plain-object `Document` for `ingest`. */
export type DocumentInit = MessageInitShape<typeof DocumentSchema>;

export interface ClientOptions {
  /** `host:port`, or a URL `http://host:port` (plaintext) / `https://host:port` (TLS). */
  address: string;
  /** Sent as `authorization: Bearer <apiKey>` on every call. */
  apiKey?: string;
  /** The deadline of calls that set no `timeoutMs`; default 30 s. 0 means no deadline. */
  defaultTimeoutMs?: number;
  /** Plaintext HTTP/2 (h2c) instead of TLS, for local servers; default false. */
  insecure?: boolean;
  /** Extra options for Node's `http2.connect` (e.g. `ca` for a private CA). */
  nodeOptions?: http2.ClientSessionOptions | http2.SecureClientSessionOptions;
  /** Send HTTP/2 PINGs on busy connections at this interval (keepalive); off by default. */
  pingIntervalMs?: number;
  /**
   * A Connect transport to use instead of the gRPC one built from the options above, e.g.
   * `createRouterTransport` in tests. Auth, correlation ids and deadlines still apply.
   */
  transport?: Transport;
}

export interface CallOptions {
  /** Cancels the call; the call then fails with a GroundwireError of code CANCELLED. */
  signal?: AbortSignal;
  /** The deadline of this call in ms (`grpc-timeout`); defaults to the client's. 0: none. */
  timeoutMs?: number;
  /** Sent as `x-correlation-id`; a random UUID when not given. */
  correlationId?: string;
  /** Extra request metadata. */
  headers?: ConnectCallOptions["headers"];
  /** Receives the response header metadata; the server echoes `x-correlation-id` there. */
  onHeader?: (headers: Headers) => void;
  /** Receives the response trailer metadata. */
  onTrailer?: (trailers: Headers) => void;
}

/** The frames of one answer; also tells which correlation id was sent. */
export interface GenerateStream extends AsyncIterable<GenerateResponse> {
  /** The correlation id sent with the call (the given one or a generated one). */
  readonly correlationId: string;
}

/** The answer as plain text, with the other frames on the side. */
export interface GenerateTextResult {
  /**
   * The answer text, delta by delta (only the new text each time). Iterate it once. It throws
   * a GroundwireError when the call fails, including a failure after the end frame.
   */
  readonly text: AsyncIterable<string>;
  /** The start frame (route, model, sources); resolves as soon as it arrives. */
  readonly start: Promise<StartFrame>;
  /**
   * The end frame (finish reason, usage, cost, timings); resolves when it arrives while `text`
   * is iterated. Rejects when the call fails before it, or `text` is abandoned early.
   */
  readonly end: Promise<EndFrame>;
  /** The citation frames received so far, in order. */
  readonly citations: readonly CitationFrame[];
  /** The correlation id sent with the call. */
  readonly correlationId: string;
}

/** A groundwire client. Create one per server and reuse it; it multiplexes one HTTP/2 connection. */
export interface GroundwireClient {
  /** `grpc.health.v1.Health/Check`; resolves to `"SERVING"` when the server is ready. */
  health(options?: CallOptions & { service?: string }): Promise<HealthStatus>;
  /** The server's models, tiers, limits and feature flags. */
  capabilities(options?: CallOptions): Promise<GetCapabilitiesResponse>;
  /** Streams documents to the server and resolves to the ingest summary. */
  ingest(
    documents: Iterable<DocumentInit> | AsyncIterable<DocumentInit>,
    options?: CallOptions,
  ): Promise<IngestDocumentsResponse>;
  /** Removes documents (and their chunks) by doc id. */
  deleteDocuments(docIds: string[], options?: CallOptions): Promise<DeleteDocumentsResponse>;
  /** The top-k chunks for a query (a string is shorthand for `{ query }`). */
  retrieve(request: string | RetrieveRequestInit, options?: CallOptions): Promise<RetrieveResponse>;
  /**
   * Streams one answer as typed frames: `start`, `delta`/`citation` interleaved, `end`.
   * Leaving the loop early (break, return, throw) cancels the call.
   */
  generate(request: GenerateRequestInit, options?: CallOptions): GenerateStream;
  /** Streams one answer as text deltas, with start/end frames and citations on the side. */
  generateText(request: GenerateRequestInit, options?: CallOptions): GenerateTextResult;
  /** Closes the HTTP/2 connection (open calls fail). Idle connections never keep Node alive. */
  close(): void;
}

/** Create a client. No connection is made until the first call. */
export function createClient(options: ClientOptions): GroundwireClient {
  return new ClientImpl(options);
}

/** The base URL for an address: an explicit scheme wins over `insecure`. */
export function baseUrlFor(address: string, insecure = false): string {
  if (/^https?:\/\//i.test(address)) {
    return address.replace(/\/+$/, "");
  }
  return `${insecure ? "http" : "https"}://${address}`;
}

class ClientImpl implements GroundwireClient {
  private readonly session: Http2SessionManager | undefined;
  private readonly defaultTimeoutMs: number;
  private readonly apiKey: string | undefined;
  private readonly healthClient: Client<typeof HealthService>;
  private readonly capabilitiesClient: Client<typeof CapabilitiesService>;
  private readonly documentClient: Client<typeof DocumentService>;
  private readonly retrievalClient: Client<typeof RetrievalService>;
  private readonly generationClient: Client<typeof GenerationService>;

  constructor(options: ClientOptions) {
    if (!options.address && options.transport === undefined) {
      throw new TypeError("createClient: address is required");
    }
    let transport = options.transport;
    if (transport === undefined) {
      const baseUrl = baseUrlFor(options.address, options.insecure);
      this.session = new Http2SessionManager(
        baseUrl,
        options.pingIntervalMs === undefined ? {} : { pingIntervalMs: options.pingIntervalMs },
        options.nodeOptions,
      );
      transport = createGrpcTransport({ baseUrl, sessionManager: this.session });
    }
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.apiKey = options.apiKey;
    this.healthClient = createConnectClient(HealthService, transport);
    this.capabilitiesClient = createConnectClient(CapabilitiesService, transport);
    this.documentClient = createConnectClient(DocumentService, transport);
    this.retrievalClient = createConnectClient(RetrievalService, transport);
    this.generationClient = createConnectClient(GenerationService, transport);
  }

  /** Connect call options with auth, correlation id and deadline. */
  private prepare(options: CallOptions): { call: ConnectCallOptions; correlationId: string } {
    const correlationId = options.correlationId || randomUUID();
    const headers = new Headers(options.headers);
    if (this.apiKey) {
      headers.set("authorization", `Bearer ${this.apiKey}`);
    }
    headers.set(CORRELATION_ID_HEADER, correlationId);
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    const call: ConnectCallOptions = { headers };
    if (timeoutMs > 0) call.timeoutMs = timeoutMs;
    if (options.signal) call.signal = options.signal;
    if (options.onHeader) call.onHeader = options.onHeader;
    if (options.onTrailer) call.onTrailer = options.onTrailer;
    return { call, correlationId };
  }

  private async unary<T>(
    options: CallOptions,
    fn: (call: ConnectCallOptions) => Promise<T>,
  ): Promise<T> {
    const { call, correlationId } = this.prepare(options);
    try {
      return await fn(call);
    } catch (err) {
      throw GroundwireError.from(err, correlationId);
    }
  }

  async health(options: CallOptions & { service?: string } = {}): Promise<HealthStatus> {
    const reply = await this.unary(options, (call) =>
      this.healthClient.check({ service: options.service ?? "" }, call),
    );
    return (ServingStatus[reply.status] as HealthStatus | undefined) ?? "UNKNOWN";
  }

  capabilities(options: CallOptions = {}): Promise<GetCapabilitiesResponse> {
    return this.unary(options, (call) => this.capabilitiesClient.getCapabilities({}, call));
  }

  ingest(
    documents: Iterable<DocumentInit> | AsyncIterable<DocumentInit>,
    options: CallOptions = {},
  ): Promise<IngestDocumentsResponse> {
    async function* requests(): AsyncIterable<MessageInitShape<typeof IngestDocumentsRequestSchema>> {
      for await (const document of documents) {
        yield { document };
      }
    }
    return this.unary(options, (call) => this.documentClient.ingestDocuments(requests(), call));
  }

  deleteDocuments(docIds: string[], options: CallOptions = {}): Promise<DeleteDocumentsResponse> {
    return this.unary(options, (call) => this.documentClient.deleteDocuments({ docIds }, call));
  }

  retrieve(request: string | RetrieveRequestInit, options: CallOptions = {}): Promise<RetrieveResponse> {
    const init = typeof request === "string" ? { query: request } : request;
    return this.unary(options, (call) => this.retrievalClient.retrieve(init, call));
  }

  generate(request: GenerateRequestInit, options: CallOptions = {}): GenerateStream {
    // Connect's stream iterables ignore an early `break`, so the call gets its own abort
    // controller: linked to the caller's signal, and aborted when the caller stops reading.
    const controller = new AbortController();
    const callerSignal = options.signal;
    const onCallerAbort = (): void => controller.abort(callerSignal?.reason);
    if (callerSignal?.aborted) {
      onCallerAbort();
    } else {
      callerSignal?.addEventListener("abort", onCallerAbort, { once: true });
    }
    const { call, correlationId } = this.prepare({ ...options, signal: controller.signal });
    const responses = this.generationClient.generate(request, call)[Symbol.asyncIterator]();
    async function* frames(): AsyncGenerator<GenerateResponse> {
      let finished = false;
      try {
        for (;;) {
          const next = await responses.next();
          if (next.done) break;
          yield next.value;
        }
        finished = true;
      } catch (err) {
        finished = true;
        throw GroundwireError.from(err, correlationId);
      } finally {
        callerSignal?.removeEventListener("abort", onCallerAbort);
        if (!finished) {
          // The caller left the loop early: cancel the call (RST_STREAM), and let Connect
          // see the cancellation so it releases the stream and its deadline timer.
          controller.abort(new Error("the caller stopped reading the answer stream"));
          responses.next().catch(() => undefined);
        }
      }
    }
    return Object.assign(frames(), { correlationId });
  }

  generateText(request: GenerateRequestInit, options: CallOptions = {}): GenerateTextResult {
    const stream = this.generate(request, options);
    const { correlationId } = stream;
    const start = deferred<StartFrame>();
    const end = deferred<EndFrame>();
    const citations: CitationFrame[] = [];
    let iterated = false;
    async function* text(): AsyncGenerator<string> {
      if (iterated) {
        throw new TypeError("generateText: the text stream can be iterated only once");
      }
      iterated = true;
      let failure: GroundwireError | undefined;
      try {
        let sawEnd = false;
        for await (const response of stream) {
          const frame = response.frame;
          switch (frame.case) {
            case "start":
              start.resolve(frame.value);
              break;
            case "delta":
              yield frame.value.text;
              break;
            case "citation":
              citations.push(frame.value);
              break;
            case "end":
              sawEnd = true;
              end.resolve(frame.value);
              break;
          }
        }
        if (!sawEnd) {
          throw new GroundwireError(
            new ConnectError("the answer stream closed without an end frame", Code.DataLoss),
            correlationId,
          );
        }
      } catch (err) {
        failure = GroundwireError.from(err, correlationId);
        throw failure;
      } finally {
        // Settles whatever is still pending: on failure, or when the caller stopped early.
        failure ??= new GroundwireError(
          new ConnectError("the text stream was closed before the answer ended", Code.Canceled),
          correlationId,
        );
        start.reject(failure);
        end.reject(failure);
      }
    }
    return { text: text(), start: start.promise, end: end.promise, citations, correlationId };
  }

  close(): void {
    this.session?.abort();
  }
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(reason: unknown): void;
}

/** A promise settled from outside; its rejection alone never counts as unhandled. */
function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}
