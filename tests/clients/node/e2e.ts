// End-to-end driver for the TypeScript SDK against the scripted services (tests/clients/scripted_services.py):
// calls a running server and prints what it saw as JSON for tests/clients/test_typescript_client.py to check.
// Compiled together with the SDK sources.
//
//   node e2e.js ADDRESS [--ca CA_FILE] [--key API_KEY]          the whole scenario (plaintext without --ca)
//   node e2e.js ADDRESS --probe                                 one SearchPrompts call configured only by
//                                                               $LIKENESS_TLS_CA_FILE / $LIKENESS_API_KEY;
//                                                               prints {"code": <status code, 0 on success>}
import { createHash } from "crypto";
import { mkdtempSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";

import * as grpc from "@grpc/grpc-js";

import { createClients, galleryv1, LikenessError, typev1, unary } from "./index";

function flag(name: string): string {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : "";
}

async function probe(address: string): Promise<void> {
  const likeness = createClients(address); // TLS and key from the environment only
  try {
    const code = await likeness
      .searchPrompts({ query: "probe" }, { deadline: Date.now() + 10_000 })
      .then(() => 0)
      .catch((error: grpc.ServiceError) => error.code);
    process.stdout.write(JSON.stringify({ code }) + "\n");
  } finally {
    likeness.close();
  }
}

async function main(): Promise<void> {
  const address = process.argv[2];
  if (process.argv.includes("--probe")) {
    return probe(address);
  }
  const likeness = createClients(address, { reconnectBackoffMs: 10, tlsCaFile: flag("--ca"), apiKey: flag("--key") });
  try {
    await likeness.waitForReady(Date.now() + 10_000);
    const health = {
      server: await likeness.checkHealth(),
      gallery: await likeness.checkHealth("likeness.gallery.v1.GalleryService"),
      unknown: await likeness.checkHealth("no.such.Service").catch((error: grpc.ServiceError) => error.code),
    };

    const templates = await likeness.listTemplates();
    const recorded = await unary(
      likeness.gallery,
      likeness.gallery.recordPrompt,
      galleryv1.RecordPromptRequest.fromPartial({
        prompt: "an oil painting of {subject} in a lighthouse",
        parameters: { numInferenceSteps: 25 },
        tags: ["node-test"],
      }),
    );
    const search = await likeness.searchPrompts({ query: "oil painting lighthouse", tags: ["node-test"] });

    const events: string[] = [];
    const images: { index: number; seed: string; format: number; sha256: string }[] = [];
    for await (const event of likeness.generateImages({
      prompt: "a photo of {subject} in the snow",
      numImages: 2,
      parameters: { numInferenceSteps: 2 },
      outputFormat: typev1.ImageFormat.IMAGE_FORMAT_JPEG,
    })) {
      events.push(event.type);
      if (event.type === "image") {
        const { index, seed, format, data } = event.image;
        images.push({ index, seed: seed.toString(), format, sha256: createHash("sha256").update(data).digest("hex") });
      }
    }

    // Leaving the loop early must cancel the call quietly (no unhandled 'error' event).
    let firstEvent = "";
    for await (const event of likeness.generateImages({ prompt: "early exit", numImages: 4 })) {
      firstEvent = event.type;
      break;
    }

    const failure = await likeness
      .generate({ prompt: "fail midway", numImages: 2 })
      .then(() => "no error")
      .catch((error: LikenessError) => ({ code: error.code, details: error.details, requestId: error.requestId }));

    // Uploads: bytes of 2.5 MiB (three chunks), a file read as it is sent, an empty photo, unnamed bytes.
    const scratch = mkdtempSync(join(tmpdir(), "likeness-e2e-"));
    const onDisk = join(scratch, "disk.png");
    writeFileSync(onDisk, Buffer.alloc(1024 * 1024 + 3, 9));
    let upload: Record<string, unknown> = {};
    try {
      // A photo that cannot be read abandons the upload (the call is cancelled) and rejects with the read error.
      const missingFile = await likeness
        .prepareDataset([Buffer.from("first"), join(scratch, "does-not-exist.jpg")])
        .then(() => "no error", (error: NodeJS.ErrnoException) => [error.code, error instanceof LikenessError]);
      const big = Buffer.alloc(2.5 * 1024 * 1024, 1);
      const prepared = await likeness.prepareDataset(
        [{ fileName: "big.jpg", data: big, caption: "a caption" }, onDisk, { fileName: "empty.jpg", data: Buffer.alloc(0) }, Buffer.from("raw")],
        { displayName: "node upload" },
      );
      upload = {
        datasetId: prepared.dataset?.datasetId,
        displayName: prepared.dataset?.displayName,
        reports: prepared.dataset?.reports.map((r) => [r.fileName, r.kept]),
        missingFile,
      };
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }

    // CreateTrainingJob: the scripted trainer answers "flaky-*" keys UNAVAILABLE once; gRPC's retry (the service
    // config) sends the same request, key included, again.
    const spec = { baseModel: "tiny-sd15", classNoun: "dog" };
    const flaky = await likeness.createTrainingJob({ spec, idempotencyKey: "flaky-node" });
    const again = await likeness.createTrainingJob({ spec, idempotencyKey: "flaky-node" });
    const generatedKey = (await likeness.createTrainingJob({ spec })).job?.idempotencyKey ?? "";
    const create = {
      jobId: flaky.job?.jobId,
      existing: [flaky.existing, again.existing],
      sameJob: again.job?.jobId === flaky.job?.jobId,
      generatedKey,
    };

    const sequences: string[] = [];
    let succeededModel = "";
    for await (const event of likeness.watchTrainingJob("job-node")) {
      sequences.push(event.sequence.toString());
      if (event.event?.$case === "succeeded") {
        succeededModel = event.event.value.subjectModel?.modelId ?? "";
      }
    }
    const missing = await (async () => {
      try {
        for await (const _ of likeness.watchTrainingJob("missing")) {
          return "unexpected event";
        }
        return "no error";
      } catch (error) {
        return [(error as grpc.ServiceError).code, error instanceof LikenessError];
      }
    })();

    const report = {
      health,
      templateCount: templates.length,
      templatesHavePlaceholder: templates.every((t) => t.template.includes("{subject}")),
      recordedId: recorded.prompt?.promptId,
      topHitId: search.results[0]?.prompt?.promptId,
      topHitSteps: search.results[0]?.prompt?.parameters?.numInferenceSteps,
      events,
      images,
      firstEvent,
      failure,
      sequences,
      succeededModel,
      missing,
      upload,
      create,
    };
    process.stdout.write(JSON.stringify(report) + "\n");
  } finally {
    likeness.close();
  }
}

main().catch((error) => {
  process.stderr.write(`e2e failed: ${error?.stack ?? error}\n`);
  process.exit(1);
});
