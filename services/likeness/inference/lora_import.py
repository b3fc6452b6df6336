"""Importing a LoRA made with another tool as a subject model (or style) of a tenant, without gRPC.

The upload is spooled to a temporary file (at most `MAX_LORA_BYTES`, and exactly the size the header announced),
read and validated against the base model with `read_lora_file` (kohya / A1111 / civitai or diffusers / PEFT
layouts, safetensors only), and published once in the canonical layout the serving side reads: a
`pytorch_lora_weights.safetensors` with diffusers / PEFT keys whose scale is folded into the up-projections, so the
published file holds plain `up @ down` deltas that read back as exactly the layers published (scale 1.0) whatever
alpha, rank pattern or rsLoRA setting the original used. The folder is published like a trained model's, with a
manifest marking it `origin: imported`.

An imported model is also recorded in the control plane's `subject_models` table (when the server has one), in
the transaction that checks the tenant's `max_subject_models` quota, so imported and trained models count alike.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa
import torch
from safetensors.torch import save_file

from likeness.controlplane.database import Database, db_now
from likeness.controlplane.schema import subject_models
from likeness.errors import InvalidArgument
from likeness.inference.lora_layers import LoraLayer, LoraLayers, read_lora_file
from likeness.inference.subject_files import LORA_WEIGHTS_NAME
from likeness.storage.layout import MANIFEST_NAME, new_id
from likeness.storage.manifest import KINDS, SubjectModelManifest, utc_now_rfc3339

if TYPE_CHECKING:
    from collections.abc import Callable

    from likeness.identity.quotas import Quotas
    from likeness.inference.repository import ModelRepository

log = logging.getLogger(__name__)

#: The largest LoRA file accepted: real SDXL LoRAs are 10-900 MB.
MAX_LORA_BYTES = 1024**3
#: What the control-plane columns hold (subject_models.identifier / class_noun are VARCHAR(64)).
MAX_NAME_LENGTH = 64
_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


@dataclass(frozen=True)
class LoraImportRequest:
    """What an import is for (the ImportLora header): `kind` "subject" (identifier and class noun required) or
    "style"; `size_bytes` 0 when the client did not announce a size."""

    base_model: str
    kind: str = "subject"
    identifier: str = ""
    class_noun: str = ""
    file_name: str = ""
    size_bytes: int = 0

    def check(self, catalog_ids: list[str], *, limit: int = MAX_LORA_BYTES) -> None:
        """InvalidArgument naming the header field that is wrong, before any byte of the file is read."""
        if not self.base_model:
            raise InvalidArgument(
                f"must name the base model the LoRA was made for: {_listing(catalog_ids)}", field="header.base_model"
            )
        if self.base_model not in catalog_ids:
            raise InvalidArgument(
                f"unknown base model {self.base_model!r}; this server offers {_listing(catalog_ids)}",
                field="header.base_model",
            )
        if self.kind not in KINDS:
            raise InvalidArgument(f"must be one of {', '.join(KINDS)}, got {self.kind!r}", field="header.kind")
        if self.kind == "subject" and not self.identifier:
            raise InvalidArgument(
                "a subject needs the token it was trained with, e.g. 'ohwx' (or import it as a style)",
                field="header.identifier",
            )
        if self.identifier and (any(c.isspace() for c in self.identifier) or len(self.identifier) > MAX_NAME_LENGTH):
            raise InvalidArgument(
                f"must be one token without spaces, at most {MAX_NAME_LENGTH} characters", field="header.identifier"
            )
        if self.kind == "subject" and not self.class_noun.strip():
            raise InvalidArgument("a subject needs its class, e.g. 'person' or 'dog'", field="header.class_noun")
        if len(self.class_noun) > MAX_NAME_LENGTH:
            raise InvalidArgument(f"must be at most {MAX_NAME_LENGTH} characters", field="header.class_noun")
        if self.size_bytes < 0:
            raise InvalidArgument("must not be negative", field="header.size_bytes")
        if self.size_bytes > limit:
            raise InvalidArgument(
                f"the file is {self.size_bytes} bytes, more than the {_size_text(limit)} a LoRA may have",
                field="header.size_bytes",
            )
        if PurePath(self.file_name).suffix.lower() in _PICKLE_SUFFIXES:
            raise InvalidArgument(
                f"{self.file_name} is a pickled checkpoint, which can run arbitrary code when loaded; convert it to "
                "safetensors first (kohya's sd-scripts tools, or safetensors.torch.save_file)",
                field="header.file_name",
            )


def _listing(ids: list[str]) -> str:
    return ", ".join(ids) if ids else "no base models"


def _size_text(size: int) -> str:
    return f"{size / 1024**3:g} GiB" if size >= 1024**3 else f"{size / 1024**2:g} MiB"


class LoraUpload:
    """The uploaded file, spooled to a private temporary file; use as a context manager (the file goes at exit)."""

    def __init__(self, request: LoraImportRequest, *, limit: int = MAX_LORA_BYTES) -> None:
        self.request = request
        self.limit = limit
        self.received = 0
        self._folder = tempfile.TemporaryDirectory(prefix="likeness-lora-import-")
        self.path = Path(self._folder.name) / "upload.safetensors"
        self._file = self.path.open("wb")

    def write(self, data: bytes) -> None:
        """Append one chunk (blocking); InvalidArgument past the limit or the announced size."""
        self.received += len(data)
        if self.received > self.limit:
            raise InvalidArgument(f"the file is larger than the {_size_text(self.limit)} a LoRA may have", field="file")
        announced = self.request.size_bytes
        if announced and self.received > announced:
            raise InvalidArgument(
                f"more bytes arrived than the {announced} the header announced", field="header.size_bytes"
            )
        self._file.write(data)

    def finish(self) -> Path:
        """The complete file; InvalidArgument when nothing or less than the announced size arrived."""
        self._file.close()
        if self.received == 0:
            raise InvalidArgument("no file bytes followed the header; send the file in chunk messages", field="file")
        announced = self.request.size_bytes
        if announced and self.received != announced:
            raise InvalidArgument(
                f"the upload ended after {self.received} of the {announced} bytes the header announced",
                field="header.size_bytes",
            )
        return self.path

    def close(self) -> None:
        self._file.close()
        self._folder.cleanup()

    def __enter__(self) -> LoraUpload:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class ImportedLora:
    """The published model: its manifest, the layers as published, the original layout and the file size."""

    manifest: SubjectModelManifest
    layers: LoraLayers
    source_format: str
    size_bytes: int


class ModelRecords(Protocol):
    """Where published subject models are recorded and counted (the control plane)."""

    def add(self, manifest: SubjectModelManifest, size_bytes: int) -> None:
        """Record the model; ResourceExhausted when the tenant's subject-model quota is full."""

    def remove(self, tenant: str, model_id: str) -> None:
        """Forget a model whose publication failed."""


class ControlPlaneModels:
    """Imported models in the control plane's `subject_models` table, where the trainer records its own.

    `database` and `quotas` are called on first use (the database opens lazily, as for the gallery)."""

    def __init__(self, database: Callable[[], Database], quotas: Callable[[], Quotas] | None = None) -> None:
        self._database = database
        self._quotas = quotas

    def add(self, manifest: SubjectModelManifest, size_bytes: int) -> None:
        database = self._database()
        with database.transaction() as connection:
            # The trainer's lock: a job being queued and an import cannot both take the tenant's last slot.
            database.advisory_lock(connection, "create-job")
            if self._quotas is not None:
                self._quotas().check_new_model(connection, manifest.tenant)
            connection.execute(
                sa.insert(subject_models).values(
                    model_id=manifest.model_id,
                    tenant=manifest.tenant,
                    job_id="",  # no job made it; erasure follows no job or dataset from it
                    dataset_id="",
                    base_model=manifest.base_model,
                    identifier=manifest.identifier,
                    class_noun=manifest.class_noun,
                    method=manifest.method,
                    size_bytes=size_bytes,
                    create_time=db_now(),
                    manifest=manifest.to_dict(),
                )
            )

    def remove(self, tenant: str, model_id: str) -> None:
        with self._database().transaction() as connection:
            connection.execute(
                sa.delete(subject_models).where(
                    subject_models.c.tenant == tenant, subject_models.c.model_id == model_id
                )
            )


def fold_scales(layers: LoraLayers) -> LoraLayers:
    """The same deltas with each layer's scale multiplied into its up-projection (scale 1.0)."""
    folded = {
        key: LoraLayer(down=layer.down, up=(layer.up * layer.scale).contiguous(), scale=1.0)
        for key, layer in layers.layers.items()
    }
    return LoraLayers(layers=folded, source_format=layers.source_format)


def canonical_state_dict(layers: LoraLayers) -> dict[str, torch.Tensor]:
    """Diffusers / PEFT keys for `layers` with scale 1.0: `unet.<path>.lora_A.weight`, and for text encoders
    `<encoder>.<path>.lora_linear_layer.down.weight` (the one text-encoder layout diffusers reads whichever of the
    attention and MLP layers are adapted)."""
    state: dict[str, torch.Tensor] = {}
    for key, layer in layers.layers.items():
        if layer.scale != 1.0:
            raise ValueError(f"layer {key} has scale {layer.scale}; fold the scales first")
        component = key.split(".", 1)[0]
        if component == "unet":
            down, up = f"{key}.lora_A.weight", f"{key}.lora_B.weight"
        else:
            down, up = f"{key}.lora_linear_layer.down.weight", f"{key}.lora_linear_layer.up.weight"
        state[down] = layer.down.contiguous()
        state[up] = layer.up.contiguous()
    return state


def import_lora(
    repository: ModelRepository, tenant: str, upload: LoraUpload, *, records: ModelRecords | None = None
) -> ImportedLora:
    """Validate the uploaded LoRA against its base model and publish it as a model of `tenant` (blocking: may
    load the base model). InvalidArgument(field="file") for a file that is not a usable LoRA of that base."""
    request = upload.request
    request.check(repository.catalog.ids())
    path = upload.finish()
    base = repository.base(request.base_model)
    original = read_lora_file(path, base.pipeline, field="file")
    layers = fold_scales(original)
    model_id = new_id("model")
    with tempfile.TemporaryDirectory(prefix="likeness-model-") as staging_dir:
        staging = Path(staging_dir)
        save_file(canonical_state_dict(layers), str(staging / LORA_WEIGHTS_NAME), metadata={"format": "pt"})
        size_bytes = (staging / LORA_WEIGHTS_NAME).stat().st_size
        manifest = SubjectModelManifest(
            model_id=model_id,
            tenant=tenant,
            identifier=request.identifier,
            class_noun=request.class_noun.strip(),
            base_model=request.base_model,
            arch=base.arch,
            method="lora",
            training_config={
                "file_name": PurePath(request.file_name).name,
                "source_format": original.source_format,
                "layers": len(layers.layers),
            },
            metrics={},
            created_at=utc_now_rfc3339(),
            sample_images=[],
            weights=[LORA_WEIGHTS_NAME],
            lora_rank=layers.rank,
            kind=request.kind,
            origin="imported",
            source_format=original.source_format,
        )
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        if records is not None:
            records.add(manifest, size_bytes)
        try:
            repository.storage.publish_dir(staging, manifest.prefix)
        except BaseException:
            if records is not None:
                records.remove(tenant, model_id)
            raise
    log.info(
        "LoRA imported",
        extra={"model_id": model_id, "source_format": original.source_format, "layers": len(layers.layers)},
    )
    return ImportedLora(manifest, layers, original.source_format, size_bytes)
