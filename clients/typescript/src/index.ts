/**
 * Node.js client for the Likeness services.
 *
 *   const likeness = createClients("127.0.0.1:50051");
 *   for await (const event of likeness.generateImages({ prompt: "a photo of {subject}", subjectModelId })) {
 *     if (event.type === "image") fs.writeFileSync(`${event.image.index}.png`, event.image.data);
 *   }
 *   likeness.close();
 *
 * Over TLS with an API key: `createClients("likeness.example.com:443", { tlsCaFile: "ca.pem", apiKey })`, or set
 * $LIKENESS_TLS_CA_FILE and $LIKENESS_API_KEY.
 *
 * The generated stubs (`likeness.trainer`, `likeness.inference`, `likeness.gallery`) expose every RPC; the
 * helpers here cover what is awkward with raw stubs: reassembling image chunks, resuming a training watch after
 * a dropped connection, promises for unary calls, and health checks.
 */
import { readFileSync } from "fs";

import * as grpc from "@grpc/grpc-js";

import {
  GalleryServiceClient,
  ListTemplatesRequest,
  SearchPromptsRequest,
} from "./gen/likeness/gallery/v1/gallery_service";
import type { SearchPromptsResponse, Template } from "./gen/likeness/gallery/v1/gallery_service";
import { GenerateImagesRequest, InferenceServiceClient } from "./gen/likeness/inference/v1/inference_service";
import type {
  Accepted,
  DeepPartial,
  GenerateImagesResponse,
  Progress,
  Summary,
} from "./gen/likeness/inference/v1/inference_service";
import { TrainerServiceClient, WatchTrainingJobRequest } from "./gen/likeness/trainer/v1/trainer_service";
import type { WatchTrainingJobResponse } from "./gen/likeness/trainer/v1/trainer_service";
import { decodeHealthCheckResponse, encodeHealthCheckRequest, HEALTH_CHECK_PATH } from "./health";
import type { HealthStatus } from "./health";
import { ImageAssembler } from "./images";
import type { GeneratedImage } from "./images";

export * as galleryv1 from "./gen/likeness/gallery/v1/gallery_service";
export * as inferencev1 from "./gen/likeness/inference/v1/inference_service";
export * as trainerv1 from "./gen/likeness/trainer/v1/trainer_service";
export * as typev1 from "./gen/likeness/type/v1/types";
export { GalleryServiceClient, InferenceServiceClient, TrainerServiceClient };
export type { HealthStatus } from "./health";
export type { GeneratedImage } from "./images";
export { ImageAssembler, imageExtension } from "./images";

/** Address used when none is given and $LIKENESS_ADDRESS is unset. */
export const DEFAULT_ADDRESS = "127.0.0.1:50051";
/** The server's default message-size limit; generated images and inline photos must fit in one message. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Request objects may leave out any field; unset fields take their proto defaults. 64-bit fields accept
 * bigint, number or string. */
export type PartialRequest<T> = DeepPartial<T>;

export interface ClientOptions {
  /**
   * Sent as `authorization: Bearer <apiKey>` on every call, for servers with `auth = "api-key"`. Default:
   * $LIKENESS_API_KEY; an empty string sends none.
   */
  apiKey?: string;
  /**
   * PEM file of the CA that signed the server's certificate: connects with TLS, trusting that CA. Default:
   * $LIKENESS_TLS_CA_FILE; an empty string means plaintext. Ignored when `tlsCa` or `credentials` is given.
   */
  tlsCaFile?: string;
  /** The CA certificate(s) as PEM bytes, instead of `tlsCaFile`. Ignored when `credentials` is given. */
  tlsCa?: Buffer;
  /**
   * Channel credentials, for full control (client certificates for mutual TLS). Without them and without a CA
   * the channel is plaintext, as the embedded server listens by default.
   */
  credentials?: grpc.ChannelCredentials;
  /** Extra grpc-js channel options, merged over `defaultChannelOptions()`. */
  channelOptions?: grpc.ChannelOptions;
  /** Consecutive reconnects `watchTrainingJob` tries before giving up (default 10). */
  maxReconnects?: number;
  /** First reconnect delay in milliseconds, doubled each try up to 5 s (default 200). */
  reconnectBackoffMs?: number;
}

/** Per-call options of the streaming helpers. */
export interface StreamOptions {
  /** Deadline of the call (of each reconnect, for watches). */
  deadline?: grpc.Deadline;
  /** Metadata sent with the call. */
  metadata?: grpc.Metadata;
}

/** One event of `generateImages`: the stream's messages, with image chunks replaced by whole images. */
export type GenerationEvent =
  | { type: "accepted"; accepted: Accepted }
  | { type: "progress"; progress: Progress }
  | { type: "warning"; message: string }
  | { type: "image"; image: GeneratedImage }
  | { type: "summary"; summary: Summary };

/** Everything one generation returned, collected by `generate`. */
export interface GenerationResult {
  accepted?: Accepted;
  images: GeneratedImage[];
  warnings: string[];
  summary?: Summary;
}

/**
 * Channel options matching the server: its 64 MiB message limit, and keepalive pings every 30 s (the server
 * accepts one every 10 s) so idle training watches survive proxies and load balancers.
 */
export function defaultChannelOptions(): grpc.ChannelOptions {
  return {
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.primary_user_agent": "likeness-node/0.1.0",
  };
}

/** The channel credentials `options` ask for: `credentials`, else TLS trusting `tlsCa` / `tlsCaFile`
 * (default $LIKENESS_TLS_CA_FILE), else plaintext. */
function channelCredentials(options: ClientOptions): grpc.ChannelCredentials {
  if (options.credentials !== undefined) {
    return options.credentials;
  }
  if (options.tlsCa !== undefined) {
    return grpc.credentials.createSsl(options.tlsCa);
  }
  const caFile = options.tlsCaFile ?? process.env.LIKENESS_TLS_CA_FILE ?? "";
  return caFile ? grpc.credentials.createSsl(readFileSync(caFile)) : grpc.credentials.createInsecure();
}

/** Call credentials adding `authorization: Bearer <apiKey>` to each call; grpc-js sends them over TLS only. */
function apiKeyCallCredentials(apiKey: string): grpc.CallCredentials {
  return grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${apiKey}`);
    callback(null, metadata);
  });
}

/** An interceptor adding `authorization: Bearer <apiKey>` to each call, for plaintext channels (where grpc-js
 * refuses call credentials). A call that brings its own `authorization` metadata keeps it. */
function apiKeyInterceptor(apiKey: string): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        if (metadata.get("authorization").length === 0) {
          metadata.set("authorization", `Bearer ${apiKey}`);
        }
        next(metadata, listener);
      },
    });
}

/** True for the status of a call that failed because the connection or the server went away. */
export function isUnavailable(error: unknown): boolean {
  return (error as Partial<grpc.ServiceError> | null)?.code === grpc.status.UNAVAILABLE;
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (error: grpc.ServiceError | null, response: Res) => void,
) => grpc.ClientUnaryCall;

/**
 * Calls a unary method of a generated client and returns a promise:
 * `await unary(likeness.gallery, likeness.gallery.getPrompt, GetPromptRequest.fromPartial({ promptId }))`.
 * Rejects with the grpc-js `ServiceError` (`code`, `details`, `metadata` with the server's x-request-id).
 */
export function unary<Req, Res>(
  client: grpc.Client,
  method: UnaryMethod<Req, Res>,
  request: Req,
  options: Partial<grpc.CallOptions> = {},
  metadata: grpc.Metadata = new grpc.Metadata(),
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, request, metadata, options, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Stops a stream the caller abandoned, so the server stops working on it. */
function cancelQuietly(call: grpc.ClientReadableStream<unknown>): void {
  // Cancelling makes the stream emit a CANCELLED error; nobody listens any more, and an unheard 'error' event
  // would crash the process.
  call.on("error", () => undefined);
  call.cancel();
}

/** The trainer, inference and gallery clients over one shared channel, with stream helpers. */
export class LikenessClients {
  readonly address: string;
  readonly trainer: TrainerServiceClient;
  readonly inference: InferenceServiceClient;
  readonly gallery: GalleryServiceClient;
  private readonly maxReconnects: number;
  private readonly reconnectBackoffMs: number;

  constructor(address?: string, options: ClientOptions = {}) {
    this.address = address || process.env.LIKENESS_ADDRESS || DEFAULT_ADDRESS;
    let credentials = channelCredentials(options);
    const channelOptions: grpc.ClientOptions = { ...defaultChannelOptions(), ...options.channelOptions };
    const apiKey = options.apiKey ?? process.env.LIKENESS_API_KEY ?? "";
    // _isSecure is grpc-js's own test (public since 1.0): call credentials on an insecure channel are refused.
    if (apiKey && credentials._isSecure()) {
      credentials = credentials.compose(apiKeyCallCredentials(apiKey));
    } else if (apiKey) {
      channelOptions.interceptors = [apiKeyInterceptor(apiKey), ...(channelOptions.interceptors ?? [])];
    }
    this.trainer = new TrainerServiceClient(this.address, credentials, channelOptions);
    const shared = { ...channelOptions, channelOverride: this.trainer.getChannel() };
    this.inference = new InferenceServiceClient(this.address, credentials, shared);
    this.gallery = new GalleryServiceClient(this.address, credentials, shared);
    this.maxReconnects = options.maxReconnects ?? 10;
    this.reconnectBackoffMs = options.reconnectBackoffMs ?? 200;
  }

  /** Closes the shared channel; calls in flight fail with CANCELLED. */
  close(): void {
    this.trainer.close();
  }

  /** Resolves once the channel is connected; rejects after `deadline`. */
  waitForReady(deadline: grpc.Deadline): Promise<void> {
    return new Promise((resolve, reject) =>
      this.trainer.waitForReady(deadline, (error) => (error ? reject(error) : resolve())),
    );
  }

  /**
   * The server's health for `service` ("" for the whole server, or for example
   * "likeness.inference.v1.InferenceService"). NOT_SERVING while models load and while draining.
   */
  checkHealth(service = "", options: Partial<grpc.CallOptions> = {}): Promise<HealthStatus> {
    return new Promise((resolve, reject) => {
      this.trainer.makeUnaryRequest(
        HEALTH_CHECK_PATH,
        encodeHealthCheckRequest,
        decodeHealthCheckResponse,
        service,
        new grpc.Metadata(),
        options,
        (error, status) => (error ? reject(error) : resolve(status ?? "UNKNOWN")),
      );
    });
  }

  /**
   * Streams a generation: `accepted`, `progress`, `warning` and `summary` events as they come, and an `image`
   * event for each image once all its chunks arrived. Breaking out of the loop cancels the request on the server.
   * Rejects with the grpc-js `ServiceError` when the server fails the call.
   */
  async *generateImages(
    request: PartialRequest<GenerateImagesRequest>,
    options: StreamOptions = {},
  ): AsyncGenerator<GenerationEvent> {
    const message = GenerateImagesRequest.fromPartial(request);
    const call = this.inference.generateImages(message, options.metadata ?? new grpc.Metadata(), {
      deadline: options.deadline,
    });
    const assembler = new ImageAssembler();
    let finished = false;
    try {
      for await (const response of call as AsyncIterable<GenerateImagesResponse>) {
        const event = response.event;
        switch (event?.$case) {
          case "accepted":
            yield { type: "accepted", accepted: event.value };
            break;
          case "progress":
            yield { type: "progress", progress: event.value };
            break;
          case "warning":
            yield { type: "warning", message: event.value.message };
            break;
          case "imageChunk": {
            const image = assembler.add(event.value);
            if (image !== undefined) {
              yield { type: "image", image };
            }
            break;
          }
          case "summary":
            yield { type: "summary", summary: event.value };
            break;
          default:
            // An event added in a later API version: ignore it, as compatible evolution allows.
            break;
        }
      }
      finished = true;
      assembler.finish();
    } finally {
      if (!finished) {
        cancelQuietly(call);
      }
    }
  }

  /** Runs `generateImages` to the end and returns the images, warnings and summary together. */
  async generate(
    request: PartialRequest<GenerateImagesRequest>,
    options: StreamOptions = {},
  ): Promise<GenerationResult> {
    const result: GenerationResult = { images: [], warnings: [] };
    for await (const event of this.generateImages(request, options)) {
      if (event.type === "accepted") result.accepted = event.accepted;
      else if (event.type === "image") result.images.push(event.image);
      else if (event.type === "warning") result.warnings.push(event.message);
      else if (event.type === "summary") result.summary = event.summary;
    }
    return result;
  }

  /**
   * Yields a training job's events after `afterSequence` until the job ends.
   *
   * When the connection drops (UNAVAILABLE: a restarting or draining server, a broken proxy) it reconnects from
   * the last sequence it yielded, so no event is lost or repeated. Gives up after `maxReconnects` consecutive
   * failures; any event received resets the count.
   */
  async *watchTrainingJob(
    jobId: string,
    afterSequence: bigint | number = 0n,
    options: StreamOptions = {},
  ): AsyncGenerator<WatchTrainingJobResponse> {
    let last = BigInt(afterSequence);
    let failures = 0;
    for (;;) {
      const request = WatchTrainingJobRequest.fromPartial({ jobId, afterSequence: last });
      const call = this.trainer.watchTrainingJob(request, options.metadata ?? new grpc.Metadata(), {
        deadline: options.deadline,
      });
      let finished = false;
      try {
        for await (const event of call as AsyncIterable<WatchTrainingJobResponse>) {
          failures = 0;
          if (event.sequence <= last) {
            continue; // replayed after a reconnect; already yielded
          }
          last = event.sequence;
          yield event;
        }
        finished = true;
        return;
      } catch (error) {
        finished = true;
        if (!isUnavailable(error) || failures >= this.maxReconnects) {
          throw error;
        }
        await sleep(Math.min(5_000, this.reconnectBackoffMs * 2 ** failures));
        failures += 1;
      } finally {
        if (!finished) {
          cancelQuietly(call);
        }
      }
    }
  }

  /** Prompt templates with a "{subject}" placeholder, optionally of one category. */
  async listTemplates(category = "", options: Partial<grpc.CallOptions> = {}): Promise<Template[]> {
    const request = ListTemplatesRequest.fromPartial({ category });
    const response = await unary(this.gallery, this.gallery.listTemplates, request, options);
    return response.templates;
  }

  /** Searches recorded and built-in prompts, best matches first (one page; follow `nextPageToken`). */
  searchPrompts(
    request: PartialRequest<SearchPromptsRequest>,
    options: Partial<grpc.CallOptions> = {},
  ): Promise<SearchPromptsResponse> {
    const message = SearchPromptsRequest.fromPartial(request);
    return unary(this.gallery, this.gallery.searchPrompts, message, options);
  }
}

/**
 * Connects the trainer, inference and gallery clients to `address` (default $LIKENESS_ADDRESS or 127.0.0.1:50051):
 * over TLS when `tlsCaFile` / `tlsCa` (or $LIKENESS_TLS_CA_FILE) names a CA, sending `apiKey` (or
 * $LIKENESS_API_KEY) as `authorization: Bearer <key>` on every call.
 */
export function createClients(address?: string, options: ClientOptions = {}): LikenessClients {
  return new LikenessClients(address, options);
}
