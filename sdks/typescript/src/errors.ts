// Typed errors: every failed call surfaces as a GroundwireError, decoded from the
// google.rpc.Status details the server puts in the `grpc-status-details-bin` trailer.

import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import { ErrorReason } from "./gen/groundwire/v1/errors_pb.js";

/** The metadata key carrying the correlation id, on requests and in responses. */
export const CORRELATION_ID_HEADER = "x-correlation-id";

/** The `ErrorInfo.domain` of every groundwire error. */
export const ERROR_DOMAIN = "groundwire.v1";

/** The canonical gRPC status code names, as the gRPC spec and other SDKs spell them. */
export type GrpcCodeName =
  | "OK"
  | "CANCELLED"
  | "UNKNOWN"
  | "INVALID_ARGUMENT"
  | "DEADLINE_EXCEEDED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "OUT_OF_RANGE"
  | "UNIMPLEMENTED"
  | "INTERNAL"
  | "UNAVAILABLE"
  | "DATA_LOSS"
  | "UNAUTHENTICATED";

const CODE_NAMES: Record<Code, GrpcCodeName> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/** The gRPC name of a Connect code, e.g. `Code.InvalidArgument` → `"INVALID_ARGUMENT"`. */
export function grpcCodeName(code: Code): GrpcCodeName {
  return CODE_NAMES[code] ?? "UNKNOWN";
}

/** One offending request field, from a `google.rpc.BadRequest` detail. */
export interface FieldViolation {
  /** The field's proto path, e.g. `temperature` or `retrieval.top_k`. */
  field: string;
  /** Why the value was rejected. */
  description: string;
}

/** One spent quota, from a `google.rpc.QuotaFailure` detail (`ERROR_REASON_QUOTA_EXCEEDED`). */
export interface QuotaViolation {
  /** The quota's name: `requests_per_minute`, `llm_tokens_per_minute` or
   * `spend_micros_per_day`, as `getCapabilities` lists them. */
  subject: string;
  /** What was exceeded. */
  description: string;
}

/**
 * A failed groundwire call.
 *
 * `code` is the gRPC status code (Connect's `Code` enum; its numbers are the gRPC codes),
 * `codeName` the same as the gRPC name. `reason`, `domain` and `metadata` come from the
 * `google.rpc.ErrorInfo` detail; switch on `reason` (or `reasonCode`), not on the message.
 */
export class GroundwireError extends Error {
  override readonly name = "GroundwireError";
  /** The gRPC status code, e.g. `Code.InvalidArgument` (3). */
  readonly code: Code;
  /** The gRPC status code name, e.g. `"INVALID_ARGUMENT"`. */
  readonly codeName: GrpcCodeName;
  /** `ErrorInfo.reason`, e.g. `"ERROR_REASON_INVALID_FIELD"`; empty when the status had none
   * (a client-side cancel or deadline, a transport failure, a non-groundwire server). */
  readonly reason: string;
  /** `reason` as the generated `ErrorReason` enum; `ErrorReason.UNSPECIFIED` when unknown. */
  readonly reasonCode: ErrorReason;
  /** `ErrorInfo.domain`: `"groundwire.v1"` for errors from the server, else empty. */
  readonly domain: string;
  /** `ErrorInfo.metadata` (always holds `correlation_id` for server errors). */
  readonly metadata: Readonly<Record<string, string>>;
  /** The correlation id of the call: from `ErrorInfo`, else the response metadata, else the
   * id the client sent. Quote it when reporting a problem. */
  readonly correlationId: string | undefined;
  /** The offending fields, from a `google.rpc.BadRequest` detail; empty when none. */
  readonly fieldViolations: readonly FieldViolation[];
  /** The spent quotas, from a `google.rpc.QuotaFailure` detail; empty when none. */
  readonly quotaViolations: readonly QuotaViolation[];
  /** The delay the server suggests before retrying (`google.rpc.RetryInfo`), in ms. */
  readonly retryAfterMs: number | undefined;
  /** The status message as the server sent it, without the code prefix. */
  readonly rawMessage: string;
  /** Response headers and trailers that came with the error. */
  readonly responseMetadata: Headers;
  /** The underlying ConnectError. */
  override readonly cause: ConnectError;

  constructor(err: ConnectError, fallbackCorrelationId?: string) {
    const info = err.findDetails(ErrorInfoSchema)[0];
    const reason = info?.reason ?? "";
    const correlationId =
      info?.metadata["correlation_id"] ||
      err.metadata.get(CORRELATION_ID_HEADER) ||
      fallbackCorrelationId ||
      undefined;
    const codeName = grpcCodeName(err.code);
    super(
      `[${codeName}${reason ? ` ${reason}` : ""}] ${err.rawMessage}` +
        (correlationId ? ` (correlation id ${correlationId})` : ""),
      { cause: err },
    );
    this.cause = err;
    this.code = err.code;
    this.codeName = codeName;
    this.reason = reason;
    this.reasonCode = parseReason(reason);
    this.domain = info?.domain ?? "";
    this.metadata = { ...(info?.metadata ?? {}) };
    this.correlationId = correlationId;
    this.fieldViolations = err
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations)
      .map((v) => ({ field: v.field, description: v.description }));
    this.quotaViolations = err
      .findDetails(QuotaFailureSchema)
      .flatMap((failure) => failure.violations)
      .map((v) => ({ subject: v.subject, description: v.description }));
    const delay = err.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryAfterMs =
      delay === undefined ? undefined : Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1e6);
    this.rawMessage = err.rawMessage;
    this.responseMetadata = err.metadata;
  }

  /**
   * Wrap anything thrown by a call. A GroundwireError is returned as is; anything else goes
   * through `ConnectError.from` (an AbortError becomes CANCELLED, other errors UNKNOWN).
   */
  static from(reason: unknown, fallbackCorrelationId?: string): GroundwireError {
    if (reason instanceof GroundwireError) {
      return reason;
    }
    return new GroundwireError(ConnectError.from(reason), fallbackCorrelationId);
  }

  /** True when a retry may succeed: UNAVAILABLE or RESOURCE_EXHAUSTED, or a RetryInfo. */
  get retryable(): boolean {
    return (
      this.retryAfterMs !== undefined ||
      this.code === Code.Unavailable ||
      this.code === Code.ResourceExhausted
    );
  }
}

/** Accepts `ERROR_REASON_INVALID_FIELD` as well as `INVALID_FIELD`. */
function parseReason(reason: string): ErrorReason {
  const short = reason.startsWith("ERROR_REASON_") ? reason.slice("ERROR_REASON_".length) : reason;
  const value = (ErrorReason as unknown as Record<string, unknown>)[short];
  return typeof value === "number" ? (value as ErrorReason) : ErrorReason.UNSPECIFIED;
}
