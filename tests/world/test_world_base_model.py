"""The committed toy base model: a catalog id, loadable offline, and it follows its prompts."""

from __future__ import annotations

import json

import pytest

from likeness.models.catalog import DEFAULT_CATALOG_SPEC, BaseModelCatalog
from likeness.world.base_model import TOY_MODEL_ID, TRAINING_RECORD, committed_weights_dir
from likeness.world.in_process import generate, load_toy_pipeline
from likeness.world.judge import held_out_accuracy, judge_images, load_judge
from likeness.world.scenes import CLASSES, CONTEXT_PHRASES


@pytest.fixture(scope="module")
def toy_pipeline():
    return load_toy_pipeline()


def test_toy_model_is_the_first_catalog_id(tmp_path) -> None:
    catalog = BaseModelCatalog(DEFAULT_CATALOG_SPEC, tmp_path)
    assert catalog.ids()[0] == TOY_MODEL_ID
    spec = catalog.resolve(TOY_MODEL_ID)
    assert (spec.arch, spec.resolution, spec.is_tiny) == ("sd15", 32, True)
    assert (spec.source / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_training_record_names_command_and_seed() -> None:
    record = json.loads((committed_weights_dir() / TRAINING_RECORD).read_text())
    assert record["command"].startswith("python -m likeness.world.pretrain")
    assert isinstance(record["config"]["seed"], int)
    assert record["total_seconds"] < 3600
    weights = sum(path.stat().st_size for path in committed_weights_dir().rglob("*.safetensors"))
    assert weights < 20 * 1024 * 1024


def test_judge_reads_the_world() -> None:
    accuracy = held_out_accuracy(load_judge(), seed=12345, count=200)
    assert accuracy["class"] > 0.9
    assert accuracy["context"] > 0.95
    assert accuracy["colour"] > 0.9


def test_base_model_follows_context_and_class(toy_pipeline) -> None:
    seeds = range(3)
    context_hits = []
    for context, phrase in CONTEXT_PHRASES.items():
        pictures = generate(toy_pipeline, f"a photo of a ball {phrase}", seeds, steps=15, guidance_scale=4.0)
        context_hits += [seen == context for seen in judge_images(pictures).contexts]
    class_hits = []
    for cls in CLASSES:
        pictures = generate(toy_pipeline, f"a photo of a {cls}", seeds, steps=15, guidance_scale=4.0)
        class_hits += [seen == cls for seen in judge_images(pictures).classes]
    # Chance is 1 in 5 for both.
    assert sum(context_hits) / len(context_hits) > 0.6
    assert sum(class_hits) / len(class_hits) > 0.5


def test_pretrain_command_writes_a_loadable_folder_with_its_record(tmp_path) -> None:
    from likeness.world.pretrain import main

    out = tmp_path / "toy"
    args = ["--out", str(out), "--autoencoder-steps", "2", "--autoencoder-batch", "4", "--images", "8"]
    assert main([*args, "--steps", "2", "--batch", "4", "--warmup-steps", "1"]) == 0
    record = json.loads((out / TRAINING_RECORD).read_text())
    assert (
        record["command"]
        == "python -m likeness.world.pretrain " + " ".join(args) + " --steps 2 --batch 4 --warmup-steps 1"
    )
    assert record["config"]["steps"] == 2 and record["config"]["seed"] == 0
    pipeline = load_toy_pipeline(out)
    assert not (out / "tokenizer" / "tokenizer.json").exists()
    # The real CLIP vocabulary: the identifier is one rare token.
    assert len(pipeline.tokenizer("ohwx", add_special_tokens=False).input_ids) == 1
    assert generate(pipeline, "a red toy", [0], steps=2, guidance_scale=4.0)[0].size == (32, 32)
