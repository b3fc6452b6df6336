// End-to-end driver for the TypeScript SDK against real services (`likeness serve all` with the toy base model,
// or a deployment's entry address): every helper once, on a real training job. Prints what it saw as JSON on its
// last line for tests/clients/test_typescript_real_server.py to check. Compiled together with the SDK sources.
//
//   node real_e2e.js --photos DIR --out DIR [--address ADDR | --trainer ADDR --inference ADDR --gallery ADDR]
//                    [--quota-active-jobs 1] [--webhooks]
//
// With --quota-active-jobs 1 (the server's setting) it checks that a second active job is refused with RetryInfo.
// With --webhooks (a server started with --webhook-allow-cidrs 127.0.0.1/32) the trained job has a webhook to a
// receiver in this process, which checks every POST with verifyWebhookSignature.
import { randomBytes } from "crypto";
import { promises as fsp, readdirSync, readFileSync } from "fs";
import * as http from "http";
import type { AddressInfo } from "net";
import * as path from "path";

import { createClients, LikenessError, trainerv1, verifyWebhookSignature } from "./index";
import type { ClientOptions, LikenessClients } from "./index";

function flag(name: string): string {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : "";
}

function describe(error: unknown): { code: number; codeName: string; field?: string; retryAfterSeconds?: number; quota?: string; isLikenessError: boolean; message: string } {
  if (!(error instanceof LikenessError)) {
    return { code: -1, codeName: "NOT_A_LIKENESS_ERROR", isLikenessError: false, message: String((error as Error)?.stack ?? error) };
  }
  return {
    code: error.code,
    codeName: error.codeName,
    field: error.field,
    retryAfterSeconds: error.retryAfterSeconds,
    quota: error.quotaViolations[0]?.subject,
    isLikenessError: true,
    message: error.message,
  };
}

async function failure(promise: Promise<unknown>): Promise<ReturnType<typeof describe> | "no error"> {
  return promise.then(
    () => "no error" as const,
    (error: unknown) => describe(error),
  );
}

async function watchAll(likeness: LikenessClients, jobId: string, after = 0n): Promise<trainerv1.WatchTrainingJobResponse[]> {
  const events: trainerv1.WatchTrainingJobResponse[] = [];
  for await (const event of likeness.watchTrainingJob(jobId, after)) events.push(event);
  return events;
}

/** A loopback HTTP server that records webhook POSTs and whether each one's signature verifies. */
async function webhookReceiver(secret: string): Promise<{ url: string; posts: { verified: boolean; body: Record<string, unknown> }[]; close(): void }> {
  const posts: { verified: boolean; body: Record<string, unknown> }[] = [];
  const server = http.createServer((request, response) => {
    const parts: Buffer[] = [];
    request.on("data", (part: Buffer) => parts.push(part));
    request.on("end", () => {
      const raw = Buffer.concat(parts);
      const verified = verifyWebhookSignature(secret, request.headers, raw);
      posts.push({ verified, body: JSON.parse(raw.toString("utf8")) as Record<string, unknown> });
      response.statusCode = verified ? 204 : 401;
      response.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/hooks/likeness`, posts, close: () => server.close() };
}

async function until(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
}

async function main(): Promise<void> {
  const addresses: ClientOptions = flag("--trainer")
    ? { trainerAddress: flag("--trainer"), inferenceAddress: flag("--inference"), galleryAddress: flag("--gallery") }
    : { address: flag("--address") };
  const likeness = createClients({ ...addresses, reconnectBackoffMs: 50 });
  const out = flag("--out");
  const report: Record<string, unknown> = { endpoints: likeness.endpoints };
  const timings: Record<string, number> = {};
  let phaseStart = Date.now();
  const phase = (name: string): void => {
    timings[name] = Date.now() - phaseStart;
    phaseStart = Date.now();
  };
  report.timingsMs = timings;
  try {
    await likeness.waitUntilServing(120_000);
    const health = (service = ""): Promise<string> =>
      likeness.checkHealth(service).catch((error: unknown) => describe(error).codeName);
    report.health = {
      server: await health(),
      trainer: await health("likeness.trainer.v1.TrainerService"),
      inference: await health("likeness.inference.v1.InferenceService"),
      gallery: await health("likeness.gallery.v1.GalleryService"),
    };

    phase("health");
    // Upload from Buffers (the README example uploads from paths).
    const folder = flag("--photos");
    const photos = readdirSync(folder)
      .sort()
      .map((name) => ({ fileName: name, data: readFileSync(path.join(folder, name)) }));
    const prepared = await likeness.prepareDataset(photos, {
      baseModel: "toy-sd15",
      subjectType: trainerv1.SubjectType.SUBJECT_TYPE_OBJECT,
      displayName: "ts real e2e",
    });
    const dataset = prepared.dataset!;
    report.dataset = { imageCount: dataset.imageCount, photoCount: photos.length, kept: dataset.reports.filter((r) => r.kept).length };
    report.getDataset = (await likeness.getDataset(dataset.datasetId))?.datasetId === dataset.datasetId;

    phase("upload");
    // Errors carry the field to fix: from an upload the server refuses while it is still being sent, and from a call.
    report.invalidUpload = await failure(likeness.prepareDataset(photos, { resolution: -1 }));
    report.invalid = await failure(
      likeness.createTrainingJob({
        spec: { baseModel: "toy-sd15", classNoun: "toy", datasetId: dataset.datasetId, hyperparameters: { learningRate: 5 } },
      }),
    );

    phase("invalid");
    // Train, with an idempotency key given once and a second create that returns the same job.
    const spec = {
      baseModel: "toy-sd15",
      classNoun: "toy",
      datasetId: dataset.datasetId,
      hyperparameters: { maxTrainSteps: 3, resolution: 32, seed: 2 },
      displayName: "ts real e2e",
    };
    const key = `ts-real-${Date.now()}`;
    const secret = `whsec_${randomBytes(24).toString("base64")}`; // the Standard Webhooks form: keyed decoded
    const receiver = process.argv.includes("--webhooks") ? await webhookReceiver(secret) : undefined;
    const webhook = receiver && { url: receiver.url, secret, sendProgress: true, progressIntervalSeconds: 1 };
    const request = { spec, idempotencyKey: key, webhook };
    const created = await likeness.createTrainingJob(request);
    const job = created.job!;
    const events = await watchAll(likeness, job.jobId);
    if (receiver !== undefined) {
      // The succeeded state change is the last POST; deliveries run on their own thread, shortly after.
      await until(() => receiver.posts.some((post) => post.body.state === "SUCCEEDED"), 20_000);
      receiver.close();
      const deliveries = (await likeness.getTrainingJob(job.jobId)).webhookDeliveries;
      report.webhook = {
        posts: receiver.posts.length,
        verified: receiver.posts.every((post) => post.verified),
        types: [...new Set(receiver.posts.map((post) => post.body.type))].sort(),
        states: receiver.posts.map((post) => post.body.state),
        jobId: receiver.posts.every((post) => post.body.job_id === job.jobId),
        shown: created.job?.webhook && { ...created.job.webhook },
        deliveries: deliveries.map((d) => trainerv1.webhookDeliveryStateToJSON(d.state)),
      };
    }
    const again = await likeness.createTrainingJob(request); // the same request, so the same job
    const resumed = await watchAll(likeness, job.jobId, 3n);
    const finished = await likeness.getTrainingJob(job.jobId);
    const listed = await likeness.listTrainingJobs({ pageSize: 100 });
    report.training = {
      state: trainerv1.jobStateToJSON(finished.state),
      key: finished.idempotencyKey === key,
      existing: [created.existing, again.existing, again.job?.jobId === job.jobId],
      sequences: events.map((e) => Number(e.sequence)),
      kinds: events.map((e) => e.event?.$case ?? "unknown"),
      resumedFrom4: resumed.map((e) => Number(e.sequence)),
      listed: listed.jobs.some((j) => j.jobId === job.jobId),
    };
    const modelId = finished.subjectModelId;

    phase("train");
    // A long job to cancel; while it is active, the quota of one active job refuses another (RetryInfo, QuotaFailure).
    const long = (await likeness.createTrainingJob({ spec: { ...spec, hyperparameters: { maxTrainSteps: 5_000, resolution: 32 } } })).job!;
    if (flag("--quota-active-jobs") === "1") {
      // Without gRPC's retries, so the first refusal surfaces whatever pushback the server asks for.
      const noRetries = createClients({ ...addresses, channelOptions: { "grpc.enable_retries": 0 } });
      try {
        report.quota = await failure(noRetries.createTrainingJob({ spec }));
      } finally {
        noRetries.close();
      }
    }
    const cancelled = await likeness.cancelTrainingJob(long.jobId);
    await watchAll(likeness, long.jobId); // until it has ended, so the next job is admitted
    report.cancel = {
      generatedKey: long.idempotencyKey.length,
      returned: trainerv1.jobStateToJSON(cancelled.state),
      final: trainerv1.jobStateToJSON((await likeness.getTrainingJob(long.jobId)).state),
    };

    phase("cancel");
    // Generate.
    const result = await likeness.generate({
      prompt: "a photo of {subject} in the snow",
      subjectModelId: modelId,
      numImages: 1,
      parameters: { numInferenceSteps: 4, width: 32, height: 32, seed: 3n },
    });
    report.generate = {
      images: result.images.map((image) => ({ index: image.index, seed: image.seed.toString(), png: image.data.subarray(1, 4).toString() })),
      summary: result.summary?.numImages,
    };

    phase("generate");
    // Subject models.
    const models = await likeness.listSubjectModels({ baseModel: "toy-sd15" });
    const model = await likeness.getSubjectModel(modelId);
    report.models = { listed: models.some((m) => m.model?.modelId === modelId), got: model.model?.modelId === modelId };

    phase("models");
    // Gallery.
    const recorded = await likeness.recordPrompt({ prompt: "a watercolor of {subject} by a lighthouse", tags: ["ts-real"], parameters: { numInferenceSteps: 12 } });
    const promptId = recorded.prompt!.promptId;
    const got = await likeness.getPrompt(promptId);
    const search = await likeness.searchPrompts({ query: "watercolor lighthouse", tags: ["ts-real"] });
    const all: string[] = [];
    for await (const hit of likeness.iterPrompts({ tags: ["ts-real"], pageSize: 1 })) all.push(hit.prompt?.promptId ?? "");
    const templates = await likeness.listTemplates();
    report.gallery = {
      got: got.promptId === promptId && got.parameters?.numInferenceSteps === 12,
      found: search.results[0]?.prompt?.promptId === promptId,
      iterated: all,
      promptId,
      templates: templates.length,
      recordedAgain: (await likeness.recordPrompt({ prompt: "a watercolor of {subject} by a lighthouse", tags: ["ts-real"], parameters: { numInferenceSteps: 12 } })).existing,
    };

    phase("gallery");
    // Download, then delete.
    try {
      const files = await likeness.downloadSubjectModel(modelId, path.join(out, "model"));
      const onDisk = await Promise.all(files.map(async (f) => (await fsp.stat(f.localPath)).size));
      report.download = { files: files.map((f) => [f.path, Number(f.sizeBytes), f.sha256.length]), onDisk };
    } catch (error) {
      report.download = { error: describe(error) };
    }
    report.deleted = (await likeness.deleteSubjectModel(modelId)).modelId === modelId;
    report.afterDelete = await failure(likeness.getSubjectModel(modelId));
    phase("download");
  } catch (error) {
    report.unexpected = describe(error);
  } finally {
    likeness.close();
  }
  process.stdout.write(JSON.stringify(report) + "\n");
}

main().catch((error) => {
  process.stderr.write(`real e2e failed: ${error?.stack ?? error}\n`);
  process.exit(1);
});
