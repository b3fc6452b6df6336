// Where the services are and how to reach them: addresses, channel options and the gRPC service config.
//
// One address reaches all three services (the embedded `likeness serve all`, or a deployment's single entry, the
// gateway); per-service addresses override it for layouts without one. Retries and default deadlines are gRPC's
// own: the service config `service_config.json` (a byte-identical copy of clients/service_config.json, the one
// file every SDK embeds) goes to grpc-js as the `grpc.service_config` channel option, so grpc-js retries
// UNAVAILABLE and RESOURCE_EXHAUSTED with exponential backoff, honouring the server's `grpc-retry-pushback-ms`
// trailer (gRPC A6: a delay to wait, or a negative value meaning "do not retry"), and gives each method its
// default deadline.
import * as grpc from "@grpc/grpc-js";

import serviceConfigJson from "./service_config.json";

/** Address used when none is given and $LIKENESS_ADDRESS is unset. */
export const DEFAULT_ADDRESS = "127.0.0.1:50051";
/** The server's default message-size limit; generated images and inline photos must fit in one message. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Bytes of a client stream that grpc-js keeps to replay it on a retry (an upload up to this size is retried). */
export const RETRY_BUFFER_BYTES = 4 * 1024 * 1024;
/** SDK version, sent in the user agent. */
export const SDK_VERSION = "0.1.0";

/** The gRPC service config every Likeness SDK embeds (retry policy, per-method deadlines), as JSON text. */
export const SERVICE_CONFIG: string = JSON.stringify(serviceConfigJson);

/** The three services, by the name of their client. */
export type ServiceName = "trainer" | "inference" | "gallery";
export const SERVICE_NAMES: readonly ServiceName[] = ["trainer", "inference", "gallery"];
/** The fully qualified gRPC service name of each client, as health checks and the service config name them. */
export const GRPC_SERVICES: Readonly<Record<ServiceName, string>> = {
  trainer: "likeness.trainer.v1.TrainerService",
  inference: "likeness.inference.v1.InferenceService",
  gallery: "likeness.gallery.v1.GalleryService",
};

/** The address of each service; all the same unless a layout splits them. */
export interface Endpoints {
  trainer: string;
  inference: string;
  gallery: string;
}

/** Addresses as `createClients` takes them. */
export interface AddressOptions {
  /** The one address of every service (default $LIKENESS_ADDRESS, else 127.0.0.1:50051). */
  address?: string;
  /** The trainer's own address (default $LIKENESS_TRAINER_ADDRESS, else `address`). */
  trainerAddress?: string;
  /** The inference service's own address (default $LIKENESS_INFERENCE_ADDRESS, else `address`). */
  inferenceAddress?: string;
  /** The gallery's own address (default $LIKENESS_GALLERY_ADDRESS, else `address`). */
  galleryAddress?: string;
}

/**
 * The address of each service: its own address (option, else $LIKENESS_<SERVICE>_ADDRESS), else the shared one
 * (option, else $LIKENESS_ADDRESS, else 127.0.0.1:50051).
 */
export function resolveEndpoints(options: AddressOptions = {}): Endpoints {
  const shared = options.address || process.env.LIKENESS_ADDRESS || DEFAULT_ADDRESS;
  const own: Record<ServiceName, string | undefined> = {
    trainer: options.trainerAddress,
    inference: options.inferenceAddress,
    gallery: options.galleryAddress,
  };
  const pick = (name: ServiceName): string =>
    own[name] || process.env[`LIKENESS_${name.toUpperCase()}_ADDRESS`] || shared;
  return { trainer: pick("trainer"), inference: pick("inference"), gallery: pick("gallery") };
}

/**
 * Channel options matching the server: its 64 MiB message limit; keepalive pings every 30 s, with a 10 s
 * timeout, also while no call is open (the servers accept a ping every 10 s), so long watches, generations and
 * downloads survive proxies and load balancers; and the service config with retries on.
 */
export function defaultChannelOptions(): grpc.ChannelOptions {
  return {
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.primary_user_agent": `likeness-node/${SDK_VERSION}`,
    "grpc.service_config": SERVICE_CONFIG,
    "grpc.enable_retries": 1,
    "grpc.per_rpc_retry_buffer_size": RETRY_BUFFER_BYTES,
  };
}
