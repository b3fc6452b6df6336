"""LoRA adapters on the UNet (and text encoders), and saving them in diffusers' own LoRA format.

The saved file is what `StableDiffusionPipeline.save_lora_weights` writes (`pytorch_lora_weights.safetensors`,
keys `unet.…lora_A.weight`, `text_encoder.…`), with each adapter's config (rank, alpha, targets) in the file's
metadata, so a plain `pipeline.load_lora_weights(folder)` restores the exact scale alpha / rank.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict

from likeness.errors import InvalidArgument
from likeness.trainer.config import TEXT_ENCODER_LORA_TARGETS, LoraSettings

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"


def add_lora(module: torch.nn.Module, settings: LoraSettings, *, text_encoder: bool = False) -> None:
    """Adds a trainable LoRA adapter ("default") to `module`; InvalidArgument when no target module exists."""
    targets = list(TEXT_ENCODER_LORA_TARGETS) if text_encoder else list(settings.target_modules)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.effective_alpha,  # type: ignore[arg-type]  # peft annotates int; a float alpha works
        lora_dropout=settings.dropout,
        init_lora_weights="gaussian",
        target_modules=targets,
    )
    try:
        if text_encoder:
            # transformers 5's own `add_adapter` demands a peft release newer than any published one; peft's
            # injection does the same thing without that gate.
            inject_adapter_in_model(config, module, adapter_name="default")
            module.peft_config = {"default": config}  # type: ignore[assignment]  # torch types module attributes as Tensor | Module
        else:
            module.add_adapter(config)  # type: ignore[operator]  # the UNet's diffusers PEFT mixin method
    except ValueError as error:
        raise InvalidArgument(
            f"none of {targets} names a layer of the {'text encoder' if text_encoder else 'UNet'} ({error}); "
            "use attention projections such as to_q, to_k, to_v, to_out.0",
            field="spec.lora.target_modules",
        ) from error


def has_lora(module: torch.nn.Module) -> bool:
    return bool(getattr(module, "peft_config", None))


def lora_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights of `module` in diffusers' key convention, on the CPU in float32."""
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(module))
    return {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in state.items()}


def save_lora(pipeline: StableDiffusionPipeline | StableDiffusionXLPipeline, directory: Path) -> list[str]:
    """Writes the pipeline's LoRA adapters to `directory/pytorch_lora_weights.safetensors`; returns the file name."""
    layers: dict[str, object] = {"unet_lora_layers": lora_state_dict(pipeline.unet)}  # type: ignore[union-attr]  # diffusers' exports type-check as dummy objects
    layers["unet_lora_adapter_metadata"] = pipeline.unet.peft_config["default"].to_dict()  # type: ignore[union-attr]  # diffusers' exports type-check as dummy objects
    encoders = [("text_encoder", pipeline.text_encoder)]  # type: ignore[union-attr]  # diffusers' exports type-check as dummy objects
    if isinstance(pipeline, StableDiffusionXLPipeline):
        encoders.append(("text_encoder_2", pipeline.text_encoder_2))  # type: ignore[attr-defined]  # diffusers' exports type-check as dummy objects
    for name, encoder in encoders:
        if encoder is not None and has_lora(encoder):
            layers[f"{name}_lora_layers"] = lora_state_dict(encoder)
            layers[f"{name}_lora_adapter_metadata"] = encoder.peft_config["default"].to_dict()
    type(pipeline).save_lora_weights(str(directory), weight_name=LORA_WEIGHTS_NAME, safe_serialization=True, **layers)
    return [LORA_WEIGHTS_NAME]
