"""Full-size single-file checkpoints (A1111 / ComfyUI layout) load offline with the configs shipped in the package.

The files are built from uninitialised full-size models (meta device, then `to_empty`, fp16) filled with a cheap
per-tensor pattern, written with `save_single_file`'s layout, and loaded with `load_base_pipeline` and no config
folder: diffusers' own `from_single_file` conversion is the judge, and every tensor must come back exactly.

SD 1.5 (a 2.1 GB file, ~15 s) runs in the default suite. SD 2.x 768-v (2.6 GB) and SDXL (6.9 GB, ~1 min, ~8 GB of
memory) run only with LIKENESS_FULLSIZE_TESTS=1 (`make test-fullsize`).
"""

from __future__ import annotations

import gc
import os
import shutil
import zlib
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from likeness.cli.main import main
from likeness.errors import InvalidArgument
from likeness.models.catalog import BaseModelCatalog
from likeness.models.inspect import inspect_model
from likeness.models.loading import detect_arch, load_base_pipeline, native_resolution
from likeness.models.single_file import single_file_state_dict, write_safetensors
from likeness.models.standard import (
    CONFIGS_DIR,
    STANDARD_NAMES,
    choose_standard,
    sd2_prediction_type,
    standard_config_dir,
)

FULLSIZE_ENV = "LIKENESS_FULLSIZE_TESTS"
needs_fullsize = pytest.mark.skipif(
    os.environ.get(FULLSIZE_ENV) != "1", reason=f"writes GBs of full-size SD 2.x / SDXL files: set {FULLSIZE_ENV}=1"
)
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


# ---- building full-size files cheaply -------------------------------------------------------------------------


def _pattern(key: str) -> tuple[float, float]:
    """Two values per tensor name: row 0 holds the second, the other rows the first. Swapped tensors, a wrong q/k/v
    split or a missing transpose all show."""
    digest = zlib.crc32(key.encode())
    return (digest % 997) / 997, 1 + (digest // 997 % 997) / 997


def _fill(key: str, tensor: torch.Tensor) -> None:
    rest, first = _pattern(key)
    tensor.fill_(rest)
    if tensor.ndim and tensor.shape[0] > 1:
        tensor[0].fill_(first)


def _matches(key: str, tensor: torch.Tensor) -> bool:
    rest, first = (torch.tensor(value, dtype=tensor.dtype) for value in _pattern(key))
    if tensor.ndim and tensor.shape[0] > 1:
        return bool((tensor[1:] == rest).all()) and bool((tensor[0] == first).all())
    return bool((tensor == rest).all())


def _components(name: str) -> dict[str, torch.nn.Module | None]:
    """The standard architecture `name`'s models, full size, fp16, filled with `_pattern`."""
    folder = standard_config_dir(name)
    with torch.device("meta"):
        models: dict[str, torch.nn.Module | None] = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder"))),
            "text_encoder_2": (
                CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(str(folder / "text_encoder_2")))
                if (folder / "text_encoder_2").is_dir()
                else None
            ),
        }
    for component, model in models.items():
        if model is not None:
            model = models[component] = model.to(torch.float16).to_empty(device="cpu")
            for key, tensor in model.state_dict().items():
                _fill(key, tensor)
    return models


def _write_fullsize(name: str, arch: str, path: Path) -> Path:
    models = _components(name)
    checkpoint = single_file_state_dict(arch=arch, **models)  # type: ignore[arg-type]
    write_safetensors(checkpoint, path, metadata={"format": "pt"})
    del checkpoint, models
    gc.collect()
    return path


def _check_round_trip(pipeline: StableDiffusionPipeline | StableDiffusionXLPipeline) -> int:
    compared = 0
    for component in COMPONENTS:
        model = getattr(pipeline, component, None)
        if model is None:
            continue
        for key, tensor in model.state_dict().items():
            assert tensor.dtype == torch.float16, (component, key)
            assert _matches(key, tensor), (component, key)
            compared += 1
    return compared


def _shapes(path: Path) -> dict[str, list[int]]:
    with safe_open(str(path), framework="pt") as checkpoint:
        return {key: list(checkpoint.get_slice(key).get_shape()) for key in checkpoint.keys()}  # noqa: SIM118


def _diffusers_model_type(shapes: dict[str, list[int]]) -> str:
    # diffusers' own classification of an original-layout checkpoint, from its keys and shapes only.
    return str(infer_diffusers_model_type({key: torch.empty(shape, device="meta") for key, shape in shapes.items()}))


# ---- the shipped configs ---------------------------------------------------------------------------------------


def test_shipped_configs_materialise_once_with_tokenizers(likeness_cache: Path) -> None:
    assert sorted(path.name for path in CONFIGS_DIR.iterdir() if path.is_dir()) == sorted(STANDARD_NAMES)
    folder = standard_config_dir("sdxl-base")
    assert standard_config_dir("sdxl-base") == folder
    assert not [path for path in folder.parent.iterdir() if path.name.startswith(".")]  # no temp folders left
    first = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
    second = CLIPTokenizer.from_pretrained(str(folder / "tokenizer_2"), local_files_only=True)
    assert first("a photo of sks dog").input_ids == [49406, 320, 1125, 539, 48136, 1929, 49407]
    assert (first.pad_token, second.pad_token, second.model_max_length) == ("<|endoftext|>", "!", 77)


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("v2-1_768-ema-pruned.safetensors", ("v_prediction", "name")),
        ("768-v-ema.safetensors", ("v_prediction", "name")),
        ("my-model_v-pred.safetensors", ("v_prediction", "name")),
        ("v2-1_512-ema-pruned.safetensors", ("epsilon", "name")),
        ("512-base-ema.safetensors", ("epsilon", "name")),
        ("illustration-sd21.safetensors", ("v_prediction", "default")),
    ],
)
def test_sd2_prediction_type_from_the_file_name(file_name: str, expected: tuple[str, str]) -> None:
    assert sd2_prediction_type(Path(file_name)) == expected


def test_standard_choice() -> None:
    path = Path("model.safetensors")
    assert choose_standard("sd2", path).name == "sd2-v"
    assert choose_standard("sd2", path, "epsilon").name == "sd2-base"
    assert choose_standard("sd15", path) == choose_standard("sd15", path, None)
    assert (choose_standard("sd15", path).prediction_type, choose_standard("sdxl", path).name) == (
        "epsilon",
        "sdxl-base",
    )
    assert choose_standard("sdxl", path, "v_prediction").reason == "explicit"
    with pytest.raises(InvalidArgument, match="unknown prediction type"):
        choose_standard("sd2", path, "sample")


# ---- bad input -------------------------------------------------------------------------------------------------


def test_unknown_architecture_names_the_file_and_the_supported_layouts(tmp_path: Path, capsys) -> None:
    # A Flux-style transformer checkpoint: none of the SD layouts.
    flux = write_safetensors(
        {"double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(2), "img_in.weight": torch.zeros(2, 2)},
        tmp_path / "flux1-dev.safetensors",
    )
    with pytest.raises(InvalidArgument, match="cannot tell the architecture") as raised:
        load_base_pipeline(flux)
    message = str(raised.value)
    assert str(flux) in message and "SD 1.x" in message and "SDXL" in message and "diffusers folder" in message
    assert main(["models", "import", str(flux)]) != 0
    assert str(flux) in capsys.readouterr().err


def test_truncated_single_file_names_the_file(tmp_path: Path) -> None:
    # inspect_model's truncation check is covered in test_models_import; this is the loader's own path.
    whole = write_safetensors(
        {"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(64, 64)},
        tmp_path / "whole.safetensors",
    )
    cut = tmp_path / "v1-5-pruned.safetensors"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InvalidArgument, match="download it again") as raised:
        load_base_pipeline(cut)
    assert str(cut) in str(raised.value)
    with pytest.raises(InvalidArgument, match="download it again"):
        load_base_pipeline(cut, arch="sd15")  # no detection: the shape check reads the header


# ---- full size -------------------------------------------------------------------------------------------------


def test_sd15_single_file_loads_offline_without_config(tmp_path: Path) -> None:
    path = _write_fullsize("sd15", "sd15", tmp_path / "v1-5-pruned-emaonly.safetensors")
    try:
        shapes = _shapes(path)
        assert _diffusers_model_type(shapes) == "v1"
        assert detect_arch(path) == "sd15" and native_resolution(path) == 512
        report = inspect_model(path)
        assert (report.arch, report.precision, report.resolution, report.standard_config) == (
            "sd15",
            "fp16",
            512,
            "sd15",
        )
        assert 1.05e9 < report.parameters < 1.08e9 and report.catalog_entry("sd15").endswith("|arch=sd15")

        pipeline = load_base_pipeline(path, torch_dtype=torch.float16)
        assert isinstance(pipeline, StableDiffusionPipeline)
        assert type(pipeline.scheduler).__name__ == "PNDMScheduler"
        assert pipeline.scheduler.config.prediction_type == "epsilon"
        assert pipeline.vae.config.scaling_factor == 0.18215
        assert pipeline.tokenizer("a photo of sks dog").input_ids == [49406, 320, 1125, 539, 48136, 1929, 49407]
        assert _check_round_trip(pipeline) == 1130
        del pipeline

        # A v-prediction fine-tune of SD 1.5: same configs, the scheduler's objective overridden.
        tuned = load_base_pipeline(path, torch_dtype=torch.float16, prediction_type="v_prediction")
        assert tuned.scheduler.config.prediction_type == "v_prediction"
        del tuned

        # The catalog completes the file with the shipped configs: the trainer reads its tokenizer from there.
        spec = BaseModelCatalog(f"sd15={path}", cache_dir=tmp_path / "cache").resolve("sd15")
        assert (spec.arch, spec.resolution, spec.is_tiny, spec.prediction_type) == ("sd15", 512, False, "epsilon")
        assert spec.config_dir is not None and (spec.config_dir / "tokenizer" / "vocab.json").is_file()
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.fullsize
@needs_fullsize
def test_sd2_v_single_file_loads_offline_without_config(tmp_path: Path, capsys) -> None:
    path = _write_fullsize("sd2-v", "sd2", tmp_path / "v2-1_768-ema-pruned.safetensors")
    try:
        shapes = _shapes(path)
        assert _diffusers_model_type(shapes) == "v2"
        # The layout of a real SD 2 file: all 24 OpenCLIP ViT-H layers and the text projection.
        assert shapes["cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight"] == [3072, 1024]
        assert shapes["cond_stage_model.model.text_projection"] == [1024, 1024]
        assert detect_arch(path) == "sd2" and native_resolution(path) == 768

        pipeline = load_base_pipeline(path, torch_dtype=torch.float16)
        assert isinstance(pipeline, StableDiffusionPipeline)
        assert type(pipeline.scheduler).__name__ == "DDIMScheduler"
        assert pipeline.scheduler.config.prediction_type == "v_prediction"
        assert pipeline.unet.config.sample_size == 96 and pipeline.unet.config.upcast_attention
        assert pipeline.tokenizer.pad_token == "!"
        assert _check_round_trip(pipeline) == 1306
        del pipeline

        # The same weights as a 512-base (epsilon) model, chosen explicitly.
        base = load_base_pipeline(path, torch_dtype=torch.float16, prediction_type="epsilon")
        assert base.scheduler.config.prediction_type == "epsilon" and base.unet.config.sample_size == 64
        del base
        assert main(["models", "import", str(path), "--prediction-type", "epsilon"]) == 0
        out = capsys.readouterr().out
        assert "resolution    512 px" in out and "|prediction_type=epsilon" in out
        assert main(["models", "import", str(path)]) == 0
        out = capsys.readouterr().out
        assert "prediction    v_prediction (guessed from the file name" in out and "sd2-v configs" in out
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.fullsize
@needs_fullsize
def test_sdxl_single_file_loads_offline_without_config(tmp_path: Path) -> None:
    path = _write_fullsize("sdxl-base", "sdxl", tmp_path / "sd_xl_base_1.0.safetensors")
    try:
        shapes = _shapes(path)
        assert _diffusers_model_type(shapes) == "xl_base"
        assert shapes["model.diffusion_model.label_emb.0.0.weight"] == [1280, 2816]
        assert shapes["conditioner.embedders.1.model.text_projection"] == [1280, 1280]
        assert shapes["conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight"] == [3840, 1280]
        assert detect_arch(path) == "sdxl" and native_resolution(path) == 1024
        report = inspect_model(path)
        assert (report.arch, report.resolution, report.standard_config) == ("sdxl", 1024, "sdxl-base")
        assert 3.45e9 < report.parameters < 3.5e9

        pipeline = load_base_pipeline(path, torch_dtype=torch.float16)
        assert isinstance(pipeline, StableDiffusionXLPipeline)
        assert type(pipeline.scheduler).__name__ == "EulerDiscreteScheduler"
        assert pipeline.scheduler.config.prediction_type == "epsilon"
        assert (pipeline.vae.config.scaling_factor, pipeline.vae.config.force_upcast) == (0.13025, True)
        assert pipeline.tokenizer_2.pad_token == "!"
        assert _check_round_trip(pipeline) == 2641
        del pipeline
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.fullsize
@needs_fullsize
def test_fullsize_fp16_variant_folder_loads_offline(tmp_path: Path) -> None:
    # The usual download: a diffusers folder with only `*.fp16.safetensors` weights (half the disk).
    folder = tmp_path / "stable-diffusion-v1-5"
    shutil.copytree(standard_config_dir("sd15"), folder)
    for component, model in _components("sd15").items():
        if model is not None:
            model.save_pretrained(str(folder / component), variant="fp16", safe_serialization=True)
    assert sorted(path.name for path in (folder / "unet").glob("*.safetensors")) == [
        "diffusion_pytorch_model.fp16.safetensors"
    ]
    report = inspect_model(folder)
    assert (report.arch, report.variant, report.precision, report.resolution) == ("sd15", "fp16", "fp16", 512)
    pipeline = load_base_pipeline(folder, torch_dtype=torch.float16)  # the variant is found, not named
    assert isinstance(pipeline, StableDiffusionPipeline) and _check_round_trip(pipeline) == 1130
