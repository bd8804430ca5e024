// @groundwire/sdk: the TypeScript client for groundwire.

export {
  createClient,
  baseUrlFor,
  DEFAULT_TIMEOUT_MS,
  type ClientOptions,
  type CallOptions,
  type GroundwireClient,
  type GenerateStream,
  type GenerateTextResult,
  type GenerateRequestInit,
  type RetrieveRequestInit,
  type DocumentInit,
} from "./client.js";
export {
  GroundwireError,
  grpcCodeName,
  CORRELATION_ID_HEADER,
  ERROR_DOMAIN,
  type FieldViolation,
  type QuotaViolation,
  type GrpcCodeName,
} from "./errors.js";
export { ServingStatus, type HealthStatus } from "./health.js";
// Connect's status codes: `err.code === Code.InvalidArgument`.
export { Code } from "@connectrpc/connect";

// The generated groundwire.v1 messages, enums and service descriptors.
export * from "./gen/groundwire/v1/capabilities_pb.js";
export * from "./gen/groundwire/v1/common_pb.js";
export * from "./gen/groundwire/v1/documents_pb.js";
export * from "./gen/groundwire/v1/errors_pb.js";
export * from "./gen/groundwire/v1/generation_pb.js";
export * from "./gen/groundwire/v1/retrieval_pb.js";
