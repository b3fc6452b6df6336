"""Reading a LoRA file of any common layout into plain per-layer factors, validated against a base pipeline.

A LoRA file comes in one of two families. The diffusers/PEFT layout (`unet.<path>.lora_A.weight`, what
`save_lora_weights` writes, older `…lora.down.weight` / `to_q_lora` variants, optional adapter config in the file's
`lora_adapter_metadata`) and the kohya layout that AUTOMATIC1111, ComfyUI, sd-scripts and civitai use
(`lora_unet_<path with _>.lora_down.weight`, `.lora_up.weight`, a scalar `.alpha`; `lora_te_` / `lora_te1_` /
`lora_te2_` for the text encoders; SGM `input_blocks_*` names for SDXL).

Nothing here maps keys by hand: the file goes through the same steps `pipeline.load_lora_weights` takes —
`lora_state_dict` (which converts kohya names and collects the network alphas), `convert_unet_state_dict_to_peft` /
`convert_state_dict_to_peft`, and diffusers' own `LoraConfig` construction — and each layer's scale is what PEFT
derives from that config (rank and alpha patterns, rsLoRA). So `up @ down * scale` is exactly the weight delta a
plain diffusers pipeline would apply for this file, without injecting anything into the pipeline.

Only safetensors is read: a pickled checkpoint (`.ckpt`, `.pt`, `.bin`) can run arbitrary code when loaded.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
from diffusers.loaders.lora_pipeline import StableDiffusionXLLoraLoaderMixin
from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft
from diffusers.utils.peft_utils import _create_lora_config
from diffusers.utils.state_dict_utils import StateDictType
from peft.tuners.tuners_utils import check_target_module_exists
from peft.utils.other import get_pattern_key
from safetensors import SafetensorError, safe_open

from likeness.errors import InvalidArgument

__all__ = ["LoraLayer", "LoraLayers", "lora_layers_from_state_dict", "read_lora_file"]

KOHYA_PREFIXES = ("lora_te_", "lora_unet_", "lora_te1_", "lora_te2_")
# The text-encoder modules diffusers reads a rank from (`_load_lora_into_text_encoder`); a text-encoder LoRA on
# any other module has no rank there and cannot be loaded.
_TEXT_ENCODER_RANKED = (".q_proj", ".k_proj", ".v_proj", ".out_proj", ".fc1", ".fc2")
_OLD_TEXT_ENCODER_KEYS = (".to_q_lora.", ".to_k_lora.", ".to_v_lora.", ".to_out_lora.")
_SGM_BLOCKS = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")
_PICKLE_ADVICE = (
    "it looks like a pickled PyTorch checkpoint (.ckpt/.pt/.bin), which can run arbitrary code when loaded and is "
    "not accepted; convert it to safetensors (kohya's sd-scripts tools, or "
    "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'lora.safetensors')` on a machine you trust)"
)
# Adapter kinds other than plain LoRA, recognised by a fragment of their key names, with what to call them.
_UNSUPPORTED_KINDS = (
    ("hada_", "a LoHa (LyCORIS) adapter"),
    ("lokr_", "a LoKr (LyCORIS) adapter"),
    ("lora_mid", "a LoCon/LyCORIS adapter with a Tucker decomposition (lora_mid)"),
    ("dora_scale", "a DoRA adapter (magnitude vectors)"),
    ("lora_magnitude_vector", "a DoRA adapter (magnitude vectors)"),
    ("oft_", "an OFT/BOFT adapter"),
    ("lora_embedding_", "a LoRA on embedding layers"),
)


@dataclass(frozen=True)
class LoraLayer:
    """One adapted layer: the weight delta is `up @ down * scale` (for a Conv2d, `up` is 1x1 and `down` carries the
    layer's kernel). Tensors are float32, on the CPU, contiguous."""

    down: torch.Tensor
    up: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass(frozen=True)
class LoraLayers:
    """A LoRA as per-layer factors keyed `"<component>.<module path>"` (component `unet`, `text_encoder` or
    `text_encoder_2`; the path as in that component's `named_modules()` on the base pipeline)."""

    layers: dict[str, LoraLayer]
    source_format: str

    @property
    def rank(self) -> int:
        """The largest rank of any layer."""
        return max(layer.rank for layer in self.layers.values())

    @property
    def nbytes(self) -> int:
        return sum(layer.down.nbytes + layer.up.nbytes for layer in self.layers.values())


def read_lora_file(path: Path, pipeline: Any, *, field: str = "file") -> LoraLayers:
    """Reads a safetensors LoRA file and validates it against `pipeline`; InvalidArgument(field=field) when the
    file is not safetensors (pickle, garbage, truncated), is not a plain LoRA, or does not fit the base model."""
    _reject_non_safetensors(path, field)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            file_metadata = handle.metadata() or {}
            state_dict = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118  # safe_open is no dict
    except (SafetensorError, OSError, ValueError) as error:
        raise InvalidArgument(
            f"{path.name} is not a readable safetensors file (truncated or corrupt: {error}); upload the complete "
            "file again",
            field=field,
        ) from error
    metadata = None
    raw = file_metadata.get(LORA_ADAPTER_METADATA_KEY)
    if raw:
        # Parsed the way diffusers' `_load_sft_state_dict_metadata` does, so the config matches a plain load.
        try:
            metadata = json.loads(raw)
        except json.JSONDecodeError as error:
            raise InvalidArgument(
                f"the {LORA_ADAPTER_METADATA_KEY!r} metadata of {path.name} is not valid JSON ({error})", field=field
            ) from error
        if not isinstance(metadata, dict):
            raise InvalidArgument(f"the {LORA_ADAPTER_METADATA_KEY!r} metadata must be a JSON object", field=field)
    if file_metadata.get("ss_network_module", "").startswith("lycoris"):
        raise InvalidArgument(
            f"{path.name} is a LyCORIS network ({file_metadata['ss_network_module']}), not a plain LoRA; only LoRA "
            "(lora_down/lora_up, or lora_A/lora_B) layers are supported",
            field=field,
        )
    return lora_layers_from_state_dict(state_dict, pipeline, metadata=metadata, field=field)


def _reject_non_safetensors(path: Path, field: str) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(9)
            size = path.stat().st_size
    except OSError as error:
        raise InvalidArgument(f"cannot read the LoRA file: {error}", field=field) from error
    # torch.save writes a zip archive; older checkpoints are a raw pickle (protocol 2-5 opcode, then its version).
    if head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise InvalidArgument(_PICKLE_ADVICE, field=field)
    if len(head) < 9:
        raise InvalidArgument("the LoRA file is empty or truncated (no safetensors header)", field=field)
    # A safetensors file starts with the little-endian length of its JSON header, then the header itself.
    (header_length,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or header_length + 8 > size:
        raise InvalidArgument(
            "the file is not a safetensors LoRA (or it is truncated): upload a .safetensors file; "
            "a .ckpt/.pt/.bin LoRA must be converted to safetensors first",
            field=field,
        )


def lora_layers_from_state_dict(
    state_dict: dict[str, torch.Tensor], pipeline: Any, *, metadata: dict | None = None, field: str = "file"
) -> LoraLayers:
    """Converts a LoRA state dict of any layout (with the file's `lora_adapter_metadata`, parsed, if it had one)
    into validated per-layer factors for `pipeline`, with the scales diffusers + PEFT would apply."""
    if not state_dict:
        raise InvalidArgument("the LoRA file holds no tensors", field=field)
    _reject_unsupported_kinds(state_dict, field)
    kohya = all(key.startswith(KOHYA_PREFIXES) for key in state_dict)
    if not kohya and any(key.startswith(KOHYA_PREFIXES) for key in state_dict):
        odd = sorted(key for key in state_dict if not key.startswith(KOHYA_PREFIXES))[:3]
        raise InvalidArgument(f"the file mixes kohya keys (lora_unet_…) with other keys such as {odd}", field=field)
    sdxl_base = isinstance(pipeline, StableDiffusionXLLoraLoaderMixin)
    sdxl_names = any(key.startswith(("lora_te1_", "lora_te2_", *_SGM_BLOCKS)) for key in state_dict)
    if kohya and not sdxl_base and sdxl_names:
        raise InvalidArgument(_sdxl_on_sd_message("its kohya names (lora_te1_/lora_te2_, SGM blocks)"), field=field)
    kohya_alphas = _kohya_alphas(state_dict, field) if kohya else None
    pipeline_class = type(pipeline)
    try:
        # The SDXL loader passes the UNet config so that SGM block names map onto this UNet's layout.
        converted, network_alphas, _ = pipeline_class.lora_state_dict(
            dict(state_dict),  # conversion pops keys from the dict it gets
            unet_config=pipeline.unet.config if sdxl_base else None,
            return_lora_metadata=True,
        )
    except (ValueError, KeyError, IndexError, RuntimeError) as error:
        raise InvalidArgument(f"diffusers cannot convert this LoRA: {error}", field=field) from error
    if network_alphas and metadata:
        raise InvalidArgument("the file has both kohya alphas and diffusers adapter metadata", field=field)
    not_lora = sorted(key for key in converted if "lora" not in key)
    if not_lora:
        raise InvalidArgument(f"not LoRA weights: keys such as {not_lora[:3]} name no LoRA layer", field=field)
    components = list(pipeline_class._lora_loadable_modules)
    stray = sorted(key for key in converted if key.split(".", 1)[0] not in components)
    if stray:
        if any(key.startswith("text_encoder_2.") for key in stray):
            raise InvalidArgument(_sdxl_on_sd_message("it adapts a second text encoder (text_encoder_2)"), field=field)
        raise InvalidArgument(
            f"keys such as {stray[:3]} belong to no component of this base model ({', '.join(components)}); "
            "is it a LoRA for another architecture?",
            field=field,
        )
    layers: dict[str, LoraLayer] = {}
    for component in components:
        part = {key.removeprefix(f"{component}."): v for key, v in converted.items() if key.startswith(f"{component}.")}
        if not part:
            continue
        module = getattr(pipeline, component, None)
        if module is None:
            raise InvalidArgument(f"the LoRA adapts {component}, which this base model has not got", field=field)
        part_metadata = None
        if metadata is not None:
            part_metadata = {
                key.removeprefix(f"{component}."): v for key, v in metadata.items() if key.startswith(f"{component}.")
            }
            if not part_metadata:
                raise InvalidArgument(
                    f"the file's adapter metadata has no config for its {component} layers", field=field
                )
        alphas = None
        if network_alphas:
            alphas = {
                key.removeprefix(f"{component}."): v
                for key, v in network_alphas.items()
                if key.split(".")[0] == component
            }
        if component == "unet":
            peft_state, config = _unet_config(part, alphas, part_metadata, module, field)
        else:
            peft_state, config = _text_encoder_config(part, alphas, part_metadata, module, field)
        for name, layer in _component_layers(peft_state, config, kohya_alphas, module, component, field).items():
            layers[f"{component}.{name}"] = layer
    if not layers:
        raise InvalidArgument("the file holds no LoRA layer for this base model", field=field)
    return LoraLayers(layers=layers, source_format="kohya" if kohya else "diffusers")


def _sdxl_on_sd_message(evidence: str) -> str:
    return f"this looks like an SDXL LoRA ({evidence}) but the base model is not SDXL; import it onto an SDXL base"


def _reject_unsupported_kinds(state_dict: dict[str, torch.Tensor], field: str) -> None:
    for key in state_dict:
        for fragment, kind in _UNSUPPORTED_KINDS:
            if fragment in key:
                raise InvalidArgument(
                    f"this file is {kind} (key {key!r}), not a plain LoRA; only LoRA layers are supported",
                    field=field,
                )
        if key.endswith((".lora_B.bias", ".lora_up.bias", ".lora.up.bias", ".lora_linear_layer.up.bias")):
            raise InvalidArgument(
                f"this LoRA has biases on its up projections (key {key!r}, PEFT's lora_bias), which are not supported",
                field=field,
            )
        if key.endswith((".diff", ".diff_b")):
            raise InvalidArgument(
                f"this file holds full weight differences (key {key!r}, LyCORIS 'full'), not a LoRA", field=field
            )


def _lora_config(state, alphas, metadata, ranks, field: str, **kwargs: Any):
    try:
        return _create_lora_config(state, alphas, metadata, ranks, **kwargs)
    except (TypeError, ValueError, IndexError) as error:
        raise InvalidArgument(
            f"no valid LoRA config can be made for this file ({error.__cause__ or error})", field=field
        ) from error


def _unet_config(state, alphas, metadata, unet, field: str):
    """The steps of diffusers' `load_lora_adapter` up to the `LoraConfig` it injects."""
    first_key = next(iter(state))
    if "lora_A" not in first_key:
        state = convert_unet_state_dict_to_peft(state)
    if "lora_controlnet" in state:
        raise InvalidArgument("this is a ControlNet LoRA, not a LoRA of the UNet", field=field)
    # The "^" anchors a pattern at the start of the module name, as diffusers does (peft PR 2419).
    ranks = {f"^{key}": value.shape[1] for key, value in state.items() if "lora_B" in key and value.ndim > 1}
    config = _lora_config(
        state, alphas, metadata, ranks, field, model_state_dict=unet.state_dict(), adapter_name="default_0"
    )
    return state, config


def _text_encoder_config(state, alphas, metadata, text_encoder, field: str):
    """The steps of diffusers' `_load_lora_into_text_encoder` up to the `LoraConfig` it passes to `load_adapter`."""
    # diffusers recognises kohya's converted text-encoder names (`to_q_lora`, …) only when an `out_proj` layer is
    # among them and otherwise drops or refuses the rest; naming the old layout whenever any such key is there
    # gives the same result when diffusers gets it right and reads partial kohya LoRAs too.
    if any(fragment in key for key in state for fragment in _OLD_TEXT_ENCODER_KEYS):
        state = convert_state_dict_to_diffusers(state, original_type=StateDictType.DIFFUSERS_OLD)
    else:
        state = convert_state_dict_to_diffusers(state)
    try:
        state = convert_state_dict_to_peft(state)
    except ValueError as error:
        raise InvalidArgument(
            f"the text-encoder keys are in no known LoRA layout (keys such as {sorted(state)[:2]})", field=field
        ) from error
    # transformers 5 flattened CLIPTextModel (no `text_model.`); older checkpoints still carry the prefix.
    if not hasattr(text_encoder, "text_model"):
        state = {key.removeprefix("text_model."): value for key, value in state.items()}
    ranks = {}
    for name, _ in text_encoder.named_modules():
        if name.endswith(_TEXT_ENCODER_RANKED) and f"{name}.lora_B.weight" in state:
            ranks[f"{name}.lora_B.weight"] = state[f"{name}.lora_B.weight"].shape[1]
    if not ranks:
        raise InvalidArgument(
            "the text-encoder LoRA adapts none of the attention (q/k/v/out_proj) or MLP (fc1/fc2) layers, "
            f"keys such as {sorted(state)[:2]}",
            field=field,
        )
    return state, _lora_config(state, alphas, metadata, ranks, field, is_unet=False)


def _kohya_alphas(state_dict: dict[str, torch.Tensor], field: str) -> dict[int, float]:
    """Each kohya layer's alpha, keyed by the identity of its down tensor.

    diffusers reads kohya alphas right only when they are all equal: the alpha pattern it builds from per-layer
    alphas is keyed `…processor.to_q_lora.down.weight` and matches no module, so every layer would get the most
    common alpha. The conversions move the tensors without copying them, so a layer's down tensor still finds its
    own alpha after them; with equal alphas this gives exactly diffusers' scale.
    """
    alphas = {}
    for key, tensor in state_dict.items():
        if not key.endswith(".lora_down.weight"):
            continue
        alpha = state_dict.get(key.removesuffix(".lora_down.weight") + ".alpha")
        if alpha is None:
            continue
        if alpha.numel() != 1:
            raise InvalidArgument(f"the alpha of {key.removesuffix('.lora_down.weight')} is not a scalar", field=field)
        alphas[id(tensor)] = float(alpha.item())
    return alphas


def _component_layers(
    state, config, kohya_alphas: dict[int, float] | None, module: torch.nn.Module, component: str, field: str
) -> dict[str, LoraLayer]:
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        for part in ("lora_A", "lora_B"):
            suffix = f".{part}.weight"
            if key.endswith(suffix):
                pairs.setdefault(key.removesuffix(suffix), {})[part] = tensor
                break
        else:
            raise InvalidArgument(f"unexpected key {component}.{key} in a LoRA file", field=field)
    modules = dict(module.named_modules())
    layers = {}
    for name, pair in sorted(pairs.items()):
        where = f"{component}.{name}"
        if "lora_A" not in pair or "lora_B" not in pair:
            missing = "down (lora_A)" if "lora_A" not in pair else "up (lora_B)"
            raise InvalidArgument(f"layer {where} has no {missing} weight", field=field)
        target = modules.get(name)
        # A layer that already carries PEFT adapters is checked by the layer it wraps.
        get_base_layer = getattr(target, "get_base_layer", None)
        if callable(get_base_layer):
            target = get_base_layer()
        if target is None:
            raise InvalidArgument(
                f"layer {where} does not exist in the base model's {component}; is it a LoRA for another architecture?",
                field=field,
            )
        source_down = pair["lora_A"]
        down = source_down.to(torch.float32).contiguous()
        up = pair["lora_B"].to(torch.float32).contiguous()
        _check_shapes(where, target, down, up, field)
        # Text encoders are injected by target_modules (UNet adapters by the state dict's keys): a layer the
        # config does not target would be silently dropped by a plain load, so it is refused instead.
        if component != "unet" and not check_target_module_exists(config, name):
            raise InvalidArgument(f"layer {where} is not among the adapter's target_modules", field=field)
        rank = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), name), config.r)
        alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), name), config.lora_alpha)
        if rank != down.shape[0]:
            raise InvalidArgument(
                f"layer {where} has rank {down.shape[0]} but the adapter config says {rank}", field=field
            )
        if kohya_alphas is not None:
            # kohya's own rule: a layer without an alpha has alpha = rank (sd-scripts' LoRAModule).
            alpha = kohya_alphas.get(id(source_down), float(rank))
        scale = alpha / math.sqrt(rank) if config.use_rslora else alpha / rank
        layers[name] = LoraLayer(down=down, up=up, scale=float(scale))
    return layers


def _check_shapes(where: str, target: torch.nn.Module, down: torch.Tensor, up: torch.Tensor, field: str) -> None:
    rank = down.shape[0]
    if isinstance(target, torch.nn.Linear):
        expected_down: tuple[int, ...] = (rank, target.in_features)
        expected_up: tuple[int, ...] = (target.out_features, rank)
    elif isinstance(target, torch.nn.Conv2d):
        expected_down = (rank, target.in_channels, *target.kernel_size)
        expected_up = (target.out_channels, rank, 1, 1)
    else:
        raise InvalidArgument(
            f"layer {where} is a {type(target).__name__}; LoRA layers must adapt a Linear or Conv2d layer",
            field=field,
        )
    if tuple(down.shape) != expected_down or tuple(up.shape) != expected_up:
        raise InvalidArgument(
            f"layer {where} does not match the base model: the LoRA has down {list(down.shape)} and up "
            f"{list(up.shape)}, the base {type(target).__name__} needs down {list(expected_down)} and up "
            f"{list(expected_up)}; is it a LoRA for another base architecture?",
            field=field,
        )
