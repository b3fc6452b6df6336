// End-to-end driver for the TypeScript SDK: calls a running Likeness server and prints what it saw as JSON for
// tests/clients/test_typescript_client.py to check. Compiled together with the SDK sources.
//
//   node e2e_driver.js ADDRESS [--ca CA_FILE] [--key API_KEY]   the whole scenario (plaintext without --ca)
//   node e2e_driver.js ADDRESS --probe                          one SearchPrompts call configured only by
//                                                               $LIKENESS_TLS_CA_FILE / $LIKENESS_API_KEY;
//                                                               prints {"code": <status code, 0 on success>}
import { createHash } from "crypto";

import * as grpc from "@grpc/grpc-js";

import { createClients, galleryv1, typev1, unary } from "./index";

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
      .catch((error: grpc.ServiceError) => ({ code: error.code, details: error.details }));

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
        return (error as grpc.ServiceError).code;
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
