"""Export an SD 1.x diffusers pipeline as one original-layout (CompVis / A1111) `.safetensors` checkpoint.

This is the inverse of diffusers' `from_single_file` conversion, written from the model's own structure so it
works for any block count (the real 4-level UNet as well as the tiny 2-level one). SDXL is not supported: its
second text encoder uses OpenCLIP's layout, and diffusers tells the two encoders apart by their width, which
the tiny SDXL's equal-width encoders would defeat.
"""

from __future__ import annotations

from pathlib import Path

import torch

# mypy resolves diffusers' top-level exports to its dummy placeholder classes (no Module or pipeline
# attributes), hence the type: ignore comments on diffusers attribute uses below.
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file

from likeness.errors import InvalidArgument

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."

_UNET_RESNET_RENAMES = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)
_VAE_RESNET_RENAMES = (("conv_shortcut.", "nin_shortcut."),)
_VAE_ATTENTION_RENAMES = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)
Renames = tuple[tuple[str, str], ...]


def _unet_prefix_map(unet: UNet2DConditionModel) -> dict[str, tuple[str, Renames]]:
    """diffusers key prefix -> (LDM key prefix, renames applied to the rest of the key)."""
    layers_per_block = unet.config.layers_per_block  # type: ignore[attr-defined]
    if not isinstance(layers_per_block, int):
        raise InvalidArgument("single-file export needs the same number of layers in every UNet block")
    stride = layers_per_block + 1
    prefixes: dict[str, tuple[str, Renames]] = {
        "time_embedding.linear_1.": ("time_embed.0.", ()),
        "time_embedding.linear_2.": ("time_embed.2.", ()),
        "add_embedding.linear_1.": ("label_emb.0.0.", ()),
        "add_embedding.linear_2.": ("label_emb.0.2.", ()),
        "conv_in.": ("input_blocks.0.0.", ()),
        "conv_norm_out.": ("out.0.", ()),
        "conv_out.": ("out.2.", ()),
        "mid_block.resnets.0.": ("middle_block.0.", _UNET_RESNET_RENAMES),
        "mid_block.attentions.0.": ("middle_block.1.", ()),
        "mid_block.resnets.1.": ("middle_block.2.", _UNET_RESNET_RENAMES),
    }
    for level, block in enumerate(unet.down_blocks):  # type: ignore[attr-defined]
        for layer in range(len(block.resnets)):
            ldm_block = f"input_blocks.{1 + level * stride + layer}"
            prefixes[f"down_blocks.{level}.resnets.{layer}."] = (f"{ldm_block}.0.", _UNET_RESNET_RENAMES)
            prefixes[f"down_blocks.{level}.attentions.{layer}."] = (f"{ldm_block}.1.", ())
        prefixes[f"down_blocks.{level}.downsamplers.0.conv."] = (f"input_blocks.{(level + 1) * stride}.0.op.", ())
    for level, block in enumerate(unet.up_blocks):  # type: ignore[attr-defined]
        for layer in range(len(block.resnets)):
            ldm_block = f"output_blocks.{level * stride + layer}"
            prefixes[f"up_blocks.{level}.resnets.{layer}."] = (f"{ldm_block}.0.", _UNET_RESNET_RENAMES)
            prefixes[f"up_blocks.{level}.attentions.{layer}."] = (f"{ldm_block}.1.", ())
        # In the LDM layout the upsampler follows the attention module when the block has one.
        upsampler_slot = 2 if getattr(block, "attentions", None) else 1
        prefixes[f"up_blocks.{level}.upsamplers.0.conv."] = (
            f"output_blocks.{level * stride + layers_per_block}.{upsampler_slot}.conv.",
            (),
        )
    return prefixes


def _vae_prefix_map(vae: AutoencoderKL) -> dict[str, tuple[str, Renames]]:
    prefixes: dict[str, tuple[str, Renames]] = {
        "encoder.conv_norm_out.": ("encoder.norm_out.", ()),
        "decoder.conv_norm_out.": ("decoder.norm_out.", ()),
    }
    for part in ("encoder", "decoder"):
        prefixes[f"{part}.mid_block.resnets.0."] = (f"{part}.mid.block_1.", _VAE_RESNET_RENAMES)
        prefixes[f"{part}.mid_block.resnets.1."] = (f"{part}.mid.block_2.", _VAE_RESNET_RENAMES)
        prefixes[f"{part}.mid_block.attentions.0."] = (f"{part}.mid.attn_1.", _VAE_ATTENTION_RENAMES)
    for level, block in enumerate(vae.encoder.down_blocks):  # type: ignore[attr-defined]
        for layer in range(len(block.resnets)):
            prefixes[f"encoder.down_blocks.{level}.resnets.{layer}."] = (
                f"encoder.down.{level}.block.{layer}.",
                _VAE_RESNET_RENAMES,
            )
        prefixes[f"encoder.down_blocks.{level}.downsamplers.0.conv."] = (f"encoder.down.{level}.downsample.conv.", ())
    levels = len(vae.decoder.up_blocks)  # type: ignore[attr-defined]
    for level, block in enumerate(vae.decoder.up_blocks):  # type: ignore[attr-defined]
        # The LDM decoder numbers its levels from the lowest resolution up, diffusers from the top down.
        ldm_level = levels - 1 - level
        for layer in range(len(block.resnets)):
            prefixes[f"decoder.up_blocks.{level}.resnets.{layer}."] = (
                f"decoder.up.{ldm_level}.block.{layer}.",
                _VAE_RESNET_RENAMES,
            )
        prefixes[f"decoder.up_blocks.{level}.upsamplers.0.conv."] = (f"decoder.up.{ldm_level}.upsample.conv.", ())
    return prefixes


def _rename(state_dict: dict[str, torch.Tensor], prefixes: dict[str, tuple[str, Renames]]) -> dict[str, torch.Tensor]:
    ordered = sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True)
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        new_key = key
        for diffusers_prefix, (ldm_prefix, renames) in ordered:
            if key.startswith(diffusers_prefix):
                rest = key[len(diffusers_prefix) :]
                for old, new in renames:
                    if rest.startswith(old):
                        rest = new + rest[len(old) :]
                new_key = ldm_prefix + rest
                break
        renamed[new_key] = tensor
    return renamed


def _vae_state_dict(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    renamed = _rename(vae.state_dict(), _vae_prefix_map(vae))  # type: ignore[attr-defined]
    # The LDM VAE's mid-block attention uses 1x1 convolutions where diffusers uses linear layers.
    for key, tensor in renamed.items():
        if ".mid.attn_1." in key and key.endswith("weight") and tensor.ndim == 2:
            renamed[key] = tensor[:, :, None, None]
    return renamed


def _text_encoder_state_dict(text_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` prefix); the LDM layout keeps it.
    return {
        (key if key.startswith("text_model.") else f"text_model.{key}"): tensor
        for key, tensor in text_encoder.state_dict().items()
    }


def save_single_file(pipeline: StableDiffusionPipeline, path: str | Path) -> Path:
    """Write an SD 1.x pipeline's UNet, VAE and text encoder as one original-layout `.safetensors` file.

    Load it back with `load_base_pipeline(path, config_dir=<the diffusers folder it came from>)`: the file
    holds weights only, and a tiny model's VAE scaling factor lives in that folder's config.
    """
    if not isinstance(pipeline, StableDiffusionPipeline):
        raise InvalidArgument(
            f"single-file export supports SD 1.x pipelines only, not {type(pipeline).__name__}", field="arch"
        )
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InvalidArgument(f"{path}: single-file checkpoints are written as .safetensors", field="path")
    checkpoint: dict[str, torch.Tensor] = {}
    parts = (
        (UNET_PREFIX, _rename(pipeline.unet.state_dict(), _unet_prefix_map(pipeline.unet))),  # type: ignore[attr-defined]
        (VAE_PREFIX, _vae_state_dict(pipeline.vae)),  # type: ignore[attr-defined]
        (TEXT_ENCODER_PREFIX, _text_encoder_state_dict(pipeline.text_encoder)),  # type: ignore[attr-defined]
    )
    for prefix, state_dict in parts:
        for key, tensor in state_dict.items():
            checkpoint[prefix + key] = tensor.detach().to("cpu").contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(checkpoint, str(path), metadata={"format": "pt"})
    return path
