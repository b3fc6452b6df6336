"""A published subject model's files, for download: which files there are, what each one is, and their bytes in
chunks. Read from the model's materialised folder, so object storage is fetched once into the replica's disk cache
(the same copy generation uses, and the one erasure removes)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from likeness.storage.base import Storage
from likeness.storage.layout import KOHYA_WEIGHTS_NAME, MANIFEST_NAME, SAMPLES_FOLDER, model_prefix

WEIGHTS = "weights"
KOHYA_LORA = "kohya_lora"
MANIFEST = "manifest"
SAMPLE_IMAGE = "sample_image"
#: Every kind of file a subject model has.
KINDS = (WEIGHTS, KOHYA_LORA, MANIFEST, SAMPLE_IMAGE)
#: Bytes per download message, below every message limit.
DOWNLOAD_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Artifact:
    """One file of a subject model."""

    path: str  # relative to the model's folder, with "/" separators
    kind: str
    size_bytes: int
    sha256: str
    local_path: Path


def kind_of(relative: str) -> str:
    """What a file of a model's folder is, by its place in the layout."""
    if relative == MANIFEST_NAME:
        return MANIFEST
    if relative == KOHYA_WEIGHTS_NAME:
        return KOHYA_LORA
    if relative.startswith(f"{SAMPLES_FOLDER}/"):
        return SAMPLE_IMAGE
    return WEIGHTS


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(DOWNLOAD_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def list_artifacts(storage: Storage, tenant: str, model_id: str, kinds: frozenset[str] = frozenset()) -> list[Artifact]:
    """The files of a published subject model of `tenant` (only `kinds` when given), manifest first, each with its
    size and SHA-256; NotFound when the model is not published for this tenant."""
    folder = storage.materialize(model_prefix(tenant, model_id))
    found = []
    for local in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = local.relative_to(folder).as_posix()
        kind = kind_of(relative)
        if kinds and kind not in kinds:
            continue
        found.append(Artifact(relative, kind, local.stat().st_size, _sha256(local), local))
    found.sort(key=lambda artifact: (artifact.kind != MANIFEST, artifact.path))
    return found


def read_chunks(artifact: Artifact) -> Iterator[bytes]:
    """The file's bytes in chunks of at most DOWNLOAD_CHUNK_BYTES (one empty chunk for an empty file)."""
    with open(artifact.local_path, "rb") as handle:
        sent = False
        while block := handle.read(DOWNLOAD_CHUNK_BYTES):
            sent = True
            yield block
        if not sent:
            yield b""
