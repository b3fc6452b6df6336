"""The base model catalog: spec parsing, builtin materialisation (once, race-free) and loading."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from likeness.errors import InvalidArgument, NotFound
from likeness.models.catalog import (
    DEFAULT_CATALOG_SPEC,
    BaseModelCatalog,
    BuiltinModel,
    CatalogEntry,
    parse_catalog_spec,
    register_builtin,
)
from likeness.models.single_file import save_single_file
from likeness.models.tiny import create_tiny_pipeline


def test_default_catalog_has_the_tiny_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = BaseModelCatalog(cache_dir=tmp_path)
    assert catalog.ids() == ["toy-sd15", "tiny-sd15", "tiny-sdxl"]
    assert "tiny-sd15" in catalog
    assert "sd15" not in catalog
    monkeypatch.delenv("LIKENESS_BASE_MODELS", raising=False)
    assert BaseModelCatalog.from_env(tmp_path).ids() == catalog.ids()
    assert BaseModelCatalog(DEFAULT_CATALOG_SPEC, tmp_path).ids() == catalog.ids()


def test_from_env_reads_the_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKENESS_BASE_MODELS", "mine=builtin:sdxl")
    assert BaseModelCatalog.from_env(tmp_path).ids() == ["mine"]


def test_parse_spec_forms() -> None:
    entries = parse_catalog_spec(
        " tiny=builtin:sd15 , sd15=/models/sd15,"
        "sdxl=file:/models/sdxl.safetensors|config=/models/sdxl-diffusers|arch=sdxl,"
    )
    assert entries == [
        CatalogEntry("tiny", "builtin:sd15", arch="sd15"),
        CatalogEntry("sd15", "/models/sd15"),
        CatalogEntry("sdxl", "/models/sdxl.safetensors", config_dir="/models/sdxl-diffusers", arch="sdxl"),
    ]
    assert entries[0].builtin == "sd15"
    assert entries[1].builtin is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tiny", "must look like ID=SOURCE"),
        ("a=builtin:sd15,a=builtin:sdxl", "appears twice"),
        ("a=builtin:sd9", "builtins are builtin:sd15, builtin:sdxl"),
        ("a=/models/x|colour=red", "unknown option"),
        ("a=/models/x|arch=sd9", "unknown architecture"),
        ("a=builtin:sd15|arch=sdxl", "builtin:sd15 is sd15"),
        ("bad id=/models/x", "may use only letters"),
    ],
)
def test_bad_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_catalog_spec(spec)


def test_unknown_id_lists_known_ids(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="known base models: toy-sd15, tiny-sd15, tiny-sdxl"):
        BaseModelCatalog(cache_dir=tmp_path).resolve("sd15")


def test_missing_source_is_not_found(tmp_path: Path) -> None:
    catalog = BaseModelCatalog(f"gone={tmp_path / 'gone'}", cache_dir=tmp_path)
    with pytest.raises(NotFound, match="does not exist"):
        catalog.resolve("gone")


def test_builtin_is_materialised_once_by_racing_catalogs(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # Separate instances share nothing but the folder, like separate processes.
    catalogs = [BaseModelCatalog("tiny=builtin:sd15", cache_dir=cache) for _ in range(2)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        specs = list(pool.map(lambda catalog: catalog.resolve("tiny"), catalogs))
    assert specs[0] == specs[1]
    spec = specs[0]
    assert spec.source.parent == cache
    assert (spec.source / "model_index.json").is_file()
    assert (spec.arch, spec.resolution, spec.is_tiny) == ("sd15", 64, True)
    assert spec.info.default_resolution == 64
    assert [path.name for path in cache.iterdir()] == [spec.source.name]

    modified = (spec.source / "model_index.json").stat().st_mtime_ns
    again = BaseModelCatalog("other=builtin:sd15", cache_dir=cache).resolve("other")
    assert again.source == spec.source
    assert (spec.source / "model_index.json").stat().st_mtime_ns == modified

    pipeline = catalogs[0].load("tiny")
    assert isinstance(pipeline, StableDiffusionPipeline)


def test_losing_the_materialisation_race_keeps_the_winners_copy(
    tmp_path: Path, saved_tiny: Callable[[str], Path]
) -> None:
    cache = tmp_path / "cache"
    winner = cache / "builtin-race-test-v1"

    def write_while_another_process_wins(directory: Path) -> None:
        shutil.copytree(saved_tiny("sd15"), directory, dirs_exist_ok=True)
        shutil.copytree(saved_tiny("sd15"), winner)
        (winner / "winner.txt").write_text("first")

    register_builtin(BuiltinModel("race-test", "sd15", 1, write_while_another_process_wins))
    spec = BaseModelCatalog("raced=builtin:race-test", cache_dir=cache).resolve("raced")
    assert spec.source == winner
    assert (winner / "winner.txt").read_text() == "first"
    assert [path.name for path in cache.iterdir()] == [winner.name]


def test_default_size_is_the_models_native_resolution(tmp_path: Path) -> None:
    toy = BaseModelCatalog(cache_dir=tmp_path).resolve("toy-sd15")
    assert (toy.resolution, toy.info.default_resolution) == (32, 32)  # trained at 32 px, not the tiny 64 px default
    assert (toy.info.min_resolution, toy.info.max_resolution) == (32, 256)


def test_folder_and_single_file_entries(tmp_path: Path, saved_tiny: Callable[[str], Path]) -> None:
    single = save_single_file(create_tiny_pipeline("sd15"), tmp_path / "tiny.safetensors")
    catalog = BaseModelCatalog(
        f"xl={saved_tiny('sdxl')},single={single}|config={saved_tiny('sd15')}", cache_dir=tmp_path / "cache"
    )
    xl = catalog.resolve("xl")
    assert (xl.arch, xl.resolution, xl.is_tiny, xl.config_dir) == ("sdxl", 64, True, None)
    assert xl.info.two_text_encoders
    assert isinstance(catalog.load("xl"), StableDiffusionXLPipeline)

    single_spec = catalog.resolve("single")
    assert (single_spec.arch, single_spec.config_dir) == ("sd15", saved_tiny("sd15"))
    assert isinstance(catalog.load("single"), StableDiffusionPipeline)


def test_pickle_entry_is_refused_at_resolve(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"pickle")
    with pytest.raises(InvalidArgument, match=r"only \.safetensors"):
        BaseModelCatalog(f"old={checkpoint}", cache_dir=tmp_path).resolve("old")
