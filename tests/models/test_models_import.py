"""`likeness models import PATH`: a downloaded model checked from its files' headers (architecture, variant,
precision, size, native resolution) and its catalog entry printed; pickle weights, a truncated file and a variant
that is not there are errors naming the file and what to do."""

from __future__ import annotations

import shutil

import pytest
import torch

from likeness.cli.main import main
from likeness.errors import InvalidArgument
from likeness.models.catalog import BaseModelCatalog
from likeness.models.inspect import inspect_model
from likeness.models.loading import load_base_pipeline


def test_a_diffusers_folder_is_reported_and_its_entry_loads(saved_tiny, capsys, tmp_path) -> None:
    folder = saved_tiny("sd15")
    assert main(["models", "import", str(folder), "--id", "my-sd15"]) == 0
    out = capsys.readouterr().out
    assert "architecture  sd15" in out and "precision     fp32" in out and "64 px" in out
    (entry,) = [line.split(None, 2)[2] for line in out.splitlines() if line.startswith("catalog entry")]
    assert entry.startswith(f"my-sd15={folder.resolve()}|arch=sd15")
    assert BaseModelCatalog(entry, cache_dir=tmp_path).resolve("my-sd15").resolution == 64


def test_an_fp16_download_reports_its_variant_and_half_the_size(saved_tiny, tmp_path) -> None:
    folder = saved_tiny("sd15")
    half = tmp_path / "fp16"
    load_base_pipeline(folder, arch="sd15").to(torch.float16).save_pretrained(half, variant="fp16")
    full, report = inspect_model(folder), inspect_model(half)
    assert report.variant == "fp16" and report.precision == "fp16"
    assert report.parameters == full.parameters
    assert report.size_bytes < 0.6 * full.size_bytes
    assert report.catalog_entry("h").endswith("|variant=fp16")


def test_broken_downloads_name_the_file(saved_tiny, tmp_path) -> None:
    truncated = tmp_path / "truncated"
    shutil.copytree(saved_tiny("sd15"), truncated)
    weights = truncated / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(InvalidArgument, match="truncated") as raised:
        inspect_model(truncated)
    assert str(weights) in str(raised.value) and "download it again" in str(raised.value)

    pickled = tmp_path / "pickled"
    shutil.copytree(saved_tiny("sd15"), pickled)
    for file in (pickled / "unet").glob("*.safetensors"):
        file.rename(file.with_suffix(".bin"))
    with pytest.raises(InvalidArgument, match="pickle"):
        inspect_model(pickled)

    with pytest.raises(InvalidArgument, match="no 'fp16' weights variant"):
        inspect_model(saved_tiny("sd15"), variant="fp16")

    not_a_model = tmp_path / "notes.safetensors"
    not_a_model.write_bytes(b"\xff" * 64)
    with pytest.raises(InvalidArgument):
        inspect_model(not_a_model)
    assert main(["models", "import", str(tmp_path / "missing")]) != 0


def test_a_single_file_reports_its_architecture(saved_tiny, tmp_path, capsys) -> None:
    from likeness.models.single_file import save_single_file

    single = save_single_file(load_base_pipeline(saved_tiny("sd15"), arch="sd15"), tmp_path / "model.safetensors")
    # A tiny file does not fit the shipped full-size SD 1.5 configs: the error names it and says what to give.
    assert main(["models", "import", str(single)]) != 0
    assert "--config DIR" in capsys.readouterr().err
    assert main(["models", "import", str(single), "--config", str(saved_tiny("sd15"))]) == 0
    out = capsys.readouterr().out
    assert "architecture  sd15" in out and "|config=" in out and "prediction    epsilon" in out


def test_a_model_larger_than_the_free_memory_is_refused_before_loading(saved_tiny, tmp_path, monkeypatch) -> None:
    from likeness.errors import FailedPrecondition
    from likeness.models import inspect

    folder = saved_tiny("sd15")
    catalog = BaseModelCatalog(f"big={folder}", cache_dir=tmp_path)
    monkeypatch.setattr(inspect, "available_memory_bytes", lambda device: 1024)
    with pytest.raises(FailedPrecondition) as raised:
        catalog.load("big")
    message = str(raised.value)
    assert str(folder.resolve()) in message and "GiB free" in message and "half precision" in message
    monkeypatch.setattr(inspect, "available_memory_bytes", lambda device: None)  # unknown: no refusal
    assert catalog.load("big").unet is not None
