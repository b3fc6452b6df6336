"""Writing a trained subject model's weights: diffusers LoRA, full UNet, and the kohya / A1111 LoRA format.

Kohya's format (what AUTOMATIC1111, ComfyUI and sd-scripts read) names each adapted layer
`lora_unet_<module path with "_" for ".">` / `lora_te_…` (`lora_te1_`/`lora_te2_` for SDXL's two encoders),
with `.lora_down.weight` (A), `.lora_up.weight` (B) and a scalar `.alpha`. SD 1.x/2.x UNet paths use diffusers'
block names (`down_blocks_1_attentions_0_…`); SDXL ones use the original SGM layout (`input_blocks_4_1_…`),
as sd-scripts does. Text-encoder paths always start with `text_model_`: transformers 5 dropped that prefix from
`CLIPTextModel`'s modules (not from `CLIPTextModelWithProjection`'s), so it is put back where missing.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

from likeness.errors import FailedPrecondition
from likeness.storage.layout import KOHYA_WEIGHTS_NAME
from likeness.trainer.config import TrainingConfig
from likeness.trainer.training.lora import LORA_WEIGHTS_NAME, save_lora

_RESNET_TO_SGM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_TOP_LEVEL_TO_SGM = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def save_subject_weights(pipeline, config: TrainingConfig, directory: Path) -> list[str]:
    """Writes the trained weights of `pipeline` into `directory`; returns the written paths relative to it.

    LoRA: `pytorch_lora_weights.safetensors` (plus `lora_kohya.safetensors` when `config.export_kohya`).
    Full: `unet/` in diffusers format, plus `text_encoder/` (and `text_encoder_2/`) when they were trained.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if config.method == "lora":
        written = save_lora(pipeline, directory)
        if config.export_kohya:
            sdxl = isinstance(pipeline, StableDiffusionXLPipeline)
            export_kohya(
                directory / LORA_WEIGHTS_NAME,
                directory / KOHYA_WEIGHTS_NAME,
                alpha=config.lora.effective_alpha,
                sdxl=sdxl,
                layers_per_block=pipeline.unet.config.layers_per_block,
            )
            written.append(KOHYA_WEIGHTS_NAME)
        return written
    pipeline.unet.save_pretrained(directory / "unet", safe_serialization=True)
    names = ["text_encoder"] + (["text_encoder_2"] if isinstance(pipeline, StableDiffusionXLPipeline) else [])
    if config.train_text_encoder:
        for name in names:
            getattr(pipeline, name).save_pretrained(directory / name, safe_serialization=True)
    else:
        names = []
    return sorted(
        path.relative_to(directory).as_posix()
        for folder in ["unet", *names]
        for path in (directory / folder).rglob("*")
        if path.is_file()
    )


def _layers_per_block(value: int | list[int] | tuple[int, ...]) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise FailedPrecondition("kohya export needs the same number of layers in every UNet block")
    return int(value[0])


def diffusers_unet_path_to_sgm(path: str, layers_per_block: int) -> str:
    """Maps a diffusers SDXL UNet module path to the original (SGM) layout that kohya's SDXL LoRAs use."""
    for name, sgm in _TOP_LEVEL_TO_SGM.items():
        if path == name:
            return sgm
    per_block = layers_per_block + 1
    match = re.match(r"^down_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)$", path)
    if match:
        block, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        index = 1 + block * per_block + layer
        return f"input_blocks.{index}.{1 if kind == 'attentions' else 0}.{_inner(kind, rest)}"
    match = re.match(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv$", path)
    if match:
        return f"input_blocks.{(int(match[1]) + 1) * per_block}.0.op"
    match = re.match(r"^mid_block\.(attentions|resnets)\.(\d+)\.(.+)$", path)
    if match:
        kind, layer, rest = match[1], int(match[2]), match[3]
        index = 1 if kind == "attentions" else 2 * layer
        return f"middle_block.{index}.{_inner(kind, rest)}"
    match = re.match(r"^up_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)$", path)
    if match:
        block, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        index = block * per_block + layer
        return f"output_blocks.{index}.{1 if kind == 'attentions' else 0}.{_inner(kind, rest)}"
    raise FailedPrecondition(f"no kohya (SGM) name for UNet layer {path!r}; adapt only attention and resnet layers")


def _inner(kind: str, rest: str) -> str:
    if kind == "attentions":
        return rest
    return _RESNET_TO_SGM.get(rest, rest)


def _kohya_prefix(component: str, path: str, *, sdxl: bool, layers_per_block: int) -> str:
    if component == "unet":
        return "lora_unet_" + (diffusers_unet_path_to_sgm(path, layers_per_block) if sdxl else path).replace(".", "_")
    if not path.startswith("text_model."):
        path = "text_model." + path
    name = {"text_encoder": "lora_te1" if sdxl else "lora_te", "text_encoder_2": "lora_te2"}[component]
    return f"{name}_{path.replace('.', '_')}"


def export_kohya(
    diffusers_file: Path, kohya_file: Path, *, alpha: float, sdxl: bool, layers_per_block: int | list[int]
) -> None:
    """Converts a diffusers-format LoRA file (keys `unet.<path>.lora.down.weight`) into kohya's format."""
    layers = _layers_per_block(layers_per_block)
    state = load_file(str(diffusers_file))
    converted: dict[str, torch.Tensor] = {}
    pattern = re.compile(
        r"^(unet|text_encoder|text_encoder_2)\.(.+?)\.(?:lora|lora_linear_layer)[._](down|up|A|B)\.weight$"
    )
    for key, tensor in state.items():
        match = pattern.match(key)
        if match is None:
            raise FailedPrecondition(f"unexpected key {key!r} in {diffusers_file.name}; cannot convert it to kohya")
        component, path, direction = match.groups()
        prefix = _kohya_prefix(component, path, sdxl=sdxl, layers_per_block=layers)
        kind = "lora_down" if direction in ("down", "A") else "lora_up"
        converted[f"{prefix}.{kind}.weight"] = tensor.contiguous()
        converted[f"{prefix}.alpha"] = torch.tensor(float(alpha))
    save_file(
        converted, str(kohya_file), metadata={"ss_network_module": "networks.lora", "ss_network_alpha": str(alpha)}
    )
