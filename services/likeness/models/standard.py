"""The component configs of the standard architectures, shipped in the package, so that a single-file checkpoint
(A1111 / ComfyUI layout) loads offline without a diffusers folder beside it.

`configs/<name>/` holds the published JSON configs of each architecture's reference repository:

- `sd15`: runwayml/stable-diffusion-v1-5 (CLIP ViT-L/14, PNDM, epsilon, 512 px)
- `sd2-base`: stabilityai/stable-diffusion-2-1-base (OpenCLIP ViT-H/14, PNDM, epsilon, 512 px)
- `sd2-v`: stabilityai/stable-diffusion-2-1 (OpenCLIP ViT-H/14, DDIM, v_prediction, 768 px, upcast attention)
- `sdxl-base`: stabilityai/stable-diffusion-xl-base-1.0 (CLIP ViT-L/14 + OpenCLIP ViT-bigG/14, Euler, epsilon,
  1024 px, VAE scaling factor 0.13025)

Tokenizer vocabularies are not shipped: `standard_config_dir` writes a complete diffusers config folder (the JSON
plus CLIP's `vocab.json` / `merges.txt` from `likeness.models.tokenizer`) into the Likeness cache, atomically and
once per content version. Reading configs and headers needs neither torch nor diffusers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from likeness.errors import FailedPrecondition, InvalidArgument
from likeness.models.cache import likeness_cache_dir

CONFIGS_DIR = Path(__file__).with_name("configs")
STANDARD_NAMES: tuple[str, ...] = ("sd15", "sd2-base", "sd2-v", "sdxl-base")
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction")
#: Bump when the materialised folder's layout changes (the shipped JSON is hashed anyway).
FOLDER_FORMAT_VERSION = 1
_TOKENIZER_FOLDERS = ("tokenizer", "tokenizer_2")

#: The single-file layouts Likeness reads, as an error message names them.
SUPPORTED_LAYOUTS = (
    "the original (CompVis / A1111 / ComfyUI) layout of SD 1.x (`model.diffusion_model.*`, `first_stage_model.*`, "
    "`cond_stage_model.transformer.*`), SD 2.x (`cond_stage_model.model.*`, OpenCLIP ViT-H) and SDXL base "
    "(`conditioner.embedders.0.transformer.*` + `conditioner.embedders.1.model.*`)"
)

# SD 2.x 768-v vs 512-base cannot be told from the weights: the same shapes, a different training objective.
_V_NAME = re.compile(r"768|(?:^|[-_. ])v(?:[-_. ]|$)|v[-_]?pred", re.IGNORECASE)
_BASE_NAME = re.compile(r"512|base", re.IGNORECASE)


@dataclass(frozen=True)
class StandardChoice:
    """Which shipped config a single file loads with, and why."""

    name: str
    prediction_type: str
    # "explicit" (given by the caller), "name" (guessed from the file name), "default" (SD 2.x without a hint:
    # v_prediction) or "config" (the architecture's only published objective).
    reason: str


def check_prediction_type(prediction_type: str | None, *, field: str = "prediction_type") -> str | None:
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise InvalidArgument(
            f"unknown prediction type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}", field=field
        )
    return prediction_type


def sd2_prediction_type(path: Path) -> tuple[str, str]:
    """(prediction type, reason) for an SD 2.x single file without an explicit one, from its name.

    A name with "768", a "v" token ("-v", "_v", "v-pred") is v_prediction; else one with "512" or "base" is
    epsilon; else v_prediction, the objective of the flagship 768 px SD 2.0 / 2.1 checkpoints (what A1111 assumes
    for SD 2 files whose test pass finds v-parameterisation).
    """
    stem = path.name.removesuffix(".safetensors")
    if _V_NAME.search(stem):
        return "v_prediction", "name"
    if _BASE_NAME.search(stem):
        return "epsilon", "name"
    return "v_prediction", "default"


def choose_standard(arch: str, path: Path, prediction_type: str | None = None) -> StandardChoice:
    """The shipped config of `arch` for the single file `path`. SD 2.x: `prediction_type` picks 512-base (epsilon)
    or 768-v (v_prediction), guessed from the file name when None (`sd2_prediction_type`). SD 1.x and SDXL have
    one config each; an explicit `prediction_type` overrides their scheduler's (v-prediction fine-tunes)."""
    check_prediction_type(prediction_type)
    if arch == "sd2":
        if prediction_type is not None:
            chosen, reason = prediction_type, "explicit"
        else:
            chosen, reason = sd2_prediction_type(path)
        return StandardChoice("sd2-v" if chosen == "v_prediction" else "sd2-base", chosen, reason)
    name = {"sd15": "sd15", "sdxl": "sdxl-base"}.get(arch)
    if name is None:
        raise InvalidArgument(f"no standard config for architecture {arch!r}", field="arch")
    if prediction_type is not None:
        return StandardChoice(name, prediction_type, "explicit")
    return StandardChoice(name, str(read_config(name, "scheduler/scheduler_config.json")["prediction_type"]), "config")


def read_config(name: str, relative: str) -> dict[str, Any]:
    """One shipped JSON file, e.g. `read_config("sd15", "unet/config.json")`."""
    path = CONFIGS_DIR / name / relative
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FailedPrecondition(f"the shipped config {path} is missing or damaged; reinstall Likeness") from error
    return data


def standard_resolution(name: str) -> int:
    """The native image size of a shipped config (UNet sample size x VAE downsampling)."""
    sample_size = int(read_config(name, "unet/config.json")["sample_size"])
    levels = len(read_config(name, "vae/config.json")["block_out_channels"])
    return sample_size * 2 ** (levels - 1)


def _shipped_files(name: str) -> list[Path]:
    folder = CONFIGS_DIR / name
    if name not in STANDARD_NAMES or not (folder / "model_index.json").is_file():
        raise FailedPrecondition(f"the shipped config folder {folder} is missing; reinstall Likeness")
    return sorted(path for path in folder.rglob("*.json") if path.is_file())


def _content_key(name: str, files: list[Path]) -> str:
    digest = hashlib.sha256(f"{FOLDER_FORMAT_VERSION}\n".encode())
    for path in files:
        digest.update(path.relative_to(CONFIGS_DIR / name).as_posix().encode() + b"\n" + path.read_bytes())
    return digest.hexdigest()[:12]


def standard_config_dir(name: str) -> Path:
    """A complete diffusers config folder (no weights) for the shipped config `name`, in the Likeness cache.

    Written once per content version into a private temp folder and renamed into place, so concurrent processes
    never see a half-written folder.
    """
    from likeness.models.tokenizer import TOKENIZER_FILES, clip_tokenizer_dir

    files = _shipped_files(name)
    root = likeness_cache_dir() / "single-file-configs"
    final = root / f"{name}-{_content_key(name, files)}"
    if (final / "model_index.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    vocabulary = clip_tokenizer_dir()
    temp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.tmp-"))
    try:
        for path in files:
            target = temp / path.relative_to(CONFIGS_DIR / name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        for folder in _TOKENIZER_FOLDERS:
            if (temp / folder).is_dir():
                for file_name in TOKENIZER_FILES:
                    shutil.copyfile(vocabulary / file_name, temp / folder / file_name)
        try:
            os.rename(temp, final)
        except OSError:
            # Another process renamed its identical copy first; keep theirs.
            if not (final / "model_index.json").is_file():
                raise FailedPrecondition(f"{final} exists but is incomplete; remove it so it can be rebuilt") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final


# ---- does a file's weights fit a shipped config? ----------------------------------------------------------------


def _header_shapes(path: Path) -> dict[str, list[int]]:
    try:
        with safe_open(str(path), framework="pt") as checkpoint:
            return {key: list(checkpoint.get_slice(key).get_shape()) for key in checkpoint.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise InvalidArgument(f"{path} is not a readable safetensors file ({error}); download it again") from error


def _layer_count(shapes: dict[str, list[int]], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(match[1]) for key in shapes if (match := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def _expected_shapes(name: str, shapes: dict[str, list[int]]) -> list[tuple[str, object, object]]:
    """(what, found, expected) for the tell-tale tensors of the architecture `name`."""
    unet = read_config(name, "unet/config.json")
    channels = unet["block_out_channels"]
    layers = unet["layers_per_block"]
    checks: list[tuple[str, object, object]] = []

    def shape(key: str) -> object:
        return shapes.get(key, "missing")

    u = "model.diffusion_model."
    checks.append(
        (f"{u}input_blocks.0.0.weight", shape(f"{u}input_blocks.0.0.weight"), [channels[0], unet["in_channels"], 3, 3])
    )
    checks.append(
        (f"{u}input_blocks.* (count)", _layer_count(shapes, f"{u}input_blocks."), len(channels) * (layers + 1))
    )
    cross = sorted({value[1] for key, value in shapes.items() if key.endswith("attn2.to_k.weight") and len(value) == 2})
    checks.append((f"{u}*.attn2.to_k.weight (context width)", cross or "missing", [unet["cross_attention_dim"]]))
    mid_proj = shapes.get(f"{u}middle_block.1.proj_in.weight")
    linear = bool(unet.get("use_linear_projection"))
    checks.append(
        (
            f"{u}middle_block.1.proj_in.weight",
            mid_proj if mid_proj is not None else "missing",
            [channels[-1], channels[-1]] if linear else [channels[-1], channels[-1], 1, 1],
        )
    )
    depth = unet.get("transformer_layers_per_block") or 1
    checks.append(
        (
            f"{u}middle_block.1.transformer_blocks.* (count)",
            _layer_count(shapes, f"{u}middle_block.1.transformer_blocks."),
            depth[-1] if isinstance(depth, list) else depth,
        )
    )
    if unet.get("addition_embed_type") == "text_time":
        checks.append(
            (
                f"{u}label_emb.0.0.weight",
                shape(f"{u}label_emb.0.0.weight"),
                [channels[0] * 4, unet["projection_class_embeddings_input_dim"]],
            )
        )
    vae = read_config(name, "vae/config.json")
    vae_conv_in = "first_stage_model.encoder.conv_in.weight"
    checks.append((vae_conv_in, shape(vae_conv_in), [vae["block_out_channels"][0], vae["in_channels"], 3, 3]))
    encoders = (
        [("conditioner.embedders.0.transformer.", "text_encoder"), ("conditioner.embedders.1.model.", "text_encoder_2")]
        if name.startswith("sdxl")
        else [
            ("cond_stage_model.model." if name.startswith("sd2") else "cond_stage_model.transformer.", "text_encoder")
        ]
    )
    for prefix, folder in encoders:
        text = read_config(name, f"{folder}/config.json")
        if prefix.endswith(".model."):  # OpenCLIP layout
            embedding, count_prefix = f"{prefix}token_embedding.weight", f"{prefix}transformer.resblocks."
        else:
            embedding = f"{prefix}text_model.embeddings.token_embedding.weight"
            count_prefix = f"{prefix}text_model.encoder.layers."
        checks.append((embedding, shape(embedding), [text["vocab_size"], text["hidden_size"]]))
        found = _layer_count(shapes, count_prefix)
        expected = text["num_hidden_layers"]
        # SD 2.x files hold all 24 OpenCLIP layers; SD 2 conditions on the penultimate one, diffusers keeps 23.
        if name.startswith("sd2") and found == expected + 1:
            found = expected
        checks.append((f"{count_prefix}* (count)", found, expected))
    return checks


def check_matches_standard(path: Path, name: str) -> None:
    """InvalidArgument naming `path` when its tensors do not have the shapes of the shipped config `name` (a
    pruned, resized or tiny model): such a file loads only with a config folder of its own."""
    shapes = _header_shapes(path)
    mismatches = [
        f"{what}: {found} (expected {expected})"
        for what, found, expected in _expected_shapes(name, shapes)
        if found != expected
    ]
    if mismatches:
        raise InvalidArgument(
            f"{path} does not have the shapes of the standard {name} architecture ({'; '.join(mismatches[:3])}"
            f"{'; ...' if len(mismatches) > 3 else ''}); if it is a resized or custom model, give a diffusers folder "
            "with its configs (config_dir / catalog option config=DIR / `likeness models import --config DIR`)",
            field="base_model",
        )
