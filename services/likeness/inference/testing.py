"""Publishing subject models the way the trainer does, for tests, benchmarks and demos without training.

A LoRA subject is a peft LoRA on the tiny base UNet with random, non-zero up-projections (so it visibly changes
the output), saved with the pipeline's `save_lora_weights` in diffusers format. A full fine-tune is a UNet of the
same configuration with other random weights, saved with `save_pretrained`. Both are published atomically under
`tenants/{tenant}/models/{model_id}/` with a `SubjectModelManifest`.

`BackgroundInferenceServer` runs the service on a real gRPC server in a background thread for synchronous code.
"""

from __future__ import annotations

import copy
import tempfile
from functools import lru_cache
from pathlib import Path

import grpc
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from likeness.inference.engine import InferenceEngine
from likeness.models.catalog import DEFAULT_CATALOG_SPEC, BaseModelCatalog
from likeness.models.tiny import create_tiny_pipeline
from likeness.server.embedded import EmbeddedServer
from likeness.server.settings import Settings
from likeness.storage.base import Storage
from likeness.storage.layout import DEFAULT_TENANT, model_prefix, new_id
from likeness.storage.manifest import SubjectModelManifest, utc_now_rfc3339
from likeness_client.v1 import inference_service_pb2_grpc as pb_grpc

LORA_FILE = "pytorch_lora_weights.safetensors"
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


@lru_cache(maxsize=4)
def _tiny_unet(arch: str) -> UNet2DConditionModel:
    return create_tiny_pipeline(arch).unet  # type: ignore[union-attr]  # diffusers' exports type-check as dummy objects


def _manifest(
    model_id: str, tenant: str, base_model: str, arch: str, method: str, weights: list[str], **fields: object
) -> SubjectModelManifest:
    return SubjectModelManifest(
        model_id=model_id,
        tenant=tenant,
        identifier=str(fields.get("identifier", "sks")),
        class_noun=str(fields.get("class_noun", "dog")),
        base_model=base_model,
        arch=arch,
        method=method,
        training_config={"job_id": f"job-for-{model_id}"},
        metrics={"final_loss": 0.1},
        created_at=utc_now_rfc3339(),
        sample_images=[],
        weights=weights,
        lora_rank=fields.get("lora_rank"),  # type: ignore[arg-type]
    )


def _publish(storage: Storage, folder: Path, manifest: SubjectModelManifest) -> SubjectModelManifest:
    (folder / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    storage.publish_dir(folder, model_prefix(manifest.tenant, manifest.model_id))
    return manifest


def publish_lora_subject(
    storage: Storage,
    *,
    base_model: str = "tiny-sd15",
    arch: str = "sd15",
    tenant: str = DEFAULT_TENANT,
    model_id: str | None = None,
    rank: int = 4,
    seed: int = 0,
    identifier: str = "sks",
    class_noun: str = "dog",
) -> SubjectModelManifest:
    """Publish a random LoRA subject for the tiny base of `arch` and return its manifest."""
    model_id = model_id or new_id("model")
    unet = copy.deepcopy(_tiny_unet(arch))
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    layers = get_peft_model_state_dict(unet)
    pipeline_class = StableDiffusionXLPipeline if arch == "sdxl" else StableDiffusionPipeline
    with tempfile.TemporaryDirectory(prefix="likeness-subject-") as temp:
        folder = Path(temp)
        pipeline_class.save_lora_weights(str(folder), unet_lora_layers=layers, safe_serialization=True)
        manifest = _manifest(
            model_id, tenant, base_model, arch, "lora", [LORA_FILE],
            identifier=identifier, class_noun=class_noun, lora_rank=rank,
        )  # fmt: skip
        return _publish(storage, folder, manifest)


def publish_full_subject(
    storage: Storage,
    *,
    base_model: str = "tiny-sd15",
    arch: str = "sd15",
    tenant: str = DEFAULT_TENANT,
    model_id: str | None = None,
    seed: int = 11,
    identifier: str = "sks",
    class_noun: str = "dog",
    text_encoders: bool = False,
) -> SubjectModelManifest:
    """Publish a full fine-tune (a UNet with other weights, and other text encoders if `text_encoders`) for the
    tiny base of `arch`, laid out as the trainer writes it."""
    model_id = model_id or new_id("model")
    pipeline = create_tiny_pipeline(arch, seed=seed)
    folders = ["unet"]
    if text_encoders:
        folders += ["text_encoder", "text_encoder_2"] if arch == "sdxl" else ["text_encoder"]
    with tempfile.TemporaryDirectory(prefix="likeness-subject-") as temp:
        folder = Path(temp)
        for name in folders:
            getattr(pipeline, name).save_pretrained(str(folder / name), safe_serialization=True)
        weights = sorted(p.relative_to(folder).as_posix() for name in folders for p in (folder / name).rglob("*"))
        manifest = _manifest(
            model_id, tenant, base_model, arch, "full", weights, identifier=identifier, class_noun=class_noun
        )
        return _publish(storage, folder, manifest)


def publish_corrupt_lora_subject(
    storage: Storage, *, base_model: str = "tiny-sd15", arch: str = "sd15", tenant: str = DEFAULT_TENANT
) -> SubjectModelManifest:
    """Publish a LoRA subject whose weights file is garbage (a valid manifest over broken weights)."""
    model_id = new_id("model")
    with tempfile.TemporaryDirectory(prefix="likeness-subject-") as temp:
        folder = Path(temp)
        (folder / LORA_FILE).write_bytes(b"\x00\x01 not a safetensors file")
        manifest = _manifest(model_id, tenant, base_model, arch, "lora", [LORA_FILE], lora_rank=4)
        return _publish(storage, folder, manifest)


class BackgroundInferenceServer:
    """The inference component on a real gRPC server (full interceptor chain) in a background event loop, for
    synchronous tests and benchmarks: `start()` returns once it serves; `stub` is a blocking client stub.

    `settings` fields can be overridden by keyword (`batch_window_ms=0`, ...); `storage`, `catalog`,
    `subject_cache_bytes` and `chunk_bytes` go to `InferenceComponent`; `grace_seconds` is the drain period of
    `stop()`.
    """

    def __init__(
        self,
        storage: Storage,
        catalog: BaseModelCatalog,
        *,
        subject_cache_bytes: int | None = None,
        chunk_bytes: int | None = None,
        grace_seconds: float = 2.0,
        **settings_fields: object,
    ) -> None:
        from likeness.inference.service import InferenceComponent

        self.grace_seconds = grace_seconds
        fields: dict[str, object] = {
            "base_models": DEFAULT_CATALOG_SPEC,
            "default_base_model": "tiny-sd15",
            "device": "cpu",
            "storage_url": "unused",
        }
        fields.update(settings_fields)
        self.settings = Settings(**fields)  # type: ignore[arg-type]
        self.storage = storage
        self.component = InferenceComponent(
            self.settings,
            storage=storage,
            catalog=catalog,
            subject_cache_bytes=subject_cache_bytes,
            chunk_bytes=chunk_bytes,
        )
        self._server = EmbeddedServer(self.settings, components=[self.component], grace_seconds=grace_seconds)
        self.address = ""

    def start(self, timeout: float = 300) -> BackgroundInferenceServer:
        """Serve, returning once the server reports SERVING (`timeout` is kept for callers; start-up blocks)."""
        self._server.__enter__()
        self.address = self._server.address
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.InferenceServiceStub(self.channel)
        return self

    @property
    def engine(self) -> InferenceEngine:
        engine = self.component.engine
        assert engine is not None, "start() the server first"
        return engine

    def stop(self) -> None:
        """Drain and stop the server (streams in flight may finish), then close the client channel."""
        self._server.__exit__(None, None, None)
        self.channel.close()

    def __enter__(self) -> BackgroundInferenceServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
