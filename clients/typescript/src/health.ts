// The standard gRPC health check (grpc.health.v1.Health/Check), encoded by hand: two one-field messages are not
// worth shipping health.proto and a second generated module for.
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";

/** Serving status of a service, as the health check reports it. */
export type HealthStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

const STATUS_NAMES: Record<number, HealthStatus> = {
  0: "UNKNOWN",
  1: "SERVING",
  2: "NOT_SERVING",
  3: "SERVICE_UNKNOWN",
};

export const HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check";

/** Encodes HealthCheckRequest { string service = 1; }. */
export function encodeHealthCheckRequest(service: string): Buffer {
  const writer = new BinaryWriter();
  if (service !== "") {
    writer.uint32((1 << 3) | 2).string(service);
  }
  return Buffer.from(writer.finish());
}

/** Decodes HealthCheckResponse { ServingStatus status = 1; }, skipping fields it does not know. */
export function decodeHealthCheckResponse(data: Buffer): HealthStatus {
  const reader = new BinaryReader(data);
  let status = 0;
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag >>> 3 === 1 && (tag & 7) === 0) {
      status = reader.int32();
    } else {
      reader.skip(tag & 7);
    }
  }
  return STATUS_NAMES[status] ?? "UNKNOWN";
}
