"""Reading a published subject model's weights from its (materialised) folder, safetensors only.

A LoRA subject holds `pytorch_lora_weights.safetensors` in diffusers format (the trainer may add
`lora_kohya.safetensors` for other tools; it is not read here). A full fine-tune holds `unet/` and, when the trainer
also fine-tuned them, `text_encoder/` (and `text_encoder_2/` for SDXL), each a diffusers/transformers folder.
Problems raise FailedPrecondition with a reason naming the file, which the repository records for the subject.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel
from safetensors import SafetensorError

from likeness.errors import FailedPrecondition, InvalidArgument
from likeness.inference.lora_layers import LoraLayers, read_lora_file
from likeness.storage.base import Storage
from likeness.storage.manifest import SubjectModelManifest

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
TEXT_ENCODER_FOLDERS = ("text_encoder", "text_encoder_2")
# UNet config keys a full fine-tune must share with its base model to work with the base's VAE and encoders.
UNET_COMPATIBILITY_KEYS = ("in_channels", "out_channels", "cross_attention_dim", "addition_embed_type")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def published_size(manifest: SubjectModelManifest, folder: Path) -> int:
    """Total bytes of the subject's weight files in its materialised `folder` (SubjectModel.size_bytes)."""
    return sum((folder / name).stat().st_size for name in manifest.weights if (folder / name).is_file())


# (storage id, model prefix, created_at) -> size: a published model's files never change (a republish is a new
# created_at), so each is read at most once per process.
_stored_sizes: dict[tuple[int, str, str], int] = {}
_stored_sizes_lock = threading.Lock()


def stored_size(storage: Storage, manifest: SubjectModelManifest) -> int:
    """Total bytes of the subject's weight files in `storage`, for subjects not materialised here (blocking)."""
    key = (id(storage), manifest.prefix, manifest.created_at)
    with _stored_sizes_lock:
        size = _stored_sizes.get(key)
    if size is None:
        size = sum(len(data) for data in storage.read_many(manifest.weight_keys).values())
        with _stored_sizes_lock:
            _stored_sizes[key] = size
    return size


def read_lora(manifest: SubjectModelManifest, folder: Path, pipeline: DiffusionPipeline) -> LoraLayers:
    """The LoRA layers of a subject or style, on the CPU, checked against the base `pipeline`."""
    files = [name for name in manifest.weights if name.endswith(".safetensors")]
    if not files:
        raise FailedPrecondition(
            f"subject model {manifest.model_id!r} lists no .safetensors weights in its manifest ({manifest.weights})"
        )
    name = LORA_WEIGHTS_NAME if LORA_WEIGHTS_NAME in files else files[0]
    try:
        return read_lora_file(folder / name, pipeline, field="weights")
    except InvalidArgument as exc:
        # Published weights that do not read are the stored model's fault, not the request's.
        raise FailedPrecondition(
            f"weights file {name} of subject model {manifest.model_id!r} cannot be used: {exc.message}"
        ) from exc


def read_full_fine_tune(
    manifest: SubjectModelManifest, folder: Path, base: DiffusionPipeline, dtype: torch.dtype
) -> dict[str, torch.nn.Module]:
    """The fine-tuned modules of a full fine-tune, on the CPU in `dtype`: `unet`, plus its text encoders if any.

    Everything else (VAE, tokenizers, scheduler, text encoders not fine-tuned) is the base model's.
    """
    unet_dir = folder / "unet"
    if not (unet_dir / "config.json").is_file():
        raise FailedPrecondition(f"subject model {manifest.model_id!r} is a full fine-tune without unet/config.json")
    try:
        # Loaded straight into the serving dtype: a real SDXL UNet takes 10 GB in float32.
        unet = UNet2DConditionModel.from_pretrained(
            str(unet_dir), use_safetensors=True, local_files_only=True, torch_dtype=dtype
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise FailedPrecondition(
            f"UNet of subject model {manifest.model_id!r} is corrupt or unreadable: {first_line(exc)}"
        ) from exc
    for key in UNET_COMPATIBILITY_KEYS:
        if unet.config.get(key) != base.unet.config.get(key):  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
            raise FailedPrecondition(
                f"UNet of subject model {manifest.model_id!r} does not fit its base model: {key} is "
                f"{unet.config.get(key)!r}, the base model's is {base.unet.config.get(key)!r}"  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
            )
    modules: dict[str, torch.nn.Module] = {"unet": unet.eval()}
    for name in TEXT_ENCODER_FOLDERS:
        if not (folder / name / "config.json").is_file():
            continue
        base_encoder = getattr(base, name, None)
        if base_encoder is None:
            raise FailedPrecondition(f"subject model {manifest.model_id!r} has {name}/ but its base model has none")
        try:
            encoder = type(base_encoder).from_pretrained(
                str(folder / name), use_safetensors=True, local_files_only=True
            )
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            raise FailedPrecondition(
                f"{name} of subject model {manifest.model_id!r} is corrupt or unreadable: {first_line(exc)}"
            ) from exc
        if encoder.config.hidden_size != base_encoder.config.hidden_size:
            raise FailedPrecondition(
                f"{name} of subject model {manifest.model_id!r} does not fit its base model (hidden size "
                f"{encoder.config.hidden_size}, the base model's is {base_encoder.config.hidden_size})"
            )
        modules[name] = encoder.to(dtype=dtype).eval()
    return modules
