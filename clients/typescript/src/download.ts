// Writes a DownloadSubjectModel stream to a folder: for each file a header (`file`), then its bytes (`data`).
//
// The paths come from the server, so each is checked before anything is written: relative, without `..`, and
// landing inside the folder even after symbolic links inside it are followed. Each file is written to a
// temporary name next to its target and renamed only once its size and SHA-256 match the header, so a broken
// or tampered stream never leaves a truncated file under the real name.
import { createHash, randomBytes } from "crypto";
import type { Hash } from "crypto";
import { promises as fsp } from "fs";
import * as path from "path";

import * as grpc from "@grpc/grpc-js";

import { LikenessError } from "./errors";
import type { ArtifactFile, ArtifactKind, DownloadSubjectModelResponse } from "./gen/likeness/inference/v1/inference_service";

/** One file of a downloaded subject model, as written. */
export interface DownloadedFile {
  /** Path relative to the model's folder, as the server named it (`adapter/adapter_model.safetensors`). */
  path: string;
  /** Where it was written. */
  localPath: string;
  /** What the file is. */
  kind: ArtifactKind;
  /** Size in bytes. */
  sizeBytes: bigint;
  /** SHA-256 of the file, hex, checked against the server's. */
  sha256: string;
}

/** Thrown (as a LikenessError) for a stream that does not match its own headers: DATA_LOSS. */
function dataLoss(message: string): LikenessError {
  return new LikenessError(grpc.status.DATA_LOSS, message);
}

/** Thrown for a path that would land outside the folder: PERMISSION_DENIED, nothing written. */
function unsafePath(relative: string, why: string): LikenessError {
  return new LikenessError(grpc.status.PERMISSION_DENIED, `refusing to write ${JSON.stringify(relative)}: ${why}`);
}

function isInside(root: string, target: string): boolean {
  const relative = path.relative(root, target);
  return relative !== "" && !relative.startsWith("..") && !path.isAbsolute(relative);
}

/** The checked local path of `relative` under `root` (a real path); its parent folders are created. */
async function safeTarget(root: string, relative: string): Promise<string> {
  if (relative === "" || relative.includes("\0")) {
    throw unsafePath(relative, "empty or not a file name");
  }
  if (relative.startsWith("/") || relative.startsWith("\\") || /^[A-Za-z]:/.test(relative)) {
    throw unsafePath(relative, "an absolute path");
  }
  const parts = relative.split(/[\\/]/);
  if (parts.some((part) => part === ".." || part === "." || part === "")) {
    throw unsafePath(relative, "`..`, `.` or empty segments");
  }
  const target = path.resolve(root, ...parts);
  if (!isInside(root, target)) {
    throw unsafePath(relative, "outside the folder");
  }
  const parent = path.dirname(target);
  // Create the folders one by one, checking each one's real path, so a symbolic link inside the folder that
  // points elsewhere is refused before anything is created through it.
  let current = root;
  for (const part of path.relative(root, parent).split(path.sep).filter(Boolean)) {
    current = path.join(current, part);
    await fsp.mkdir(current).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "EEXIST") throw error;
    });
    const real = await fsp.realpath(current);
    if (!isInside(root, real)) {
      throw unsafePath(relative, "a folder on the way links outside the folder");
    }
  }
  return target;
}

/** The file being received: its header, a temporary file and the running hash. */
interface OpenFile {
  header: ArtifactFile;
  target: string;
  temporary: string;
  handle: fsp.FileHandle;
  hash: Hash;
  written: number;
}

/** Receives the messages of one download into `folder`; `finish` checks the last file. */
export class ModelDownloader {
  readonly files: DownloadedFile[] = [];
  private root = "";
  private current: OpenFile | undefined;
  private readonly seen = new Set<string>();

  constructor(private readonly folder: string) {}

  /** Takes the next message of the stream. */
  async add(message: DownloadSubjectModelResponse): Promise<void> {
    const payload = message.payload;
    if (payload?.$case === "file") {
      await this.close();
      await this.open(payload.value);
    } else if (payload?.$case === "data") {
      const file = this.current;
      if (file === undefined) {
        throw dataLoss("the stream sent file bytes before any file header");
      }
      file.written += payload.value.length;
      if (BigInt(file.written) > file.header.sizeBytes) {
        throw dataLoss(`${file.header.path}: more bytes than the ${file.header.sizeBytes} its header announced`);
      }
      file.hash.update(payload.value);
      await file.handle.write(payload.value);
    }
    // Other payloads: added in a later API version; skipped, as compatible evolution allows.
  }

  /** Checks and renames the last file; call once the stream ended without error. */
  async finish(): Promise<DownloadedFile[]> {
    await this.close();
    return this.files;
  }

  /** Removes the file in progress after a failure (files already checked stay). */
  async abort(): Promise<void> {
    const file = this.current;
    this.current = undefined;
    if (file !== undefined) {
      await file.handle.close().catch(() => undefined);
      await fsp.rm(file.temporary, { force: true });
    }
  }

  private async open(header: ArtifactFile): Promise<void> {
    if (this.root === "") {
      await fsp.mkdir(this.folder, { recursive: true });
      this.root = await fsp.realpath(this.folder);
    }
    if (this.seen.has(header.path)) {
      throw dataLoss(`the stream sent ${header.path} twice`);
    }
    this.seen.add(header.path);
    const target = await safeTarget(this.root, header.path);
    const temporary = path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString("hex")}.part`);
    const handle = await fsp.open(temporary, "wx", 0o644);
    this.current = { header, target, temporary, handle, hash: createHash("sha256"), written: 0 };
  }

  private async close(): Promise<void> {
    const file = this.current;
    if (file === undefined) return;
    await file.handle.close();
    const digest = file.hash.digest("hex");
    const { header } = file;
    if (BigInt(file.written) !== header.sizeBytes) {
      await this.abort();
      throw dataLoss(`${header.path}: received ${file.written} bytes, its header announced ${header.sizeBytes}`);
    }
    if (digest !== header.sha256.toLowerCase()) {
      await this.abort();
      throw dataLoss(`${header.path}: SHA-256 ${digest} does not match the server's ${header.sha256}`);
    }
    await fsp.rename(file.temporary, file.target);
    this.current = undefined;
    this.files.push({
      path: header.path,
      localPath: file.target,
      kind: header.kind,
      sizeBytes: header.sizeBytes,
      sha256: digest,
    });
  }
}
