"""The training domain on tiny models: LoRA and full fine-tunes that plain diffusers loads, kohya export,
resume that continues the same run, cancellation within one step, throttled progress, class-image cache."""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors import safe_open
from trainer_helpers import subject_image

from likeness.models.tiny import create_tiny_pipeline
from likeness.storage.layout import KOHYA_WEIGHTS_NAME
from likeness.storage.local import LocalStorage
from likeness.trainer.config import TrainingConfig
from likeness.trainer.training.checkpoints import CheckpointStore
from likeness.trainer.training.data import TrainingData
from likeness.trainer.training.export import save_subject_weights
from likeness.trainer.training.loop import TrainingCallbacks, run_training
from likeness.trainer.training.lora import LORA_WEIGHTS_NAME
from likeness.trainer.training.prior import class_images_for_run

#: A resumed run matches the uninterrupted one within this (relative) tolerance; on CPU it is bit-exact.
RESUME_TOLERANCE = 1e-5
ARCH_OF = {"tiny-sd15": "sd15", "tiny-sdxl": "sdxl"}


@functools.cache
def _tiny_original(arch: str):
    return create_tiny_pipeline(arch)


def tiny(arch: str):
    """A fresh copy of the tiny base pipeline (copying is faster than building and calibrating one)."""
    return copy.deepcopy(_tiny_original(arch))


def config(**spec) -> TrainingConfig:
    hyperparameters = {"max_train_steps": 4, "seed": 7, "resolution": 32, **spec.pop("hyperparameters", {})}
    return TrainingConfig.from_spec(
        {
            "base_model": "tiny-sd15",
            "class_noun": "dog",
            "lora": {"rank": 4},
            "checkpointing": {"every_n_steps": 0},
            **spec,
            "hyperparameters": hyperparameters,
        },
        identifier="ohwx",
    )


def data(cfg: TrainingConfig, count: int = 3) -> TrainingData:
    return TrainingData([subject_image(i) for i in range(count)], [cfg.instance_prompt] * count)


def render(pipeline, prompt: str = "a photo of ohwx dog") -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    output = pipeline(prompt, num_inference_steps=2, height=32, width=32, generator=generator, output_type="np")
    return output.images[0]


@pytest.mark.parametrize("base_model", ["tiny-sd15", "tiny-sdxl"])
def test_lora_run_saves_weights_a_plain_pipeline_loads_also_as_kohya(base_model, tmp_path):
    cfg = config(
        base_model=base_model,
        export_kohya=True,
        hyperparameters={"learning_rate": 0.05, "train_text_encoder": True, "random_flip": True},
        lora={"rank": 4, "alpha": 8},
    )
    pipeline = tiny(ARCH_OF[base_model])
    result = run_training(cfg, pipeline, data(cfg))
    assert result.steps_completed == 4 and not result.cancelled and len(result.losses) == 4
    written = save_subject_weights(pipeline, cfg, tmp_path)
    assert written == [LORA_WEIGHTS_NAME, KOHYA_WEIGHTS_NAME]
    with safe_open(str(tmp_path / KOHYA_WEIGHTS_NAME), "pt") as kohya:
        keys = list(kohya.keys())
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    assert any(k.startswith("lora_te") and k.endswith(".alpha") for k in keys)
    if base_model == "tiny-sdxl":
        assert any("input_blocks" in k for k in keys) and any(k.startswith("lora_te2_") for k in keys)

    base_image = render(tiny(ARCH_OF[base_model]))
    loaded = tiny(ARCH_OF[base_model])
    loaded.load_lora_weights(str(tmp_path), weight_name=LORA_WEIGHTS_NAME)
    from_kohya = tiny(ARCH_OF[base_model])
    from_kohya.load_lora_weights(str(tmp_path), weight_name=KOHYA_WEIGHTS_NAME)
    pipeline.unet.eval()
    for encoder in (pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None)):
        if encoder is not None:
            encoder.eval()
    trained_image = render(pipeline)
    assert np.abs(render(loaded) - trained_image).max() < 1e-5  # alpha / rank scale restored exactly
    assert np.abs(render(from_kohya) - trained_image).max() < 1e-5
    assert np.abs(trained_image - base_image).max() > 1e-3


def test_full_fine_tune_saves_a_diffusers_unet(tmp_path):
    cfg = config(method="full", hyperparameters={"max_train_steps": 2, "learning_rate": 1e-3})
    pipeline = tiny("sd15")
    before = {k: v.clone() for k, v in pipeline.unet.state_dict().items()}
    run_training(cfg, pipeline, data(cfg))
    written = save_subject_weights(pipeline, cfg, tmp_path)
    assert "unet/diffusion_pytorch_model.safetensors" in written and "unet/config.json" in written
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    changed = [k for k, v in unet.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the fine-tune changed no weight"
    plain = tiny("sd15")
    plain.unet = unet
    pipeline.unet.eval()
    assert np.abs(render(plain) - render(pipeline)).max() < 1e-5


def test_resumed_run_continues_the_same_loss_curve(tmp_path):
    # Dropout, flips, noise offset, min-SNR weighting and accumulation all draw random numbers.
    spec = {
        "hyperparameters": {
            "max_train_steps": 6,
            "random_flip": True,
            "noise_offset": 0.05,
            "snr_gamma": 5.0,
            "gradient_accumulation_steps": 2,
            "lr_scheduler": "cosine",
            "lr_warmup_steps": 2,
        },
        "lora": {"rank": 4, "dropout": 0.1},
        "checkpointing": {"every_n_steps": 3},
    }
    cfg = config(**spec)
    saved: dict[int, Path] = {}

    def keep(step: int, folder: Path) -> None:
        saved[step] = Path(shutil.copytree(folder, tmp_path / f"ckpt-{step}"))

    full = run_training(cfg, tiny("sd15"), data(cfg), TrainingCallbacks(on_checkpoint=keep))
    assert sorted(saved) == [3]
    assert sorted(p.name for p in saved[3].iterdir()) == [
        "optimizer.pt", "rng-0.pt", "scheduler.pt", "state.json", "trainable.safetensors",
    ]  # fmt: skip
    resumed = run_training(cfg, tiny("sd15"), data(cfg), resume_from=saved[3])
    assert resumed.resumed_from_step == 3 and resumed.steps_completed == 6
    assert resumed.losses[:3] == full.losses[:3]  # history restored from the checkpoint
    np.testing.assert_allclose(resumed.losses[3:], full.losses[3:], rtol=RESUME_TOLERANCE)


def test_stop_is_honoured_within_one_step_and_progress_is_throttled():
    cfg = config(hyperparameters={"max_train_steps": 50})
    steps_seen: list[int] = []
    stop_after = 3
    callbacks = TrainingCallbacks(
        on_progress=lambda progress: steps_seen.append(progress.step),
        should_stop=lambda: len(steps_seen) >= stop_after,
        progress_interval_seconds=0.0,
    )
    result = run_training(cfg, tiny("sd15"), data(cfg), callbacks)
    assert result.cancelled and result.steps_completed == stop_after and steps_seen == [1, 2, 3]

    throttled: list[int] = []
    run_training(
        config(hyperparameters={"max_train_steps": 5}),
        tiny("sd15"),
        data(cfg),
        TrainingCallbacks(on_progress=lambda p: throttled.append(p.step), progress_interval_seconds=3600),
    )
    assert throttled == [1, 5]  # first and last step only


def test_prior_preservation_generates_class_images_once_then_reuses_the_cache(tmp_path):
    storage = LocalStorage(tmp_path / "storage")
    pipeline = tiny("sd15")
    calls = []
    original_call = type(pipeline).__call__

    def counting_call(self, *args, **kwargs):
        calls.append(1)
        return original_call(self, *args, **kwargs)

    type(pipeline).__call__ = counting_call
    try:
        arguments = {
            "tenant": "default",
            "base_model": "tiny-sd15",
            "class_prompt": "a photo of dog",
            "resolution": 32,
            "count": 2,
        }
        first = class_images_for_run(storage, pipeline, **arguments)
        generated_calls = len(calls)
        second = class_images_for_run(storage, pipeline, **arguments)
    finally:
        type(pipeline).__call__ = original_call
    assert first.source == "generated" and second.source == "cache" and first.cache_key == second.cache_key
    assert generated_calls >= 1 and len(calls) == generated_calls  # no regeneration
    assert [np.asarray(i).tolist() for i in first.images] == [np.asarray(i).tolist() for i in second.images]
    assert storage.is_published(f"shared/class-images/{first.cache_key}")

    cfg = config(prior_preservation={"enabled": True, "num_class_images": 2, "prior_loss_weight": 0.5})
    training_data = TrainingData(
        [subject_image(i) for i in range(2)], [cfg.instance_prompt] * 2, second.images, cfg.prior.class_prompt
    )
    result = run_training(cfg, tiny("sd15"), training_data)
    assert result.steps_completed == 4 and result.images_per_second > 0


def test_checkpoint_store_keeps_only_the_last_k(tmp_path):
    storage = LocalStorage(tmp_path / "storage")
    store = CheckpointStore(storage, "default", "job-1")
    for step in (2, 4, 6):
        folder = tmp_path / f"c{step}"
        folder.mkdir()
        (folder / "trainable.safetensors").write_bytes(b"x")
        (folder / "state.json").write_text("{}")
        key, seconds = store.publish(step, folder, keep_last=2)
        assert key.endswith(f"step-{step:08d}") and seconds >= 0
    assert store.steps() == [4, 6]
    restored = store.download(6, tmp_path / "restored")
    assert (restored / "state.json").read_text() == "{}"
