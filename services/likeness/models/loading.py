"""Loading base Stable Diffusion pipelines from local files: safetensors only, never the network.

A base model is either a diffusers folder (`model_index.json` plus one folder per component) or a single
original-layout `.safetensors` checkpoint (A1111 / ComfyUI style). Single files carry weights only: a full-size
SD 1.x, 2.x or XL file is completed by the standard configs shipped in the package (`likeness.models.standard`;
SD 2.x's 512-base or 768-v by `prediction_type`); any other (a tiny or resized model) needs `config_dir`, a local
diffusers folder whose configs, tokenizers and scheduler match it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import safe_open

from likeness.errors import InvalidArgument, NotFound
from likeness.models.arch import ARCHS, TINY_RESOLUTION_LIMIT, ArchInfo, arch_info, check_arch
from likeness.models.standard import (
    SUPPORTED_LAYOUTS,
    StandardChoice,
    check_matches_standard,
    check_prediction_type,
    choose_standard,
    standard_config_dir,
    standard_resolution,
)

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

# Re-exported: callers find the architecture facts next to the loader.
__all__ = [
    "ARCHS",
    "TINY_RESOLUTION_LIMIT",
    "ArchInfo",
    "arch_info",
    "check_arch",
    "check_safe_weights_path",
    "detect_arch",
    "disable_progress_bars",
    "load_base_pipeline",
    "native_resolution",
    "pipeline_class",
    "single_file_standard",
]
PICKLE_SUFFIXES = frozenset({".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle"})
SAFE_SUFFIX = ".safetensors"
# SD 2.x conditions on OpenCLIP ViT-H, whose hidden size (and so the UNet's cross-attention width) is 1024.
SD2_CROSS_ATTENTION_DIM = 1024

CONVERSION_HINT = (
    "convert it once, in an isolated environment you trust, e.g. "
    "`safetensors.torch.save_file(torch.load(PATH, weights_only=True)['state_dict'], OUT.safetensors)` for a "
    "single checkpoint, or `DiffusionPipeline.from_pretrained(DIR).save_pretrained(OUT, safe_serialization=True)` "
    "for a diffusers folder"
)


def pipeline_class(arch: str) -> type[DiffusionPipeline]:
    """StableDiffusionXLPipeline for "sdxl", StableDiffusionPipeline for "sd15" and "sd2"."""
    # diffusers is imported only where a pipeline is built, so that reading configs stays cheap.
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    # diffusers' pipeline classes lose their DiffusionPipeline base under mypy.
    return StableDiffusionXLPipeline if check_arch(arch) == "sdxl" else StableDiffusionPipeline  # type: ignore[return-value]


def _pickle_refusal(path: Path, field: str | None) -> InvalidArgument:
    return InvalidArgument(
        f"{path} holds pickle weights; Likeness loads only .safetensors because unpickling a file can run "
        f"arbitrary code. To use it, {CONVERSION_HINT}",
        field=field,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InvalidArgument(f"cannot read {path}: {error}") from error


def _component_folders(folder: Path) -> list[Path]:
    index = _read_json(folder / "model_index.json")
    names = [
        name
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and value and value[0] is not None
    ]
    return [folder / name for name in names if (folder / name).is_dir()]


def check_safe_weights_path(path: str | Path, *, field: str | None = None) -> Path:
    """Return `path` if it is a `.safetensors` file or a diffusers folder with safetensors weights.

    Raises `InvalidArgument` for pickle checkpoints (`.ckpt`, `.bin`, `.pt`, `.pth`, `.pkl`), for a diffusers
    folder in which some component has only pickle weights, and for any other kind of file.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise InvalidArgument(
                f"{path} is not a diffusers pipeline folder (no model_index.json); give a diffusers folder or a "
                "single .safetensors checkpoint",
                field=field,
            )
        for component in _component_folders(path):
            files = [item for item in component.iterdir() if item.is_file()]
            has_pickle = any(item.suffix in PICKLE_SUFFIXES for item in files)
            has_safetensors = any(item.suffix == SAFE_SUFFIX for item in files)
            if has_pickle and not has_safetensors:
                raise _pickle_refusal(component, field)
        return path
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise _pickle_refusal(path, field)
    if path.suffix.lower() != SAFE_SUFFIX:
        raise InvalidArgument(
            f"{path} is neither a diffusers folder nor a .safetensors checkpoint; only those can be loaded",
            field=field,
        )
    return path


#: A weights file name without `.safetensors`: `model`, `model.fp16`, `model-00001-of-00002`, `model.fp16-00001-of-00002`.
_WEIGHTS_STEM = re.compile(r"^(?P<name>[^.]+)(?:\.(?P<variant>[A-Za-z0-9_]+))?(?:-\d+-of-\d+)?$")


def file_variant(file: Path) -> str | None:
    """The weights variant a `.safetensors` file belongs to ("fp16" for `model.fp16.safetensors` and its shards);
    "" for plain weights; None for a file that is not named as weights."""
    match = _WEIGHTS_STEM.match(file.name[: -len(SAFE_SUFFIX)]) if file.name.endswith(SAFE_SUFFIX) else None
    return None if match is None else (match["variant"] or "")


def _weight_variants(component: Path) -> tuple[bool, set[str]]:
    """(has plain safetensors weights, the variants it has: "fp16" for `model.fp16.safetensors`, ...)."""
    found = {file_variant(item) for item in component.glob(f"*{SAFE_SUFFIX}")} - {None}
    return "" in found, {variant for variant in found if variant}


def weights_variant(folder: str | Path, requested: str | None = None) -> str | None:
    """The weights variant to load a diffusers folder with: `requested` (InvalidArgument naming the folder when
    no component has it), else the variant a download holds without plain weights (an fp16-only download, the
    usual way to halve the disk), else None (the plain weights)."""
    folder = Path(folder)
    found = {component: _weight_variants(component) for component in _component_folders(folder)}
    everywhere = set().union(*(variants for _, variants in found.values())) if found else set()
    if requested:
        if requested not in everywhere:
            have = ", ".join(sorted(everywhere)) or "none"
            raise InvalidArgument(
                f"{folder} has no {requested!r} weights variant (variants there: {have}); drop variant= or "
                f"download that variant",
                field="base_model",
            )
        return requested
    lacking_plain = {variant for plain, variants in found.values() if not plain for variant in variants}
    if len(lacking_plain) > 1:
        raise InvalidArgument(
            f"{folder} holds only variant weights ({', '.join(sorted(lacking_plain))}) in some components; name "
            "the one to load with variant=",
            field="base_model",
        )
    return next(iter(lacking_plain), None)


def _arch_from_folder(folder: Path) -> str:
    index = _read_json(folder / "model_index.json")
    class_name = str(index.get("_class_name", ""))
    unet_config_path = folder / "unet" / "config.json"
    unet_config = _read_json(unet_config_path) if unet_config_path.is_file() else {}
    if "text_encoder_2" in index or "XL" in class_name or unet_config.get("addition_embed_type") == "text_time":
        return "sdxl"
    if unet_config.get("cross_attention_dim") == SD2_CROSS_ATTENTION_DIM:
        return "sd2"
    if class_name.startswith("StableDiffusion") or unet_config:
        return "sd15"
    raise InvalidArgument(f"{folder} is not a Stable Diffusion 1.x, 2.x or XL pipeline (class {class_name!r})")


def _arch_from_single_file(path: Path) -> str | None:
    try:
        with safe_open(str(path), framework="pt") as checkpoint:
            keys = list(checkpoint.keys())
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise InvalidArgument(
            f"{path} is not a readable safetensors file ({error}); it may be cut short or damaged: download it again",
            field="base_model",
        ) from error
    if any(key.startswith("conditioner.embedders.") for key in keys):
        return "sdxl"
    if any(key.startswith("cond_stage_model.model.") for key in keys):
        return "sd2"
    if any(key.startswith("cond_stage_model.transformer.") for key in keys):
        return "sd15"
    return None


def detect_arch(path: str | Path, *, config_dir: str | Path | None = None) -> str:
    """ "sd15", "sd2" or "sdxl", from a diffusers folder's configs or a single file's key layout.

    For a single file whose keys do not tell (e.g. UNet-only), the architecture of `config_dir` is used.
    """
    path = Path(path)
    if not path.exists():
        raise NotFound(f"base model {path} does not exist")
    if path.is_dir():
        return _arch_from_folder(path)
    arch = _arch_from_single_file(path)
    if arch is not None:
        return arch
    if config_dir is not None:
        return detect_arch(config_dir)
    raise InvalidArgument(
        f"cannot tell the architecture of {path} from its keys: they match none of the single-file layouts Likeness "
        f"reads, {SUPPORTED_LAYOUTS}. A LoRA, VAE or UNet-only file is not a base model; for another layout, convert "
        "it to a diffusers folder, or pass the architecture explicitly with a config_dir",
        field="base_model",
    )


def single_file_standard(
    path: str | Path, *, arch: str | None = None, prediction_type: str | None = None
) -> StandardChoice:
    """The shipped config a single file without `config_dir` loads with (`standard.choose_standard`), after
    checking that the file's tensors have that architecture's shapes (InvalidArgument naming the file if not)."""
    path = Path(path)
    arch = check_arch(arch) if arch is not None else detect_arch(path)
    choice = choose_standard(arch, path, prediction_type)
    check_matches_standard(path, choice.name)
    return choice


def native_resolution(
    path: str | Path, *, config_dir: str | Path | None = None, prediction_type: str | None = None
) -> int | None:
    """The image size a diffusers folder was built for (UNet sample size x VAE downsampling), if known.

    For a single file, the resolution of `config_dir`; without one, that of the shipped standard config it loads
    with (SD 2.x: 768 for v_prediction, 512 for epsilon); None when neither tells.
    """
    path = Path(path)
    folder = path if path.is_dir() else (Path(config_dir) if config_dir is not None else None)
    if folder is None:
        arch = _arch_from_single_file(path)
        return None if arch is None else standard_resolution(choose_standard(arch, path, prediction_type).name)
    unet_config_path = folder / "unet" / "config.json"
    vae_config_path = folder / "vae" / "config.json"
    if not (unet_config_path.is_file() and vae_config_path.is_file()):
        return None
    sample_size = _read_json(unet_config_path).get("sample_size")
    vae_levels = len(_read_json(vae_config_path).get("block_out_channels", [])) or 4
    if not isinstance(sample_size, int):
        return None
    return sample_size * 2 ** (vae_levels - 1)


def disable_progress_bars() -> None:
    """Silence diffusers' and transformers' tqdm bars (HF_HUB_DISABLE_PROGRESS_BARS does not reach them)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def load_base_pipeline(
    source: str | Path,
    *,
    arch: str | None = None,
    config_dir: str | Path | None = None,
    torch_dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    variant: str | None = None,
    prediction_type: str | None = None,
) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """Load a base pipeline from a local diffusers folder or single `.safetensors` file, offline.

    `arch` is detected when omitted; so is the weights `variant` of a folder that holds only variant weights
    (`weights_variant`). A single file without `config_dir` loads with the shipped standard config of its
    architecture (`single_file_standard`: SD 2.x 768-v or 512-base by `prediction_type`, else guessed from the
    file name); a tiny or custom one needs `config_dir`, a local diffusers folder of the same architecture (for a
    tiny model: the folder the file was exported from, whose VAE config holds the calibrated scaling factor).
    `prediction_type` ("epsilon" | "v_prediction"), when given, also overrides the scheduler's of any source.
    SD 1.x/2.x safety checkers and the SDXL watermarker are not loaded.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFound(f"base model {path} does not exist", field="base_model")
    check_safe_weights_path(path, field="base_model")
    check_prediction_type(prediction_type)
    arch = check_arch(arch) if arch is not None else detect_arch(path, config_dir=config_dir)
    if path.is_file() and config_dir is None:
        choice = single_file_standard(path, arch=arch, prediction_type=prediction_type)
        config_dir, prediction_type = standard_config_dir(choice.name), choice.prediction_type
    cls = pipeline_class(arch)
    extra: dict[str, Any] = (
        {"add_watermarker": False}
        if arch == "sdxl"
        else {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    )
    disable_progress_bars()
    try:
        if path.is_dir():
            pipeline = cls.from_pretrained(
                str(path),
                torch_dtype=torch_dtype,
                use_safetensors=True,
                local_files_only=True,
                variant=weights_variant(path, variant),
                **extra,
            )
        else:
            pipeline = _load_single_file(cls, path, Path(config_dir) if config_dir else None, torch_dtype, extra)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise InvalidArgument(f"cannot load base model {path} as {arch}: {error}", field="base_model") from error
    scheduler = pipeline.scheduler
    if prediction_type is not None and scheduler.config.prediction_type != prediction_type:
        pipeline.scheduler = type(scheduler).from_config(scheduler.config, prediction_type=prediction_type)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def _load_single_file(
    cls: type[DiffusionPipeline],
    path: Path,
    config_dir: Path | None,
    torch_dtype: torch.dtype | None,
    extra: dict[str, Any],
) -> DiffusionPipeline:
    if config_dir is None:  # load_base_pipeline resolves the shipped configs first
        raise InvalidArgument(f"{path} is a single-file checkpoint: loading it needs config_dir", field="config_dir")
    if not (config_dir / "model_index.json").is_file():
        raise NotFound(f"config_dir {config_dir} is not a diffusers folder (no model_index.json)", field="config_dir")
    return cls.from_single_file(
        str(path), config=str(config_dir), torch_dtype=torch_dtype, local_files_only=True, **extra
    )
