"""Loading base models: safetensors only, architecture detection, single files with a config folder."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

from likeness.errors import InvalidArgument, NotFound
from likeness.models.loading import (
    arch_info,
    check_safe_weights_path,
    detect_arch,
    load_base_pipeline,
    native_resolution,
)
from likeness.models.single_file import save_single_file
from likeness.models.tiny import create_tiny_pipeline


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth", ".pkl"])
def test_pickle_checkpoints_are_refused(tmp_path: Path, suffix: str) -> None:
    checkpoint = tmp_path / f"model{suffix}"
    checkpoint.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(InvalidArgument, match=r"only \.safetensors because unpickling a file can run arbitrary code"):
        check_safe_weights_path(checkpoint)
    with pytest.raises(InvalidArgument, match="convert it once") as refused:
        load_base_pipeline(checkpoint)
    assert str(checkpoint) in refused.value.message


def test_folder_with_only_pickle_weights_is_refused(tmp_path: Path, saved_tiny: Callable[[str], Path]) -> None:
    folder = shutil.copytree(saved_tiny("sd15"), tmp_path / "pickled")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").rename(folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(InvalidArgument, match="pickle weights") as refused:
        load_base_pipeline(folder)
    assert str(folder / "unet") in refused.value.message
    assert check_safe_weights_path(saved_tiny("sd15")) == saved_tiny("sd15")


def test_missing_path_is_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "sd15"
    with pytest.raises(NotFound, match=re.escape(str(missing))):
        load_base_pipeline(missing)


def test_other_files_are_refused(tmp_path: Path) -> None:
    notes = tmp_path / "model.txt"
    notes.write_text("hello")
    with pytest.raises(InvalidArgument, match=r"neither a diffusers folder nor a \.safetensors"):
        check_safe_weights_path(notes)
    with pytest.raises(InvalidArgument, match=r"no model_index\.json"):
        check_safe_weights_path(tmp_path)


def test_detect_arch_of_folders(tmp_path: Path, saved_tiny: Callable[[str], Path]) -> None:
    assert detect_arch(saved_tiny("sd15")) == "sd15"
    assert detect_arch(saved_tiny("sdxl")) == "sdxl"
    # An SD 2.x folder is told apart by its 1024-wide (OpenCLIP ViT-H) cross-attention.
    sd2 = tmp_path / "sd2"
    (sd2 / "unet").mkdir(parents=True)
    (sd2 / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (sd2 / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": 1024, "sample_size": 96}))
    assert detect_arch(sd2) == "sd2"


@pytest.mark.parametrize(
    ("key", "arch"),
    [
        ("cond_stage_model.transformer.text_model.embeddings.position_embedding.weight", "sd15"),
        ("cond_stage_model.model.token_embedding.weight", "sd2"),
        ("conditioner.embedders.1.model.positional_embedding", "sdxl"),
    ],
)
def test_detect_arch_of_single_files(tmp_path: Path, key: str, arch: str) -> None:
    checkpoint = tmp_path / "model.safetensors"
    save_file({key: torch.zeros(1), "model.diffusion_model.out.2.bias": torch.zeros(1)}, str(checkpoint))
    assert detect_arch(checkpoint) == arch


def test_single_file_without_telling_keys_needs_config_dir(tmp_path: Path, saved_tiny: Callable[[str], Path]) -> None:
    checkpoint = tmp_path / "unet-only.safetensors"
    save_file({"model.diffusion_model.out.2.bias": torch.zeros(1)}, str(checkpoint))
    with pytest.raises(InvalidArgument, match="cannot tell the architecture"):
        detect_arch(checkpoint)
    assert detect_arch(checkpoint, config_dir=saved_tiny("sdxl")) == "sdxl"


def test_load_folders(saved_tiny: Callable[[str], Path]) -> None:
    sd15 = load_base_pipeline(saved_tiny("sd15"))
    assert isinstance(sd15, StableDiffusionPipeline)
    assert sd15.safety_checker is None
    sdxl = load_base_pipeline(saved_tiny("sdxl"), torch_dtype=torch.float32, device="cpu")
    assert isinstance(sdxl, StableDiffusionXLPipeline)
    assert sdxl.unet.dtype == torch.float32
    assert native_resolution(saved_tiny("sdxl")) == 64


def test_single_file_round_trip(tmp_path: Path, saved_tiny: Callable[[str], Path]) -> None:
    folder = saved_tiny("sd15")
    original = load_base_pipeline(folder)
    checkpoint = save_single_file(original, tmp_path / "tiny-sd15.safetensors")
    assert detect_arch(checkpoint) == "sd15"

    # Without config_dir the shipped full-size SD 1.5 configs are tried; a tiny file's shapes do not fit them.
    with pytest.raises(InvalidArgument, match="does not have the shapes of the standard sd15") as raised:
        load_base_pipeline(checkpoint)
    assert str(checkpoint) in str(raised.value) and "config_dir" in str(raised.value)
    loaded = load_base_pipeline(checkpoint, config_dir=folder)
    assert isinstance(loaded, StableDiffusionPipeline)
    for component in ("unet", "vae", "text_encoder"):
        expected = getattr(original, component).state_dict()
        actual = getattr(loaded, component).state_dict()
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[key], actual[key]) for key in expected), component

    def image(pipeline: StableDiffusionPipeline) -> np.ndarray:
        generator = torch.Generator().manual_seed(0)
        return pipeline("a photo of sks dog", num_inference_steps=2, generator=generator, output_type="np").images

    # Same weights; only memory alignment (and so float rounding in matmuls) may differ.
    np.testing.assert_allclose(image(loaded), image(original), atol=1e-4)


def test_tiny_sdxl_single_file_export_is_refused(tmp_path: Path) -> None:
    # diffusers tells SDXL's encoders apart by their width; the tiny SDXL's are equal.
    with pytest.raises(InvalidArgument, match="different widths"):
        save_single_file(create_tiny_pipeline("sdxl"), tmp_path / "sdxl.safetensors")


def test_arch_info() -> None:
    assert arch_info("sd15").default_resolution == 512
    assert arch_info("sd2").default_resolution == 768
    sdxl = arch_info("sdxl")
    assert (sdxl.default_resolution, sdxl.two_text_encoders) == (1024, True)
    assert sdxl.min_resolution < sdxl.default_resolution < sdxl.max_resolution
    tiny = arch_info("sd15", tiny=True)
    assert (tiny.default_resolution, tiny.two_text_encoders) == (64, False)
    with pytest.raises(InvalidArgument, match="unknown architecture"):
        arch_info("flux")
