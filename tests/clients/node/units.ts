// Checks of the TypeScript SDK against fake grpc-js servers in this process, for what a real server does not do on
// demand: retry pushback (positive and negative), status details in trailers, per-service addresses, downloads
// that are broken or malicious. Plus the webhook verifier against a vector signed by the Python test, and the
// embedded service config against the canonical file. Compiled together with the SDK sources.
//
//   node units.js --service-config clients/service_config.json --webhook '{"secret": ..., "signature": ...}'
//
// Prints {"passed": [...], "failed": [{"name", "error"}]} and exits 1 when a check failed.
import { createHash } from "crypto";
import { promises as fsp, readFileSync } from "fs";
import * as os from "os";
import * as path from "path";

import * as grpc from "@grpc/grpc-js";
import { BinaryWriter } from "@bufbuild/protobuf/wire";

import {
  createClients,
  defaultChannelOptions,
  galleryv1,
  inferencev1,
  LikenessError,
  SERVICE_CONFIG,
  signWebhook,
  verifyWebhookSignature,
  webhookSigningKey,
} from "./index";
import type { LikenessClients } from "./index";
import { GalleryServiceService } from "./gen/likeness/gallery/v1/gallery_service";
import { InferenceServiceService } from "./gen/likeness/inference/v1/inference_service";
import { CreateTrainingJobResponse, TrainerServiceService } from "./gen/likeness/trainer/v1/trainer_service";
import type { CreateTrainingJobRequest } from "./gen/likeness/trainer/v1/trainer_service";

function flag(name: string): string {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : "";
}

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

function equal(actual: unknown, expected: unknown, what: string): void {
  const a = JSON.stringify(actual, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
  const e = JSON.stringify(expected, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
  check(a === e, `${what}: expected ${e}, got ${a}`);
}

// --- google.rpc.Status, encoded by hand as a server would send it ---

function any(typeName: string, value: Uint8Array): Uint8Array {
  return new BinaryWriter().uint32((1 << 3) | 2).string(`type.googleapis.com/${typeName}`).uint32((2 << 3) | 2).bytes(value).finish();
}

function badRequest(field: string, description: string): Uint8Array {
  const violation = new BinaryWriter().uint32((1 << 3) | 2).string(field).uint32((2 << 3) | 2).string(description).finish();
  return any("google.rpc.BadRequest", new BinaryWriter().uint32((1 << 3) | 2).bytes(violation).finish());
}

function retryInfo(seconds: number, nanos: number): Uint8Array {
  const duration = new BinaryWriter().uint32(1 << 3).int64(seconds).uint32(2 << 3).int32(nanos).finish();
  return any("google.rpc.RetryInfo", new BinaryWriter().uint32((1 << 3) | 2).bytes(duration).finish());
}

function quotaFailure(subject: string): Uint8Array {
  const violation = new BinaryWriter().uint32((1 << 3) | 2).string(subject).uint32((2 << 3) | 2).string("over quota").finish();
  return any("google.rpc.QuotaFailure", new BinaryWriter().uint32((1 << 3) | 2).bytes(violation).finish());
}

function rpcStatus(code: number, message: string, details: Uint8Array[]): Buffer {
  const writer = new BinaryWriter().uint32(1 << 3).int32(code).uint32((2 << 3) | 2).string(message);
  for (const detail of details) writer.uint32((3 << 3) | 2).bytes(detail);
  return Buffer.from(writer.finish());
}

function failure(code: grpc.status, details: string, trailers: Record<string, string | Buffer>): grpc.ServiceError {
  const metadata = new grpc.Metadata();
  metadata.set("x-request-id", "req-fake");
  for (const [key, value] of Object.entries(trailers)) metadata.set(key, value);
  return Object.assign(new Error(details), { code, details, metadata });
}

// --- the fake services ---

const attempts = new Map<string, number>();

function attempt(key: string): number {
  const count = (attempts.get(key) ?? 0) + 1;
  attempts.set(key, count);
  return count;
}

type Unary = (call: { request: { baseModel: string } }, callback: grpc.sendUnaryData<unknown>) => void;

const listSubjectModels: Unary = (call, callback) => {
  const key = call.request.baseModel;
  const count = attempt(key);
  const exhausted = (pushback: string) =>
    failure(grpc.status.RESOURCE_EXHAUSTED, "the queue is full", {
      "grpc-retry-pushback-ms": pushback,
      "grpc-status-details-bin": rpcStatus(8, "the queue is full", [retryInfo(2, 500_000_000), quotaFailure("max_active_jobs")]),
    });
  switch (key) {
    case "pushback-300":
      return count === 1 ? callback(exhausted("300")) : callback(null, { models: [] });
    case "pushback-negative":
      return callback(exhausted("-1"));
    case "unavailable-once":
      return count === 1 ? callback(failure(grpc.status.UNAVAILABLE, "restarting", {})) : callback(null, { models: [] });
    case "bad-request":
      return callback(
        failure(grpc.status.INVALID_ARGUMENT, "base_model: no such model", {
          "grpc-status-details-bin": rpcStatus(3, "base_model: no such model", [badRequest("base_model", "no such model")]),
        }),
      );
    default:
      return callback(null, inferencev1.ListSubjectModelsResponse.fromPartial({ models: [{ model: { modelId: `served-${key}` } }] }));
  }
};

interface FakeFile {
  path: string;
  data: Buffer;
  sha256?: string;
  sizeBytes?: number;
}

const GOOD_FILES: FakeFile[] = [
  { path: "manifest.json", data: Buffer.from('{"identifier": "ohwx"}') },
  { path: "adapter/adapter_model.safetensors", data: Buffer.alloc(2.5 * 1024 * 1024 + 17, 7) },
  { path: "samples/empty.png", data: Buffer.alloc(0) },
];

const DOWNLOADS: Record<string, FakeFile[]> = {
  good: GOOD_FILES,
  "escape-dotdot": [{ path: "../evil.txt", data: Buffer.from("x") }],
  "escape-nested": [{ path: "adapter/../../evil.txt", data: Buffer.from("x") }],
  "escape-absolute": [{ path: path.join(os.tmpdir(), "likeness-evil.txt"), data: Buffer.from("x") }],
  "escape-symlink": [{ path: "link/evil.txt", data: Buffer.from("x") }],
  "bad-sha": [GOOD_FILES[0], { path: "weights.bin", data: Buffer.from("tampered"), sha256: "0".repeat(64) }],
  short: [{ path: "weights.bin", data: Buffer.from("short"), sizeBytes: 10 }],
};

function downloadSubjectModel(call: grpc.ServerWritableStream<{ modelId: string }, unknown>): void {
  const files = DOWNLOADS[call.request.modelId];
  if (files === undefined) {
    call.emit("error", failure(grpc.status.NOT_FOUND, `subject model ${call.request.modelId} does not exist`, {}));
    return;
  }
  for (const file of files) {
    const sha256 = file.sha256 ?? createHash("sha256").update(file.data).digest("hex");
    call.write({ payload: { $case: "file", value: { path: file.path, kind: 1, sizeBytes: BigInt(file.sizeBytes ?? file.data.length), sha256 } } });
    for (let start = 0; start < file.data.length; start += 1024 * 1024) {
      call.write({ payload: { $case: "data", value: file.data.subarray(start, start + 1024 * 1024) } });
    }
  }
  call.end();
}

/** Echoes what it was sent: the webhook (as the server keeps it, without the secret), key and photos. */
function createTrainingJob(call: { request: CreateTrainingJobRequest }, callback: grpc.sendUnaryData<unknown>): void {
  const { request } = call;
  const job = {
    jobId: "job-echo",
    spec: request.spec,
    idempotencyKey: request.idempotencyKey,
    webhook: request.webhook && { ...request.webhook, secret: "" },
    error: `${request.webhook?.secret === "s3cret-of-16-chars" ? "secret sent" : "no secret"}; ` +
      request.photos.map((photo) => `${photo.fileName}:${photo.data.length}:${photo.caption}`).join(","),
  };
  callback(null, CreateTrainingJobResponse.fromPartial({ job }));
}

async function serve(services: [grpc.ServiceDefinition, grpc.UntypedServiceImplementation][]): Promise<[grpc.Server, string]> {
  const server = new grpc.Server();
  for (const [definition, implementation] of services) server.addService(definition, implementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return [server, `127.0.0.1:${port}`];
}

// --- the checks ---

async function rejection(promise: Promise<unknown>): Promise<LikenessError> {
  try {
    await promise;
  } catch (error) {
    check(error instanceof LikenessError, `expected a LikenessError, got ${String(error)}`);
    return error;
  }
  throw new Error("expected the call to fail");
}

async function main(): Promise<void> {
  const [serverA, addressA] = await serve([
    [InferenceServiceService, { listSubjectModels, downloadSubjectModel }],
    [TrainerServiceService, { createTrainingJob }],
  ]);
  const [serverB, addressB] = await serve([
    [InferenceServiceService, { listSubjectModels }],
    [GalleryServiceService, { listTemplates: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, galleryv1.ListTemplatesResponse.fromPartial({ templates: [{ templateId: "from-b" }] })) }],
  ]);
  const likeness: LikenessClients = createClients(addressA);
  const scratch = await fsp.mkdtemp(path.join(os.tmpdir(), "likeness-units-"));
  const checks: Record<string, () => Promise<void>> = {
    "service config is the canonical file": async () => {
      const canonical = JSON.parse(readFileSync(flag("--service-config"), "utf8"));
      equal(JSON.parse(SERVICE_CONFIG), canonical, "embedded service config");
      const options = defaultChannelOptions();
      equal(options["grpc.service_config"], SERVICE_CONFIG, "channel option grpc.service_config");
      equal(
        [options["grpc.keepalive_time_ms"], options["grpc.keepalive_timeout_ms"], options["grpc.keepalive_permit_without_calls"]],
        [30_000, 10_000, 1],
        "keepalive",
      );
    },
    "retry after the server's pushback": async () => {
      const started = Date.now();
      await likeness.listSubjectModels({ baseModel: "pushback-300" });
      equal(attempts.get("pushback-300"), 2, "attempts");
      check(Date.now() - started >= 280, `retried after ${Date.now() - started} ms, before the 300 ms pushback`);
    },
    "negative pushback: no retry, details surfaced": async () => {
      const error = await rejection(likeness.listSubjectModels({ baseModel: "pushback-negative" }));
      equal(attempts.get("pushback-negative"), 1, "attempts");
      equal([error.code, error.codeName, error.details], [8, "RESOURCE_EXHAUSTED", "the queue is full"], "status");
      equal(error.retryAfterSeconds, 2.5, "retryAfterSeconds");
      equal(error.quotaViolations.map((v) => v.subject), ["max_active_jobs"], "quota violations");
      equal(error.requestId, "req-fake", "requestId");
      check(error.message.includes("req-fake"), `message names the request id: ${error.message}`);
      equal(error.field, undefined, "field");
    },
    "UNAVAILABLE is retried by the service config": async () => {
      await likeness.listSubjectModels({ baseModel: "unavailable-once" });
      equal(attempts.get("unavailable-once"), 2, "attempts");
    },
    "retries off by channel option": async () => {
      const noRetries = createClients(addressA, { channelOptions: { "grpc.enable_retries": 0 } });
      try {
        attempts.delete("unavailable-once");
        const error = await rejection(noRetries.listSubjectModels({ baseModel: "unavailable-once" }));
        equal([error.code, attempts.get("unavailable-once")], [14, 1], "code and attempts");
      } finally {
        noRetries.close();
      }
    },
    "INVALID_ARGUMENT names the field": async () => {
      const error = await rejection(likeness.listSubjectModels({ baseModel: "bad-request" }));
      equal([error.code, error.field, attempts.get("bad-request")], [3, "base_model", 1], "code, field, attempts");
      equal(error.fieldViolations, [{ field: "base_model", description: "no such model" }], "violations");
      equal(error.retryAfterSeconds, undefined, "retryAfterSeconds");
    },
    "per-service addresses": async () => {
      const split = createClients({ trainerAddress: addressA, inferenceAddress: addressB, galleryAddress: addressB });
      try {
        equal(split.endpoints, { trainer: addressA, inference: addressB, gallery: addressB }, "endpoints");
        const templates = await split.listTemplates();
        equal(templates.map((t) => t.templateId), ["from-b"], "gallery answered by B");
        await split.waitForReady(Date.now() + 5_000);
        const onA = await likeness.listSubjectModels({ baseModel: "which" });
        const onB = await split.listSubjectModels({ baseModel: "which" });
        equal([onA.length, onB.length, attempts.get("which")], [1, 1, 2], "both answered");
        // Only A serves DownloadSubjectModel: the split client must not reach it.
        const error = await rejection(split.downloadSubjectModel("good", path.join(scratch, "split")));
        equal(error.code, grpc.status.UNIMPLEMENTED, "inference at B");
      } finally {
        split.close();
      }
      const shared = createClients({ address: addressB });
      try {
        equal(shared.endpoints, { trainer: addressB, inference: addressB, gallery: addressB }, "one address");
      } finally {
        shared.close();
      }
    },
    "download writes files and checks them": async () => {
      const folder = path.join(scratch, "good");
      const files = await likeness.downloadSubjectModel("good", folder);
      equal(files.map((f) => f.path), GOOD_FILES.map((f) => f.path), "paths");
      for (const [at, file] of files.entries()) {
        const data = await fsp.readFile(path.join(folder, GOOD_FILES[at].path));
        check(data.equals(GOOD_FILES[at].data), `${file.path} has the bytes sent`);
        equal(file.sha256, createHash("sha256").update(data).digest("hex"), `${file.path} sha256`);
        equal(file.localPath, path.join(await fsp.realpath(folder), GOOD_FILES[at].path), "localPath");
      }
      const leftovers = (await fsp.readdir(folder, { recursive: true })).filter((name) => String(name).endsWith(".part"));
      equal(leftovers, [], "temporary files");
    },
    "download refuses paths outside the folder": async () => {
      const outside = path.join(scratch, "outside");
      await fsp.mkdir(outside);
      for (const modelId of ["escape-dotdot", "escape-nested", "escape-absolute", "escape-symlink"]) {
        const folder = path.join(scratch, modelId, "model");
        await fsp.mkdir(folder, { recursive: true });
        await fsp.symlink(outside, path.join(folder, "link"));
        const error = await rejection(likeness.downloadSubjectModel(modelId, folder));
        equal(error.code, grpc.status.PERMISSION_DENIED, `${modelId} code (${error.message})`);
        equal((await fsp.readdir(folder)).sort(), ["link"], `${modelId}: nothing written in the folder`);
        equal(await fsp.readdir(path.dirname(folder)), ["model"], `${modelId}: nothing written next to it`);
      }
      equal(await fsp.readdir(outside), [], "nothing written through the link");
      await fsp.access(path.join(os.tmpdir(), "likeness-evil.txt")).then(
        () => Promise.reject(new Error("an absolute path was written")),
        () => undefined,
      );
    },
    "download refuses a file whose checksum or size is wrong": async () => {
      for (const modelId of ["bad-sha", "short"]) {
        const folder = path.join(scratch, modelId);
        const error = await rejection(likeness.downloadSubjectModel(modelId, folder));
        equal(error.code, grpc.status.DATA_LOSS, `${modelId} code (${error.message})`);
        const names = await fsp.readdir(folder);
        equal(names, modelId === "bad-sha" ? ["manifest.json"] : [], `${modelId}: only checked files remain`);
      }
      const error = await rejection(likeness.downloadSubjectModel("no-such-model", path.join(scratch, "missing")));
      equal(error.code, grpc.status.NOT_FOUND, "missing model");
    },
    "createTrainingJob passes the webhook through and sets an idempotency key": async () => {
      const photo = path.join(scratch, "inline.png");
      await fsp.writeFile(photo, Buffer.alloc(300, 1));
      const { job } = await likeness.createTrainingJob({
        spec: { baseModel: "sd15", classNoun: "dog" },
        webhook: { url: "https://hooks.example.com/likeness", secret: "s3cret-of-16-chars", sendProgress: true, progressIntervalSeconds: 60 },
        photos: [photo, { fileName: "b.jpg", data: Buffer.alloc(5), caption: "ohwx dog" }],
      });
      equal(job?.webhook, { url: "https://hooks.example.com/likeness", secret: "", sendProgress: true, progressIntervalSeconds: 60 }, "webhook");
      equal(job?.error, "secret sent; inline.png:300:,b.jpg:5:ohwx dog", "secret and inline photos");
      check(/^[0-9a-f]{32}$/.test(job?.idempotencyKey ?? ""), `generated key ${job?.idempotencyKey}`);
      const second = await likeness.createTrainingJob({ spec: { baseModel: "sd15" } });
      check(second.job?.idempotencyKey !== job?.idempotencyKey, "a fresh key per job");
      const given = await likeness.createTrainingJob({ spec: { baseModel: "sd15" }, idempotencyKey: "mine" });
      equal(given.job?.idempotencyKey, "mine", "a given key is kept");
    },
    "upload refuses repeated names and oversized chunks before calling": async () => {
      const duplicate = await likeness.prepareDataset(["a/me.jpg", "b/me.jpg"]).then(
        () => "no error",
        (error: Error) => error.message,
      );
      check(duplicate.includes("me.jpg"), `repeated names: ${duplicate}`);
      const oversized = await likeness.prepareDataset([Buffer.from("x")], {}, { chunkBytes: 2 * 1024 * 1024 }).then(
        () => "no error",
        (error: Error) => error.message,
      );
      check(oversized.includes("chunkBytes"), `oversized chunks: ${oversized}`);
    },
    "webhook signatures": async () => {
      const vectors = JSON.parse(flag("--webhook")) as { secret: string; id: string; timestamp: number; body: string; signature: string }[];
      equal(vectors.map((v) => v.secret.startsWith("whsec_")), [false, true], "a plain and a whsec_ secret");
      for (const vector of vectors) {
        const now = vector.timestamp * 1000;
        const headers = { "Webhook-Id": vector.id, "webhook-timestamp": String(vector.timestamp), "webhook-signature": vector.signature };
        equal(signWebhook(vector.secret, vector.id, vector.timestamp, vector.body), vector.signature, "signature");
        check(verifyWebhookSignature(vector.secret, headers, vector.body, { now }), "genuine (string body)");
        check(verifyWebhookSignature(vector.secret, headers, Buffer.from(vector.body), { now }), "genuine (Buffer body)");
        const fetchHeaders = { get: (name: string) => (headers as Record<string, string>)[name === "webhook-id" ? "Webhook-Id" : name] ?? null };
        check(verifyWebhookSignature(vector.secret, fetchHeaders, vector.body, { now }), "genuine (Headers)");
        const rotated = { ...headers, "webhook-signature": `v1,${Buffer.alloc(32).toString("base64")} ${vector.signature}` };
        check(verifyWebhookSignature(vector.secret, rotated, vector.body, { now }), "one of several signatures");
        check(!verifyWebhookSignature(vector.secret, headers, vector.body + " ", { now }), "tampered body");
        check(!verifyWebhookSignature(vector.secret + "x", headers, vector.body, { now }), "wrong secret");
        check(!verifyWebhookSignature(vector.secret, { ...headers, "Webhook-Id": "other" }, vector.body, { now }), "other id");
        check(!verifyWebhookSignature(vector.secret, headers, vector.body, { now: now + 301_000 }), "stale");
        check(verifyWebhookSignature(vector.secret, headers, vector.body, { now: now + 301_000, toleranceSeconds: 600 }), "tolerance");
        check(!verifyWebhookSignature(vector.secret, { "webhook-id": vector.id }, vector.body, { now }), "missing headers");
        check(!verifyWebhookSignature(vector.secret, { ...headers, "webhook-signature": "v2,abc" }, vector.body, { now }), "unknown version");
      }
      const [plain, whsec] = vectors;
      check(verifyWebhookSignature(webhookSigningKey(whsec.secret), { "webhook-id": whsec.id, "webhook-timestamp": String(whsec.timestamp), "webhook-signature": whsec.signature }, whsec.body, { now: whsec.timestamp * 1000 }), "the key as bytes");
      check(!verifyWebhookSignature("whsec_not base64!", { "webhook-id": plain.id, "webhook-timestamp": String(plain.timestamp), "webhook-signature": plain.signature }, plain.body, { now: plain.timestamp * 1000 }), "a malformed whsec_ secret");
      const thrown = (() => { try { signWebhook("whsec_abc", "id", 1, "body"); return "no error"; } catch (error) { return (error as Error).message; } })();
      check(thrown.includes("base64"), `signing with a malformed whsec_ secret: ${thrown}`);
    },
  };
  const passed: string[] = [];
  const failed: { name: string; error: string }[] = [];
  try {
    for (const [name, run] of Object.entries(checks)) {
      try {
        await run();
        passed.push(name);
      } catch (error) {
        failed.push({ name, error: (error as Error)?.stack ?? String(error) });
      }
    }
  } finally {
    likeness.close();
    serverA.forceShutdown();
    serverB.forceShutdown();
    await fsp.rm(scratch, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify({ passed, failed }) + "\n");
  process.exit(failed.length > 0 ? 1 : 0);
}

main().catch((error) => {
  process.stderr.write(`units failed: ${error?.stack ?? error}\n`);
  process.exit(1);
});
