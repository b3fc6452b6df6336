import type { ImageChunk } from "./gen/likeness/inference/v1/inference_service";
import { ImageFormat } from "./gen/likeness/type/v1/types";

/** One whole generated image, reassembled from its chunks. */
export interface GeneratedImage {
  /** Index of the image in the request, from 0. */
  index: number;
  /** Seed that reproduces this image (int64, hence bigint). */
  seed: bigint;
  /** Encoding of `data`. */
  format: ImageFormat;
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** The encoded image (PNG, JPEG or WebP). */
  data: Buffer;
}

/** File extension for an image format, for example "png". */
export function imageExtension(format: ImageFormat): string {
  switch (format) {
    case ImageFormat.IMAGE_FORMAT_JPEG:
      return "jpg";
    case ImageFormat.IMAGE_FORMAT_WEBP:
      return "webp";
    default:
      return "png";
  }
}

/**
 * Joins the chunks of a GenerateImages stream into whole images.
 *
 * Chunks of different images may interleave; chunks of one image arrive in order (the server guarantees it).
 * A gap or a duplicate means a broken stream, so it throws rather than return a corrupt image.
 */
export class ImageAssembler {
  private readonly parts = new Map<number, Buffer[]>();
  private readonly completed = new Set<number>();

  /** Takes the next chunk; returns the whole image when this was its last chunk, else undefined. */
  add(chunk: ImageChunk): GeneratedImage | undefined {
    const index = chunk.imageIndex;
    if (this.completed.has(index)) {
      throw new Error(`stream sent chunk ${chunk.chunkIndex} of image ${index} after its last chunk`);
    }
    let parts = this.parts.get(index);
    if (parts === undefined) {
      parts = [];
      this.parts.set(index, parts);
    }
    if (chunk.chunkIndex !== parts.length) {
      throw new Error(`stream sent chunk ${chunk.chunkIndex} of image ${index}, expected chunk ${parts.length}`);
    }
    parts.push(Buffer.from(chunk.data));
    if (!chunk.last) {
      return undefined;
    }
    this.parts.delete(index);
    this.completed.add(index);
    return {
      index,
      seed: chunk.seed,
      format: chunk.format,
      width: chunk.width,
      height: chunk.height,
      data: Buffer.concat(parts),
    };
  }

  /** Throws when the stream ended with images still incomplete. */
  finish(): void {
    if (this.parts.size > 0) {
      const pending = [...this.parts.keys()].sort((a, b) => a - b);
      throw new Error(`stream ended before images ${pending.join(", ")} were complete`);
    }
  }
}
