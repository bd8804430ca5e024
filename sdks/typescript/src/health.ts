// The standard gRPC health service (grpc/health/v1/health.proto), described at run time.
//
// groundwire's contract does not include health.proto, so there is no generated code for it;
// its two messages and one method are small enough to describe here with protobuf-es'
// descriptor API instead of vendoring the file into the code generation.

import { create, createFileRegistry, type Message } from "@bufbuild/protobuf";
import type { GenMessage, GenService } from "@bufbuild/protobuf/codegenv2";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";

/** `grpc.health.v1.HealthCheckResponse.ServingStatus`. */
export enum ServingStatus {
  UNKNOWN = 0,
  SERVING = 1,
  NOT_SERVING = 2,
  SERVICE_UNKNOWN = 3,
}

/** The name of a serving status, as `health()` returns it. */
export type HealthStatus = keyof typeof ServingStatus;

export type HealthCheckRequest = Message<"grpc.health.v1.HealthCheckRequest"> & {
  service: string;
};

export type HealthCheckResponse = Message<"grpc.health.v1.HealthCheckResponse"> & {
  status: ServingStatus;
};

const { STRING, ENUM } = FieldDescriptorProto_Type;
const { OPTIONAL } = FieldDescriptorProto_Label;

const healthProto = create(FileDescriptorProtoSchema, {
  name: "grpc/health/v1/health.proto",
  package: "grpc.health.v1",
  syntax: "proto3",
  messageType: [
    {
      name: "HealthCheckRequest",
      field: [{ name: "service", jsonName: "service", number: 1, type: STRING, label: OPTIONAL }],
    },
    {
      name: "HealthCheckResponse",
      field: [
        {
          name: "status",
          jsonName: "status",
          number: 1,
          type: ENUM,
          label: OPTIONAL,
          typeName: ".grpc.health.v1.HealthCheckResponse.ServingStatus",
        },
      ],
      enumType: [
        {
          name: "ServingStatus",
          value: Object.entries(ServingStatus)
            .filter((entry): entry is [string, number] => typeof entry[1] === "number")
            .map(([name, number]) => ({ name, number })),
        },
      ],
    },
  ],
  service: [
    {
      name: "Health",
      method: [
        {
          name: "Check",
          inputType: ".grpc.health.v1.HealthCheckRequest",
          outputType: ".grpc.health.v1.HealthCheckResponse",
        },
      ],
    },
  ],
});

const registry = createFileRegistry(healthProto, () => undefined);

function lookup<T>(found: T | undefined, name: string): T {
  if (found === undefined) {
    throw new Error(`health descriptor: ${name} missing`);
  }
  return found;
}

export const HealthCheckRequestSchema = lookup(
  registry.getMessage("grpc.health.v1.HealthCheckRequest"),
  "HealthCheckRequest",
) as GenMessage<HealthCheckRequest>;

export const HealthCheckResponseSchema = lookup(
  registry.getMessage("grpc.health.v1.HealthCheckResponse"),
  "HealthCheckResponse",
) as GenMessage<HealthCheckResponse>;

/** `grpc.health.v1.Health` with its unary `Check` method. */
export const HealthService = lookup(
  registry.getService("grpc.health.v1.Health"),
  "Health",
) as GenService<{
  check: {
    methodKind: "unary";
    input: typeof HealthCheckRequestSchema;
    output: typeof HealthCheckResponseSchema;
  };
}>;
