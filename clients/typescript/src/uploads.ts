// Photos to upload: files read lazily in chunks, or bytes already in memory.
import { createReadStream, promises as fsp } from "fs";
import { basename } from "path";

import type { Photo, PhotoChunk } from "./gen/likeness/trainer/v1/trainer_service";

/** Photo bytes per PrepareDataset message, and the most the server takes in one (1 MiB). */
export const UPLOAD_CHUNK_BYTES = 1024 * 1024;

/**
 * A photo to upload: a file path, its bytes (a Buffer or Uint8Array, named `photo-000`, `photo-001`, ... by
 * position), or an object naming it, with the bytes or a path and an optional caption (which replaces the
 * instance prompt for this photo).
 */
export type PhotoSource =
  | string
  | Uint8Array
  | { fileName?: string; path?: string; data?: Uint8Array; caption?: string };

/** The file name a photo is uploaded (and reported) under. */
export function photoName(source: PhotoSource, position: number): string {
  const fallback = `photo-${String(position).padStart(3, "0")}`;
  if (typeof source === "string") return basename(source);
  if (source instanceof Uint8Array) return fallback;
  return source.fileName || (source.path ? basename(source.path) : fallback);
}

/** The names of `photos`; throws when two are the same (the server joins chunks by name). */
export function photoNames(photos: readonly PhotoSource[]): string[] {
  const names = photos.map(photoName);
  const repeated = [...new Set(names.filter((name, at) => names.indexOf(name) !== at))].sort();
  if (repeated.length > 0) {
    throw new TypeError(`photo file names must be unique; repeated: ${repeated.join(", ")}`);
  }
  return names;
}

function sourceBytes(source: PhotoSource): Uint8Array | undefined {
  if (typeof source === "string") return undefined;
  if (source instanceof Uint8Array) return source;
  if (source.data !== undefined) return source.data;
  if (source.path !== undefined) return undefined;
  throw new TypeError("a photo object needs `data` or `path`");
}

function sourcePath(source: PhotoSource): string {
  return typeof source === "string" ? source : (source as { path: string }).path;
}

/**
 * The chunks of one photo, at most `chunkBytes` each; a file is read as it is sent, never whole. An empty photo
 * still sends one (empty) chunk, so the server reports it instead of it vanishing.
 */
export async function* photoChunks(source: PhotoSource, name: string, chunkBytes: number): AsyncGenerator<PhotoChunk> {
  const caption = typeof source === "object" && !(source instanceof Uint8Array) ? (source.caption ?? "") : "";
  const data = sourceBytes(source);
  let sent = 0;
  if (data !== undefined) {
    for (let start = 0; start < data.length; start += chunkBytes) {
      const piece = Buffer.from(data.buffer, data.byteOffset + start, Math.min(chunkBytes, data.length - start));
      yield { fileName: name, data: piece, caption: sent++ === 0 ? caption : "" };
    }
  } else {
    const stream = createReadStream(sourcePath(source), { highWaterMark: chunkBytes });
    for await (const piece of stream as AsyncIterable<Buffer>) {
      yield { fileName: name, data: piece, caption: sent++ === 0 ? caption : "" };
    }
  }
  if (sent === 0) {
    yield { fileName: name, data: Buffer.alloc(0), caption };
  }
}

/** A photo as one inline message (CreateTrainingJob's `photos`), read whole. */
export async function inlinePhoto(source: PhotoSource, name: string): Promise<Photo> {
  const caption = typeof source === "object" && !(source instanceof Uint8Array) ? (source.caption ?? "") : "";
  const data = sourceBytes(source) ?? (await fsp.readFile(sourcePath(source)));
  return { fileName: name, data: Buffer.from(data.buffer, data.byteOffset, data.length), caption };
}
