"""Export an SD 1.x, 2.x or XL diffusers pipeline as one original-layout (CompVis / A1111 / ComfyUI)
`.safetensors` checkpoint.

This is the inverse of diffusers' `from_single_file` conversion, written from the model's own structure so it
works for any block count (the real 4-level UNet as well as the tiny 2-level one). SD 2.x's text encoder and SDXL's
second one are written in OpenCLIP's layout. SDXL export needs encoders of different widths: diffusers tells the
two apart by their width, which the tiny SDXL's equal-width encoders would defeat.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch

# mypy resolves diffusers' top-level exports to its dummy placeholder classes (no Module or pipeline
# attributes), hence the type: ignore comments on diffusers attribute uses below.
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)

from likeness.errors import InvalidArgument
from likeness.models.arch import check_arch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_ENCODER_PREFIX = "cond_stage_model.model."
SDXL_TEXT_ENCODER_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT_ENCODER_2_PREFIX = "conditioner.embedders.1.model."
# SD 2.x's UNet cross-attends to OpenCLIP ViT-H's 1024-wide states; diffusers keeps 23 of its 24 layers.
SD2_CROSS_ATTENTION_DIM = 1024
SD2_DIFFUSERS_TEXT_LAYERS = 23

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


def _config(model: torch.nn.Module) -> Any:
    """A transformers or diffusers model's config (an attribute torch's Module type does not declare)."""
    return model.config


_OPEN_CLIP_LAYER_RENAMES = (
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("self_attn.out_proj.", "attn.out_proj."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
)
_OPEN_CLIP_TOP_LEVEL = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_LAYER_KEY = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.(.+)$")


def _open_clip_state_dict(text_encoder: torch.nn.Module, *, final_layer: bool) -> dict[str, torch.Tensor]:
    """A CLIP text encoder in OpenCLIP's layout (SD 2.x's `cond_stage_model.model.`, SDXL's second encoder):
    fused `attn.in_proj_weight` (q, k, v stacked), `text_projection` stored transposed (x @ P).

    `final_layer`: SD 2.x conditions on the penultimate layer of OpenCLIP ViT-H, so its diffusers text encoder
    has 23 layers while original files hold all 24 and a `text_projection`; these are added (zeros: no SD 2
    pipeline uses them, and diffusers drops them on load) so the file has the layout of a real SD 2 checkpoint.
    """
    state = _text_encoder_state_dict(text_encoder)
    converted: dict[str, torch.Tensor] = {}
    fused: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if key in _OPEN_CLIP_TOP_LEVEL:
            converted[_OPEN_CLIP_TOP_LEVEL[key]] = tensor
            continue
        if key in ("text_projection.weight", "text_model.text_projection.weight"):
            converted["text_projection"] = tensor.t()
            continue
        if key.endswith("position_ids"):
            continue
        match = _LAYER_KEY.match(key)
        if match is None:
            raise InvalidArgument(f"single-file export: unexpected text encoder weight {key!r}", field="pipeline")
        layer, rest = int(match[1]), match[2]
        projection = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest)
        if projection:
            fused.setdefault((layer, projection[2]), {})[projection[1]] = tensor
            continue
        for old, new in _OPEN_CLIP_LAYER_RENAMES:
            if rest.startswith(old):
                rest = new + rest[len(old) :]
                break
        else:
            raise InvalidArgument(f"single-file export: unexpected text encoder weight {key!r}", field="pipeline")
        converted[f"transformer.resblocks.{layer}.{rest}"] = tensor
    for (layer, kind), parts in fused.items():
        converted[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts[name] for name in "qkv"])
    if final_layer:
        layers = int(_config(text_encoder).num_hidden_layers)
        template = {
            key.removeprefix(f"transformer.resblocks.{layers - 1}."): tensor
            for key, tensor in converted.items()
            if key.startswith(f"transformer.resblocks.{layers - 1}.")
        }
        for rest, tensor in template.items():
            converted[f"transformer.resblocks.{layers}.{rest}"] = torch.zeros_like(tensor, device="cpu")
        if "text_projection" not in converted:
            hidden = int(_config(text_encoder).hidden_size)
            dtype = converted["token_embedding.weight"].dtype
            converted["text_projection"] = torch.zeros(hidden, hidden, dtype=dtype)
    return converted


def _export_arch(pipeline: DiffusionPipeline) -> str:
    if isinstance(pipeline, StableDiffusionXLPipeline):
        return "sdxl"
    if isinstance(pipeline, StableDiffusionPipeline):
        cross = pipeline.unet.config.cross_attention_dim  # type: ignore[attr-defined]
        return "sd2" if cross == SD2_CROSS_ATTENTION_DIM else "sd15"
    raise InvalidArgument(
        f"single-file export supports SD 1.x, 2.x and XL pipelines, not {type(pipeline).__name__}", field="arch"
    )


def single_file_state_dict(
    *,
    arch: str,
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoder: torch.nn.Module,
    text_encoder_2: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """The components' weights under their original-layout (CompVis / A1111 / ComfyUI) names:

    - sd15: `model.diffusion_model.`, `first_stage_model.`, `cond_stage_model.transformer.text_model.`
    - sd2: the same UNet and VAE, `cond_stage_model.model.` (OpenCLIP ViT-H layout)
    - sdxl: UNet with `label_emb`, `conditioner.embedders.0.transformer.text_model.` (CLIP ViT-L) and
      `conditioner.embedders.1.model.` (OpenCLIP ViT-bigG layout)

    Tensors are views of the components' own where no conversion is needed.
    """
    check_arch(arch)
    parts: list[tuple[str, dict[str, torch.Tensor]]] = [
        (UNET_PREFIX, _rename(unet.state_dict(), _unet_prefix_map(unet))),  # type: ignore[arg-type]
        (VAE_PREFIX, _vae_state_dict(vae)),  # type: ignore[arg-type]
    ]
    if arch == "sdxl":
        if text_encoder_2 is None:
            raise InvalidArgument("single-file export of SDXL needs text_encoder_2", field="pipeline")
        widths = (_config(text_encoder).hidden_size, _config(text_encoder_2).hidden_size)
        if widths[0] == widths[1]:
            # diffusers tells SDXL's two encoders apart in a single file by their width: equal widths (the tiny
            # SDXL) would load the first encoder's weights into the second.
            raise InvalidArgument(
                f"single-file export of SDXL needs text encoders of different widths (these are both {widths[0]}); "
                "save it as a diffusers folder instead",
                field="pipeline",
            )
        parts.append((SDXL_TEXT_ENCODER_PREFIX, _text_encoder_state_dict(text_encoder)))
        parts.append((SDXL_TEXT_ENCODER_2_PREFIX, _open_clip_state_dict(text_encoder_2, final_layer=False)))
    elif arch == "sd2":
        final = _config(text_encoder).num_hidden_layers == SD2_DIFFUSERS_TEXT_LAYERS
        parts.append((SD2_TEXT_ENCODER_PREFIX, _open_clip_state_dict(text_encoder, final_layer=final)))
    else:
        parts.append((TEXT_ENCODER_PREFIX, _text_encoder_state_dict(text_encoder)))
    return {prefix + key: tensor for prefix, state_dict in parts for key, tensor in state_dict.items()}


_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write `tensors` as a `.safetensors` file one tensor at a time (a 7 GB SDXL checkpoint needs no second copy
    in memory, as `safetensors.torch.save_file` does), into a temp file renamed into place."""
    path = Path(path)
    header: dict[str, object] = {}
    offset = 0
    names = sorted(tensors)
    for name in names:
        tensor = tensors[name]
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise InvalidArgument(f"cannot write {name} of type {tensor.dtype} as safetensors", field="pipeline")
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(struct.pack("<Q", len(raw)))
            stream.write(raw)
            for name in names:
                tensor = tensors[name].detach().to("cpu").contiguous().reshape(-1)
                if tensor.numel():
                    stream.write(tensor.view(torch.uint8).numpy().data)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def save_single_file(pipeline: DiffusionPipeline, path: str | Path, *, arch: str | None = None) -> Path:
    """Write an SD 1.x, 2.x or XL pipeline's UNet, VAE and text encoder(s) as one original-layout (A1111 /
    ComfyUI) `.safetensors` file (`single_file_state_dict`). `arch` is told from the pipeline when omitted (SD 2.x
    by its 1024-wide cross-attention).

    A full-size standard model loads back with `load_base_pipeline(path)` alone (the shipped configs). A tiny or
    custom one needs `config_dir=<the diffusers folder it came from>`: its VAE scaling factor and shapes live in
    that folder's configs. SDXL needs text encoders of different widths (not the tiny SDXL).
    """
    arch = check_arch(arch) if arch is not None else _export_arch(pipeline)
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InvalidArgument(f"{path}: single-file checkpoints are written as .safetensors", field="path")
    checkpoint = single_file_state_dict(
        arch=arch,
        unet=pipeline.unet,  # type: ignore[attr-defined]
        vae=pipeline.vae,  # type: ignore[attr-defined]
        text_encoder=pipeline.text_encoder,  # type: ignore[attr-defined]
        text_encoder_2=getattr(pipeline, "text_encoder_2", None),
    )
    return write_safetensors(checkpoint, path, metadata={"format": "pt"})
