"""Weights variants: a diffusers folder holding only fp16 weights (`*.fp16.safetensors`, the usual download to
halve the disk) loads without options, `variant=` picks a variant next to the plain weights, and a variant that
is not there is INVALID_ARGUMENT naming the folder and the variants it has."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from likeness.errors import InvalidArgument
from likeness.models.catalog import BaseModelCatalog
from likeness.models.loading import load_base_pipeline, weights_variant


@pytest.fixture(scope="module")
def fp16_folders(saved_tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a folder with fp16 weights only, a folder with plain and fp16 weights), from the tiny SD 1.x model."""
    plain = saved_tiny("sd15")
    pipeline = load_base_pipeline(plain, arch="sd15")
    only = tmp_path_factory.mktemp("fp16-only")
    pipeline.to(torch.float16).save_pretrained(only, variant="fp16", safe_serialization=True)
    both = tmp_path_factory.mktemp("plain-and-fp16")
    pipeline.to(torch.float32).save_pretrained(both, safe_serialization=True)
    with torch.no_grad():  # the fp16 variant differs, so a test can tell which files were read
        pipeline.unet.conv_out.bias += 1.0
    pipeline.to(torch.float16).save_pretrained(both, variant="fp16", safe_serialization=True)
    assert not list((only / "unet").glob("diffusion_pytorch_model.safetensors"))
    return only, both


def test_an_fp16_only_download_loads_without_options(fp16_folders, tmp_path) -> None:
    only, _ = fp16_folders
    assert weights_variant(only) == "fp16"
    catalog = BaseModelCatalog(f"fp={only}", cache_dir=tmp_path)
    assert catalog.resolve("fp").variant == "fp16"
    pipeline = catalog.load("fp", dtype=torch.float32)
    assert pipeline.unet.dtype == torch.float32  # loaded from the fp16 files, then cast as asked


def test_variant_picks_next_to_the_plain_weights(fp16_folders, tmp_path) -> None:
    _, both = fp16_folders
    assert weights_variant(both) is None  # plain weights win unless asked
    catalog = BaseModelCatalog(f"plain={both},half={both}|variant=fp16", cache_dir=tmp_path)
    assert catalog.resolve("half").variant == "fp16" and catalog.resolve("plain").variant is None
    plain_bias = catalog.load("plain").unet.conv_out.bias
    half_bias = catalog.load("half").unet.conv_out.bias
    assert torch.allclose(half_bias, plain_bias + 1.0, atol=1e-2)


def test_a_variant_that_is_not_there_names_the_folder_and_what_it_has(fp16_folders, tmp_path) -> None:
    _, both = fp16_folders
    catalog = BaseModelCatalog(f"bf={both}|variant=bf16", cache_dir=tmp_path)
    with pytest.raises(InvalidArgument) as raised:
        catalog.resolve("bf")
    message = str(raised.value)
    assert str(both) in message and "'bf16'" in message and "fp16" in message
