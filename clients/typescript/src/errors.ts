// Failed calls as one error type that carries the server's status details.
//
// The services attach standard google.rpc details to a failed call in the `grpc-status-details-bin` trailer (a
// serialized google.rpc.Status whose `details` are Any messages): BadRequest naming the field to fix on
// INVALID_ARGUMENT, RetryInfo (how long to wait) and QuotaFailure (which quota) on RESOURCE_EXHAUSTED. They are
// decoded here by hand: five small messages are not worth shipping the googleapis protos and a second runtime.
import * as grpc from "@grpc/grpc-js";
import { BinaryReader } from "@bufbuild/protobuf/wire";

/** Trailing metadata key of the serialized google.rpc.Status that carries a status's details. */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";
/** Trailing metadata key of the server's request id (quote it when reporting a problem). */
export const REQUEST_ID_KEY = "x-request-id";

const TYPE_URL_PREFIX = "type.googleapis.com/";
const BAD_REQUEST = "google.rpc.BadRequest";
const RETRY_INFO = "google.rpc.RetryInfo";
const QUOTA_FAILURE = "google.rpc.QuotaFailure";

/** One google.protobuf.Any of a status: the detail's type and its serialized message. */
export interface StatusDetail {
  typeUrl: string;
  value: Uint8Array;
}

/** One google.rpc.BadRequest.FieldViolation: the request field (a path such as `spec.hyperparameters.seed`). */
export interface FieldViolation {
  field: string;
  description: string;
}

/** One google.rpc.QuotaFailure.Violation: the quota that was exceeded (`max_active_jobs`, ...). */
export interface QuotaViolation {
  subject: string;
  description: string;
}

/** What the `grpc-status-details-bin` trailer says, decoded. */
export interface StatusDetails {
  /** Every detail as sent, including kinds this SDK does not decode. */
  details: StatusDetail[];
  /** BadRequest field violations, in order. */
  fieldViolations: FieldViolation[];
  /** RetryInfo's delay in seconds, when the server sent one. */
  retryAfterSeconds?: number;
  /** QuotaFailure violations, in order. */
  quotaViolations: QuotaViolation[];
}

/** Reads length-delimited and varint fields of one message; `visit` gets each field number and its reader. */
function readFields(data: Uint8Array, visit: (field: number, wireType: number, reader: BinaryReader) => boolean): void {
  const reader = new BinaryReader(data);
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (!visit(field, wireType, reader)) {
      reader.skip(wireType);
    }
  }
}

/** Decodes a google.rpc.Status: code = 1, message = 2, details = 3 (repeated google.protobuf.Any). */
export function decodeRpcStatus(data: Uint8Array): { code: number; message: string; details: StatusDetail[] } {
  const status = { code: 0, message: "", details: [] as StatusDetail[] };
  readFields(data, (field, wireType, reader) => {
    if (field === 1 && wireType === 0) {
      status.code = reader.int32();
    } else if (field === 2 && wireType === 2) {
      status.message = reader.string();
    } else if (field === 3 && wireType === 2) {
      const detail: StatusDetail = { typeUrl: "", value: new Uint8Array(0) };
      readFields(reader.bytes(), (anyField, anyWire, anyReader) => {
        if (anyField === 1 && anyWire === 2) detail.typeUrl = anyReader.string();
        else if (anyField === 2 && anyWire === 2) detail.value = anyReader.bytes();
        else return false;
        return true;
      });
      status.details.push(detail);
    } else {
      return false;
    }
    return true;
  });
  return status;
}

/** Two string fields (1 and 2) of a small message, such as a field or quota violation. */
function decodePair(data: Uint8Array): [string, string] {
  const pair: [string, string] = ["", ""];
  readFields(data, (field, wireType, reader) => {
    if ((field === 1 || field === 2) && wireType === 2) {
      pair[field - 1] = reader.string();
      return true;
    }
    return false;
  });
  return pair;
}

/** The messages of repeated field 1 (BadRequest.field_violations, QuotaFailure.violations). */
function decodeRepeatedFirstField(data: Uint8Array): Uint8Array[] {
  const items: Uint8Array[] = [];
  readFields(data, (field, wireType, reader) => {
    if (field === 1 && wireType === 2) {
      items.push(reader.bytes());
      return true;
    }
    return false;
  });
  return items;
}

/** RetryInfo { google.protobuf.Duration retry_delay = 1; } in seconds. */
function decodeRetryDelaySeconds(data: Uint8Array): number | undefined {
  let delay: number | undefined;
  readFields(data, (field, wireType, reader) => {
    if (field !== 1 || wireType !== 2) return false;
    let seconds = 0;
    let nanos = 0;
    readFields(reader.bytes(), (durationField, durationWire, durationReader) => {
      if (durationField === 1 && durationWire === 0) seconds = Number(durationReader.int64());
      else if (durationField === 2 && durationWire === 0) nanos = durationReader.int32();
      else return false;
      return true;
    });
    delay = seconds + nanos / 1e9;
    return true;
  });
  return delay;
}

/** Decodes the details of a failed call from its trailing metadata; empty when it carries none (or garbage). */
export function parseStatusDetails(metadata: grpc.Metadata | undefined): StatusDetails {
  const result: StatusDetails = { details: [], fieldViolations: [], quotaViolations: [] };
  for (const value of metadata?.get(STATUS_DETAILS_KEY) ?? []) {
    if (typeof value === "string") continue;
    try {
      const status = decodeRpcStatus(value);
      for (const detail of status.details) {
        result.details.push(detail);
        const type = detail.typeUrl.startsWith(TYPE_URL_PREFIX)
          ? detail.typeUrl.slice(TYPE_URL_PREFIX.length)
          : detail.typeUrl.slice(detail.typeUrl.lastIndexOf("/") + 1);
        if (type === BAD_REQUEST) {
          for (const item of decodeRepeatedFirstField(detail.value)) {
            const [field, description] = decodePair(item);
            result.fieldViolations.push({ field, description });
          }
        } else if (type === RETRY_INFO) {
          result.retryAfterSeconds ??= decodeRetryDelaySeconds(detail.value);
        } else if (type === QUOTA_FAILURE) {
          for (const item of decodeRepeatedFirstField(detail.value)) {
            const [subject, description] = decodePair(item);
            result.quotaViolations.push({ subject, description });
          }
        }
      }
    } catch {
      // A trailer this SDK cannot read is no reason to hide the status itself.
    }
  }
  return result;
}

/** The name of a status code, for example "INVALID_ARGUMENT". */
export function statusName(code: number): string {
  return (grpc.status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

/**
 * A failed call: the gRPC status with what the server said about it. It is a grpc-js `ServiceError` too
 * (`code`, `details`, `metadata`), so code written against raw stubs keeps working.
 *
 *   try { await likeness.createTrainingJob(...) } catch (error) {
 *     if (error instanceof LikenessError && error.code === grpc.status.INVALID_ARGUMENT) console.log(error.field);
 *   }
 */
export class LikenessError extends Error implements grpc.ServiceError {
  /** The gRPC status code (`grpc.status.NOT_FOUND`, ...). */
  readonly code: grpc.status;
  /** Its name, for example "NOT_FOUND". */
  readonly codeName: string;
  /** The server's message: what to fix. */
  readonly details: string;
  /** The call's trailing metadata. */
  readonly metadata: grpc.Metadata;
  /** The server's request id (the `x-request-id` trailer); it is in the server logs. "" when none came. */
  readonly requestId: string;
  /** The request field to fix, from the server's google.rpc.BadRequest (first violation); else undefined. */
  readonly field?: string;
  /** Every BadRequest field violation. */
  readonly fieldViolations: FieldViolation[];
  /** How long to wait before retrying, from the server's google.rpc.RetryInfo; undefined when it sent none. */
  readonly retryAfterSeconds?: number;
  /** Which quotas were exceeded, from the server's google.rpc.QuotaFailure. */
  readonly quotaViolations: QuotaViolation[];
  /** Every status detail as sent (google.protobuf.Any), for kinds not decoded here. */
  readonly statusDetails: StatusDetail[];
  /** The grpc-js error this was made from, when it came from a call. */
  readonly cause?: unknown;

  constructor(code: grpc.status, details: string, metadata: grpc.Metadata = new grpc.Metadata(), cause?: unknown) {
    const requestId = metadata.get(REQUEST_ID_KEY).map(String)[0] ?? "";
    const codeName = statusName(code);
    super(`${codeName}${details ? `: ${details}` : ""}${requestId ? ` (request id ${requestId})` : ""}`);
    this.name = "LikenessError";
    this.code = code;
    this.codeName = codeName;
    this.details = details;
    this.metadata = metadata;
    this.requestId = requestId;
    this.cause = cause;
    const parsed = parseStatusDetails(metadata);
    this.fieldViolations = parsed.fieldViolations;
    this.field = parsed.fieldViolations[0]?.field;
    this.retryAfterSeconds = parsed.retryAfterSeconds;
    this.quotaViolations = parsed.quotaViolations;
    this.statusDetails = parsed.details;
  }
}

/** True for a grpc-js status error (or a LikenessError): an object with a numeric `code` and `details`. */
function isServiceError(error: unknown): error is grpc.ServiceError {
  const candidate = error as Partial<grpc.ServiceError> | null;
  return typeof candidate?.code === "number" && typeof candidate.details === "string";
}

/** The LikenessError for a failed call; other errors (a local bug, a file that cannot be read) pass unchanged. */
export function toLikenessError(error: unknown): unknown {
  if (error instanceof LikenessError || !isServiceError(error)) {
    return error;
  }
  return new LikenessError(error.code, error.details, error.metadata ?? new grpc.Metadata(), error);
}

/** True for the status of a call that failed because the connection or the server went away. */
export function isUnavailable(error: unknown): boolean {
  return (error as Partial<grpc.ServiceError> | null)?.code === grpc.status.UNAVAILABLE;
}
