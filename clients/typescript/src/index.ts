/**
 * Node.js client for the Likeness services.
 *
 *   const likeness = createClients("127.0.0.1:50051");            // or createClients({ trainerAddress, ... })
 *   const { dataset } = await likeness.prepareDataset(["me1.jpg", "me2.jpg", "me3.jpg"]);
 *   const { job } = await likeness.createTrainingJob({ spec: { baseModel, classNoun: "person", datasetId } });
 *   for await (const event of likeness.watchTrainingJob(job!.jobId)) { ... }   // resumes after UNAVAILABLE
 *   for await (const event of likeness.generateImages({ prompt: "a photo of {subject}", subjectModelId })) {
 *     if (event.type === "image") fs.writeFileSync(`${event.image.index}.png`, event.image.data);
 *   }
 *   await likeness.downloadSubjectModel(subjectModelId, "models/me");            // files checked by SHA-256
 *   likeness.close();
 *
 * Over TLS with an API key: `createClients("likeness.example.com:443", { tlsCaFile: "ca.pem", apiKey })`, or set
 * $LIKENESS_TLS_CA_FILE and $LIKENESS_API_KEY.
 *
 * Retries (UNAVAILABLE, RESOURCE_EXHAUSTED, with the server's pushback) and default deadlines are gRPC's, from
 * the embedded service config. Failed calls reject with a `LikenessError` carrying the server's status details
 * (`field`, `retryAfterSeconds`). The generated stubs (`likeness.trainer`, `likeness.inference`,
 * `likeness.gallery`) expose every RPC.
 */
import { randomUUID } from "crypto";
import { readFileSync } from "fs";

import * as grpc from "@grpc/grpc-js";

import { defaultChannelOptions, GRPC_SERVICES, MAX_MESSAGE_BYTES, resolveEndpoints } from "./channel";
import type { AddressOptions, Endpoints, ServiceName } from "./channel";
import { ModelDownloader } from "./download";
import type { DownloadedFile } from "./download";
import { isUnavailable, LikenessError, toLikenessError } from "./errors";
import {
  DeletePromptRequest,
  GalleryServiceClient,
  GetPromptImageRequest,
  GetPromptRequest,
  ListTemplatesRequest,
  RecordPromptRequest,
  SearchPromptsRequest,
} from "./gen/likeness/gallery/v1/gallery_service";
import type {
  DeletePromptResponse,
  GetPromptImageResponse,
  PromptRecord,
  RecordPromptResponse,
  SearchPromptsResponse,
  SearchResult,
  Template,
} from "./gen/likeness/gallery/v1/gallery_service";
import {
  DeleteSubjectModelRequest,
  DownloadSubjectModelRequest,
  GenerateImagesRequest,
  GetServerStatusRequest,
  GetSubjectModelRequest,
  InferenceServiceClient,
  ListSubjectModelsRequest,
  LoadSubjectModelRequest,
  UnloadSubjectModelRequest,
} from "./gen/likeness/inference/v1/inference_service";
import type {
  Accepted,
  ArtifactKind,
  DeepPartial,
  DeleteSubjectModelResponse,
  DownloadSubjectModelResponse,
  GenerateImagesResponse,
  GetServerStatusResponse,
  Progress,
  SubjectModelStatus,
  Summary,
} from "./gen/likeness/inference/v1/inference_service";
import {
  CancelTrainingJobRequest,
  CreateTrainingJobRequest,
  DatasetOptions,
  DeleteDatasetRequest,
  DeleteTrainingJobRequest,
  EraseSubjectRequest,
  EraseTenantRequest,
  GetDatasetRequest,
  GetTrainingJobRequest,
  ListTrainingJobsRequest,
  PrepareDatasetRequest,
  TrainerServiceClient,
  WatchTrainingJobRequest,
} from "./gen/likeness/trainer/v1/trainer_service";
import type {
  CreateTrainingJobResponse,
  Dataset,
  DeleteDatasetResponse,
  DeleteTrainingJobResponse,
  ErasureReceipt,
  JobState,
  ListTrainingJobsResponse,
  Photo,
  PrepareDatasetResponse,
  TrainingJob,
  WatchTrainingJobResponse,
} from "./gen/likeness/trainer/v1/trainer_service";
import { decodeHealthCheckResponse, encodeHealthCheckRequest, HEALTH_CHECK_PATH } from "./health";
import type { HealthStatus } from "./health";
import { ImageAssembler } from "./images";
import type { GeneratedImage } from "./images";
import { inlinePhoto, photoChunks, photoNames, UPLOAD_CHUNK_BYTES } from "./uploads";
import type { PhotoSource } from "./uploads";

export * as galleryv1 from "./gen/likeness/gallery/v1/gallery_service";
export * as inferencev1 from "./gen/likeness/inference/v1/inference_service";
export * as trainerv1 from "./gen/likeness/trainer/v1/trainer_service";
export * as typev1 from "./gen/likeness/type/v1/types";
export { GalleryServiceClient, InferenceServiceClient, TrainerServiceClient };
export {
  DEFAULT_ADDRESS,
  defaultChannelOptions,
  GRPC_SERVICES,
  MAX_MESSAGE_BYTES,
  resolveEndpoints,
  SERVICE_CONFIG,
} from "./channel";
export type { AddressOptions, Endpoints, ServiceName } from "./channel";
export type { DownloadedFile } from "./download";
export {
  decodeRpcStatus,
  isUnavailable,
  LikenessError,
  parseStatusDetails,
  REQUEST_ID_KEY,
  STATUS_DETAILS_KEY,
  toLikenessError,
} from "./errors";
export type { FieldViolation, QuotaViolation, StatusDetail, StatusDetails } from "./errors";
export type { HealthStatus } from "./health";
export type { GeneratedImage } from "./images";
export { ImageAssembler, imageExtension } from "./images";
export { UPLOAD_CHUNK_BYTES } from "./uploads";
export type { PhotoSource } from "./uploads";
export { signWebhook, verifyWebhookSignature, WEBHOOK_SECRET_PREFIX, webhookSigningKey } from "./webhooks";
export type { VerifyWebhookOptions, WebhookHeaders } from "./webhooks";

/** Request objects may leave out any field; unset fields take their proto defaults. 64-bit fields accept
 * bigint, number or string. */
export type PartialRequest<T> = DeepPartial<T>;

export interface ClientOptions extends AddressOptions {
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
  /** Extra grpc-js channel options, merged over `defaultChannelOptions()` (`"grpc.enable_retries": 0` turns
   * gRPC's retries off; `"grpc.service_config"` replaces the embedded one). */
  channelOptions?: grpc.ChannelOptions;
  /** Consecutive reconnects `watchTrainingJob` tries before giving up (default 10). */
  maxReconnects?: number;
  /** First reconnect delay in milliseconds, doubled each try up to 5 s (default 200). */
  reconnectBackoffMs?: number;
}

/**
 * Options of one call: grpc-js call options (`deadline`, ...) and the metadata to send. Without a deadline a call
 * gets its method's default from the service config (60 s; 600 s for uploads, job creation, generation and
 * downloads; none for watches).
 */
export interface CallOptions extends Partial<grpc.CallOptions> {
  /** Metadata sent with the call. */
  metadata?: grpc.Metadata;
}

/** Per-call options of the streaming helpers. */
export type StreamOptions = CallOptions;

/** Options of `prepareDataset`. */
export interface UploadOptions extends CallOptions {
  /** Photo bytes per message, at most 1 MiB (the default). */
  chunkBytes?: number;
}

/** `createTrainingJob`'s request: CreateTrainingJobRequest with photos from paths or bytes. */
export type CreateTrainingJobInput = Omit<PartialRequest<CreateTrainingJobRequest>, "photos"> & {
  /** Photos sent inline, prepared with `datasetOptions` (they must fit in one message; else upload them with
   * `prepareDataset` and set `spec.datasetId`). */
  photos?: PhotoSource[];
};

/** Options of `downloadSubjectModel`. */
export interface DownloadOptions extends CallOptions {
  /** Only files of these kinds; empty downloads every file. */
  kinds?: ArtifactKind[];
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

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (error: grpc.ServiceError | null, response: Res) => void,
) => grpc.ClientUnaryCall;

/**
 * Calls a unary method of a generated client and returns a promise:
 * `await unary(likeness.gallery, likeness.gallery.getPrompt, GetPromptRequest.fromPartial({ promptId }))`.
 * Rejects with a `LikenessError` (`code`, `details`, `requestId`, `field`, `retryAfterSeconds`, `metadata`).
 */
export function unary<Req, Res>(
  client: grpc.Client,
  method: UnaryMethod<Req, Res>,
  request: Req,
  options: Partial<grpc.CallOptions> = {},
  metadata: grpc.Metadata = new grpc.Metadata(),
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, request, metadata, options, (error, response) =>
      error ? reject(toLikenessError(error)) : resolve(response),
    );
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Stops a stream the caller abandoned, so the server stops working on it. */
function cancelQuietly(call: { on(event: "error", listener: () => void): unknown; cancel(): void }): void {
  // Cancelling makes the stream emit a CANCELLED error; nobody listens any more, and an unheard 'error' event
  // would crash the process.
  call.on("error", () => undefined);
  call.cancel();
}

/** Splits the SDK's call options into grpc-js call options and metadata. */
function splitOptions(options: CallOptions): [Partial<grpc.CallOptions>, grpc.Metadata] {
  const { metadata, ...callOptions } = options;
  return [callOptions, metadata ?? new grpc.Metadata()];
}

type ClientConstructor<T> = new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: Partial<grpc.ClientOptions>,
) => T;

/** The trainer, inference and gallery clients (one channel per distinct address), with helpers. */
export class LikenessClients {
  /** The trainer's address (the one address of all three services, unless a layout splits them). */
  readonly address: string;
  /** Each service's address. */
  readonly endpoints: Endpoints;
  readonly trainer: TrainerServiceClient;
  readonly inference: InferenceServiceClient;
  readonly gallery: GalleryServiceClient;
  private readonly channelOwners: grpc.Client[] = [];
  private readonly maxReconnects: number;
  private readonly reconnectBackoffMs: number;

  constructor(addressOrOptions?: string | ClientOptions, options: ClientOptions = {}) {
    if (typeof addressOrOptions === "object") {
      options = { ...addressOrOptions, ...options };
    } else if (addressOrOptions) {
      options = { ...options, address: addressOrOptions };
    }
    this.endpoints = resolveEndpoints(options);
    this.address = this.endpoints.trainer;
    let credentials = channelCredentials(options);
    const channelOptions: grpc.ClientOptions = { ...defaultChannelOptions(), ...options.channelOptions };
    const apiKey = options.apiKey ?? process.env.LIKENESS_API_KEY ?? "";
    // _isSecure is grpc-js's own test (public since 1.0): call credentials on an insecure channel are refused.
    if (apiKey && credentials._isSecure()) {
      credentials = credentials.compose(apiKeyCallCredentials(apiKey));
    } else if (apiKey) {
      channelOptions.interceptors = [apiKeyInterceptor(apiKey), ...(channelOptions.interceptors ?? [])];
    }
    const byAddress = new Map<string, grpc.Client>();
    const connect = <T extends grpc.Client>(Client: ClientConstructor<T>, address: string): T => {
      const owner = byAddress.get(address);
      if (owner !== undefined) {
        return new Client(address, credentials, { ...channelOptions, channelOverride: owner.getChannel() });
      }
      const client = new Client(address, credentials, channelOptions);
      byAddress.set(address, client);
      this.channelOwners.push(client);
      return client;
    };
    this.trainer = connect(TrainerServiceClient, this.endpoints.trainer);
    this.inference = connect(InferenceServiceClient, this.endpoints.inference);
    this.gallery = connect(GalleryServiceClient, this.endpoints.gallery);
    this.maxReconnects = options.maxReconnects ?? 10;
    this.reconnectBackoffMs = options.reconnectBackoffMs ?? 200;
  }

  /** Closes the channels; calls in flight fail with CANCELLED. */
  close(): void {
    for (const client of this.channelOwners) {
      client.close();
    }
  }

  /** Resolves once every channel is connected; rejects after `deadline`. */
  async waitForReady(deadline: grpc.Deadline): Promise<void> {
    await Promise.all(
      this.channelOwners.map(
        (client) =>
          new Promise<void>((resolve, reject) => client.waitForReady(deadline, (error) => (error ? reject(error) : resolve()))),
      ),
    );
  }

  private clientOf(service: string): grpc.Client {
    for (const name of ["trainer", "inference", "gallery"] as ServiceName[]) {
      if (GRPC_SERVICES[name] === service) return this[name];
    }
    return this.trainer;
  }

  private healthOf(client: grpc.Client, service: string, options: Partial<grpc.CallOptions>): Promise<HealthStatus> {
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        HEALTH_CHECK_PATH,
        encodeHealthCheckRequest,
        decodeHealthCheckResponse,
        service,
        new grpc.Metadata(),
        options,
        (error, status) => (error ? reject(toLikenessError(error)) : resolve(status ?? "UNKNOWN")),
      );
    });
  }

  /**
   * The server's health for `service` ("" for the whole server, or for example
   * "likeness.inference.v1.InferenceService", asked at that service's address). NOT_SERVING while models load
   * and while draining. With per-service addresses, "" is SERVING only when every address says so.
   */
  async checkHealth(service = "", options: Partial<grpc.CallOptions> = {}): Promise<HealthStatus> {
    if (service !== "") {
      return this.healthOf(this.clientOf(service), service, options);
    }
    const statuses = await Promise.all(this.channelOwners.map((client) => this.healthOf(client, "", options)));
    return statuses.find((status) => status !== "SERVING") ?? "SERVING";
  }

  /**
   * Resolves once the health check reports SERVING for `service` ("" for every service); rejects with
   * UNAVAILABLE after `timeoutMs`. Connection failures count as not serving yet.
   */
  async waitUntilServing(timeoutMs = 60_000, service = "", pollMs = 200): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = "no answer";
    for (;;) {
      const remaining = deadline - Date.now();
      try {
        const status = await this.checkHealth(service, { deadline: Date.now() + Math.max(100, Math.min(5_000, remaining)) });
        if (status === "SERVING") return;
        last = status;
      } catch (error) {
        const code = (error as Partial<grpc.ServiceError>).code;
        if (code !== grpc.status.UNAVAILABLE && code !== grpc.status.DEADLINE_EXCEEDED) throw error;
        last = (error as Error).message;
      }
      if (remaining <= 0) {
        throw new LikenessError(grpc.status.UNAVAILABLE, `${this.address} did not become SERVING within ${timeoutMs} ms (${last})`);
      }
      await sleep(Math.min(pollMs, Math.max(remaining, 0)));
    }
  }

  // --- trainer ---

  /**
   * Uploads photos (file paths, Buffers, or `{ fileName, data | path, caption }`) and prepares a dataset:
   * validated, oriented, cropped around the subject, resized, near-duplicates removed, with a per-photo report.
   * The first message carries `options`, then each photo follows in chunks of at most 1 MiB; files are read as
   * they are sent. Photos already in shared storage go in `options.photoUris` instead.
   */
  async prepareDataset(
    photos: readonly PhotoSource[],
    options: PartialRequest<DatasetOptions> = {},
    callOptions: UploadOptions = {},
  ): Promise<PrepareDatasetResponse> {
    const { chunkBytes = UPLOAD_CHUNK_BYTES, ...rest } = callOptions;
    if (!Number.isInteger(chunkBytes) || chunkBytes <= 0 || chunkBytes > UPLOAD_CHUNK_BYTES) {
      throw new RangeError(`chunkBytes must be an integer from 1 to ${UPLOAD_CHUNK_BYTES}, got ${chunkBytes}`);
    }
    const names = photoNames(photos);
    const [grpcOptions, metadata] = splitOptions(rest);
    let finished = false;
    let wake: () => void = () => undefined;
    return new Promise<PrepareDatasetResponse>((resolve, reject) => {
      const call = this.trainer.prepareDataset(metadata, grpcOptions, (error, response) => {
        finished = true;
        wake();
        if (error) reject(toLikenessError(error));
        else resolve(response);
      });
      // Writes one message, waiting while grpc-js's buffer is full (the server reads slower than files are read),
      // or until the call ends.
      const send = async (message: PrepareDatasetRequest): Promise<void> => {
        if (!call.write(message) && !finished) {
          await new Promise<void>((drained) => {
            wake = () => {
              call.off("drain", wake);
              wake = () => undefined;
              drained();
            };
            call.on("drain", wake);
          });
        }
      };
      (async () => {
        await send({ payload: { $case: "options", value: DatasetOptions.fromPartial(options) } });
        for (let at = 0; at < photos.length && !finished; at += 1) {
          for await (const chunk of photoChunks(photos[at], names[at], chunkBytes)) {
            if (finished) break; // the server already answered (an error); stop reading files
            await send({ payload: { $case: "photoChunk", value: chunk } });
          }
        }
        call.end();
      })().catch((error: unknown) => {
        // A photo that cannot be read: abandon the upload, so the server prepares nothing.
        finished = true;
        cancelQuietly(call);
        reject(error);
      });
    });
  }

  /** Returns a prepared dataset with its per-photo report. */
  async getDataset(datasetId: string, options: CallOptions = {}): Promise<Dataset | undefined> {
    const response = await this.call(this.trainer, this.trainer.getDataset, GetDatasetRequest.fromPartial({ datasetId }), options);
    return response.dataset;
  }

  /** Deletes a dataset and its photos; FAILED_PRECONDITION while a job that has not ended trains on it. */
  deleteDataset(datasetId: string, options: CallOptions = {}): Promise<DeleteDatasetResponse> {
    return this.call(this.trainer, this.trainer.deleteDataset, DeleteDatasetRequest.fromPartial({ datasetId }), options);
  }

  /**
   * Queues a training job on `spec.datasetId`, or on `photos` sent inline (prepared with `datasetOptions`).
   * Without an `idempotencyKey` it sets a random one, so gRPC's retries of an UNAVAILABLE call (the service
   * config) return the job the first attempt queued instead of queueing a second. `webhook` (url, secret,
   * sendProgress) makes the server POST the job's events; verify them with `verifyWebhookSignature`.
   */
  async createTrainingJob(request: CreateTrainingJobInput, options: CallOptions = {}): Promise<CreateTrainingJobResponse> {
    const sources = request.photos ?? [];
    const names = photoNames(sources);
    const photos: Photo[] = await Promise.all(sources.map((source, at) => inlinePhoto(source, names[at])));
    const inlineBytes = photos.reduce((total, photo) => total + photo.data.length, 0);
    if (inlineBytes > MAX_MESSAGE_BYTES - 1024 * 1024) {
      throw new RangeError(
        `inline photos total ${inlineBytes} bytes, over the message limit; upload them with prepareDataset and pass spec.datasetId`,
      );
    }
    const message = CreateTrainingJobRequest.fromPartial({
      ...request,
      photos,
      idempotencyKey: request.idempotencyKey || randomUUID().replace(/-/g, ""),
    });
    return this.call(this.trainer, this.trainer.createTrainingJob, message, options);
  }

  /** Returns one training job. */
  async getTrainingJob(jobId: string, options: CallOptions = {}): Promise<TrainingJob> {
    const response = await this.call(this.trainer, this.trainer.getTrainingJob, GetTrainingJobRequest.fromPartial({ jobId }), options);
    return response.job!;
  }

  /** Lists training jobs, newest first (one page; follow `nextPageToken`). */
  listTrainingJobs(
    request: { states?: JobState[]; pageSize?: number; pageToken?: string } = {},
    options: CallOptions = {},
  ): Promise<ListTrainingJobsResponse> {
    return this.call(this.trainer, this.trainer.listTrainingJobs, ListTrainingJobsRequest.fromPartial(request), options);
  }

  /** Cancels a queued or running job and returns it; a running job stops within one training step. */
  async cancelTrainingJob(jobId: string, options: CallOptions = {}): Promise<TrainingJob> {
    const response = await this.call(
      this.trainer,
      this.trainer.cancelTrainingJob,
      CancelTrainingJobRequest.fromPartial({ jobId }),
      options,
    );
    return response.job!;
  }

  /** Deletes an ended job with its events and files; FAILED_PRECONDITION while it runs (cancel it first). */
  deleteTrainingJob(jobId: string, options: CallOptions = {}): Promise<DeleteTrainingJobResponse> {
    return this.call(this.trainer, this.trainer.deleteTrainingJob, DeleteTrainingJobRequest.fromPartial({ jobId }), options);
  }

  /**
   * Erases everything derived from one subject's photos, named by exactly one id of its lineage; the receipt.
   */
  async eraseSubject(
    subject: { datasetId: string } | { jobId: string } | { modelId: string },
    options: CallOptions = {},
  ): Promise<ErasureReceipt> {
    const [$case, value] = Object.entries(subject)[0] as ["datasetId" | "jobId" | "modelId", string];
    const request = EraseSubjectRequest.fromPartial({ subject: { $case, value } });
    const response = await this.call(this.trainer, this.trainer.eraseSubject, request, options);
    return response.receipt!;
  }

  /** Erases every subject, gallery entry, file and API key of a tenant (admin keys only); the receipt. */
  async eraseTenant(tenant: string, options: CallOptions = {}): Promise<ErasureReceipt> {
    const response = await this.call(this.trainer, this.trainer.eraseTenant, EraseTenantRequest.fromPartial({ tenant }), options);
    return response.receipt!;
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
    const [grpcOptions, metadata] = splitOptions(options);
    for (;;) {
      const request = WatchTrainingJobRequest.fromPartial({ jobId, afterSequence: last });
      const call = this.trainer.watchTrainingJob(request, metadata, grpcOptions);
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
          throw toLikenessError(error);
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

  // --- inference ---

  /**
   * Streams a generation: `accepted`, `progress`, `warning` and `summary` events as they come, and an `image`
   * event for each image once all its chunks arrived. Breaking out of the loop cancels the request on the server.
   * Rejects with a `LikenessError` when the server fails the call.
   */
  async *generateImages(
    request: PartialRequest<GenerateImagesRequest>,
    options: StreamOptions = {},
  ): AsyncGenerator<GenerationEvent> {
    const message = GenerateImagesRequest.fromPartial(request);
    const [grpcOptions, metadata] = splitOptions(options);
    const call = this.inference.generateImages(message, metadata, grpcOptions);
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
    } catch (error) {
      finished = true;
      throw toLikenessError(error);
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

  /** Subject models in shared storage with their load state, newest first. */
  async listSubjectModels(
    request: { baseModel?: string; loadedOnly?: boolean } = {},
    options: CallOptions = {},
  ): Promise<SubjectModelStatus[]> {
    const response = await this.call(
      this.inference,
      this.inference.listSubjectModels,
      ListSubjectModelsRequest.fromPartial(request),
      options,
    );
    return response.models;
  }

  /** One subject model with its load state on the replica that answers (NOT_FOUND when it does not exist). */
  async getSubjectModel(modelId: string, options: CallOptions = {}): Promise<SubjectModelStatus> {
    const response = await this.call(
      this.inference,
      this.inference.getSubjectModel,
      GetSubjectModelRequest.fromPartial({ modelId }),
      options,
    );
    return response.model!;
  }

  /** Deletes a subject model with its files, its gallery entries and every replica's cached copy. */
  deleteSubjectModel(modelId: string, options: CallOptions = {}): Promise<DeleteSubjectModelResponse> {
    return this.call(this.inference, this.inference.deleteSubjectModel, DeleteSubjectModelRequest.fromPartial({ modelId }), options);
  }

  /** Pre-warms a subject model on the replica that answers, so its first generation does not wait. */
  async loadSubjectModel(modelId: string, options: CallOptions = {}): Promise<SubjectModelStatus> {
    const response = await this.call(
      this.inference,
      this.inference.loadSubjectModel,
      LoadSubjectModelRequest.fromPartial({ modelId }),
      options,
    );
    return response.model!;
  }

  /** Evicts a subject model from the replica that answers (it loads again on its next use). */
  async unloadSubjectModel(modelId: string, options: CallOptions = {}): Promise<SubjectModelStatus> {
    const response = await this.call(
      this.inference,
      this.inference.unloadSubjectModel,
      UnloadSubjectModelRequest.fromPartial({ modelId }),
      options,
    );
    return response.model!;
  }

  /** Loaded models, cache memory and queue of the inference replica that answers. */
  getServerStatus(options: CallOptions = {}): Promise<GetServerStatusResponse> {
    return this.call(this.inference, this.inference.getServerStatus, GetServerStatusRequest.fromPartial({}), options);
  }

  /**
   * Downloads a subject model's files (weights, kohya export, manifest, sample images) into `folder`, keeping
   * their relative paths, and returns what it wrote. Each file's size and SHA-256 are checked against its header
   * before it gets its name; a mismatch rejects with DATA_LOSS, and a path that would land outside `folder`
   * (absolute, `..`, through a symbolic link) with PERMISSION_DENIED, before anything is written there.
   */
  async downloadSubjectModel(modelId: string, folder: string, options: DownloadOptions = {}): Promise<DownloadedFile[]> {
    const { kinds = [], ...rest } = options;
    const [grpcOptions, metadata] = splitOptions(rest);
    const request = DownloadSubjectModelRequest.fromPartial({ modelId, kinds });
    const call = this.inference.downloadSubjectModel(request, metadata, grpcOptions);
    const downloader = new ModelDownloader(folder);
    let finished = false;
    try {
      for await (const message of call as AsyncIterable<DownloadSubjectModelResponse>) {
        await downloader.add(message);
      }
      finished = true;
      return await downloader.finish();
    } catch (error) {
      await downloader.abort();
      throw toLikenessError(error);
    } finally {
      if (!finished) {
        cancelQuietly(call);
      }
    }
  }

  // --- gallery ---

  /** Searches recorded and shared prompts, best matches first (one page; follow `nextPageToken`). */
  searchPrompts(
    request: PartialRequest<SearchPromptsRequest>,
    options: CallOptions = {},
  ): Promise<SearchPromptsResponse> {
    return this.call(this.gallery, this.gallery.searchPrompts, SearchPromptsRequest.fromPartial(request), options);
  }

  /** Every result of a search, page after page (each entry once). */
  async *iterPrompts(request: PartialRequest<SearchPromptsRequest> = {}, options: CallOptions = {}): AsyncGenerator<SearchResult> {
    let pageToken = request.pageToken ?? "";
    for (;;) {
      const page = await this.searchPrompts({ pageSize: 100, ...request, pageToken }, options);
      yield* page.results;
      pageToken = page.nextPageToken;
      if (!pageToken) return;
    }
  }

  /** One prompt record. */
  async getPrompt(promptId: string, options: CallOptions = {}): Promise<PromptRecord> {
    const response = await this.call(this.gallery, this.gallery.getPrompt, GetPromptRequest.fromPartial({ promptId }), options);
    return response.prompt!;
  }

  /** Records a prompt with its parameters (and the image it produced); an identical prompt returns the existing
   * record (`existing: true`). */
  recordPrompt(request: PartialRequest<RecordPromptRequest>, options: CallOptions = {}): Promise<RecordPromptResponse> {
    return this.call(this.gallery, this.gallery.recordPrompt, RecordPromptRequest.fromPartial(request), options);
  }

  /** Deletes one of the caller's prompts with its image. */
  deletePrompt(promptId: string, options: CallOptions = {}): Promise<DeletePromptResponse> {
    return this.call(this.gallery, this.gallery.deletePrompt, DeletePromptRequest.fromPartial({ promptId }), options);
  }

  /** The full image of a gallery entry and its media type ("image/png", ...), joined from its chunks. */
  async getPromptImage(promptId: string, options: StreamOptions = {}): Promise<{ data: Buffer; mediaType: string }> {
    const [grpcOptions, metadata] = splitOptions(options);
    const call = this.gallery.getPromptImage(GetPromptImageRequest.fromPartial({ promptId }), metadata, grpcOptions);
    const parts: Buffer[] = [];
    let mediaType = "";
    try {
      for await (const chunk of call as AsyncIterable<GetPromptImageResponse>) {
        mediaType ||= chunk.mediaType;
        parts.push(chunk.data);
      }
    } catch (error) {
      throw toLikenessError(error);
    }
    return { data: Buffer.concat(parts), mediaType };
  }

  /** Prompt templates with a "{subject}" placeholder, optionally of one category. */
  async listTemplates(category = "", options: CallOptions = {}): Promise<Template[]> {
    const response = await this.call(this.gallery, this.gallery.listTemplates, ListTemplatesRequest.fromPartial({ category }), options);
    return response.templates;
  }

  private call<Req, Res>(client: grpc.Client, method: UnaryMethod<Req, Res>, request: Req, options: CallOptions): Promise<Res> {
    const [grpcOptions, metadata] = splitOptions(options);
    return unary(client, method, request, grpcOptions, metadata);
  }
}

/**
 * Connects the trainer, inference and gallery clients: to `address` (default $LIKENESS_ADDRESS or
 * 127.0.0.1:50051), or to per-service addresses (`{ trainerAddress, inferenceAddress, galleryAddress }`, default
 * $LIKENESS_TRAINER_ADDRESS, ...). Over TLS when `tlsCaFile` / `tlsCa` (or $LIKENESS_TLS_CA_FILE) names a CA,
 * sending `apiKey` (or $LIKENESS_API_KEY) as `authorization: Bearer <key>` on every call.
 *
 *   createClients("likeness.internal:50051", { apiKey })
 *   createClients({ trainerAddress: "trainer:50051", inferenceAddress: "inference:50051", galleryAddress: "gallery:50051" })
 */
export function createClients(addressOrOptions?: string | ClientOptions, options: ClientOptions = {}): LikenessClients {
  return new LikenessClients(addressOrOptions, options);
}
