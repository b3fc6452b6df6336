"""The memory plan: what a run needs on its device, and the savers that make it fit (issue 14).

The activation estimate traces the UNet on the meta device; here it is checked against the tensors autograd really
saves on the CPU. The plans for the real architectures are computed from the configs Likeness ships, without
weights, so SDXL's 24 GiB claim is checked as the plan accounts it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging

import pytest
import torch
from trainer_helpers import subject_image

from likeness.cli.main import main as cli_main
from likeness.errors import FailedPrecondition, InvalidArgument
from likeness.models.standard import CONFIGS_DIR
from likeness.models.tiny import create_tiny_pipeline
from likeness.trainer.config import LoraSettings, PriorSettings, TrainingConfig
from likeness.trainer.training.data import TrainingData
from likeness.trainer.training.loop import run_training
from likeness.trainer.training.lora import add_lora
from likeness.trainer.training.memory import (
    GIB,
    ModelShape,
    _SavedTensors,
    check_plan,
    make_optimizer,
    plan_memory,
    plans_by_device_size,
    trace_activations,
)


@functools.cache
def _shape(name: str) -> ModelShape:
    return ModelShape.of_folder(CONFIGS_DIR / name)


@functools.cache
def _tiny(arch: str):
    return create_tiny_pipeline(arch)


def _config(**changes) -> TrainingConfig:
    return TrainingConfig(base_model="m", identifier="ohwx", class_noun="dog", **changes)


def test_shapes_of_the_shipped_configs_count_the_published_parameters():
    sd15, sdxl = _shape("sd15"), _shape("sdxl-base")
    # SD 1.5: an 860 M UNet and CLIP ViT-L's 123 M text encoder; SDXL: a 2.6 B UNet and 817 M in its two encoders.
    assert round(sd15.unet_parameters / 1e6) == 860 and round(sd15.text_encoder_parameters / 1e6) == 123
    assert round(sdxl.unet_parameters / 1e9, 2) == 2.57 and round(sdxl.text_encoder_parameters / 1e6) == 818


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_meta_trace_counts_what_autograd_saves_on_the_cpu(checkpointing):
    pipeline = copy.deepcopy(_tiny("sd15"))
    unet = pipeline.unet
    lora = LoraSettings(rank=4)
    unet.requires_grad_(False)
    add_lora(unet, lora)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    saved = _SavedTensors({id(parameter) for parameter in unet.parameters()})
    sample = torch.randn(2, unet.config.in_channels, 8, 8)
    context = torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda tensor: tensor):
        unet(sample, torch.tensor([10, 10]), context, return_dict=False)
    traced = trace_activations(
        dict(unet.config), lora=lora, resolution=64, batch=2, dtype=torch.float32, gradient_checkpointing=checkpointing
    )
    assert traced.saved_bytes == pytest.approx(saved.total, rel=0.1)
    assert traced.largest_bytes > 0


def test_sdxl_dreambooth_lora_with_prior_preservation_fits_24_gib_by_the_plan():
    config = _config(prior=PriorSettings(enabled=True))
    plans = plans_by_device_size(_shape("sdxl-base"), config, dtype=torch.bfloat16, resolution=1024)
    by_size = dict(zip((16, 24, 40, 80), plans, strict=True))
    assert by_size[24].fits and by_size[24].estimate.total <= 24 * GIB * 0.9
    assert by_size[24].options.gradient_checkpointing and by_size[24].options.offload_text_encoders
    # A larger GPU never needs more savers; 80 GiB needs none.
    assert not by_size[80].options.gradient_checkpointing and not by_size[80].options.offload_text_encoders
    assert by_size[80].estimate.total > by_size[24].estimate.total


def test_a_full_fine_tune_short_of_memory_gets_a_lean_optimizer_and_off_keeps_the_request():
    shape = _shape("sd15")
    full = _config(method="full")
    tight = plan_memory(shape, full, device_type="cuda", dtype=torch.bfloat16, resolution=512, budget_bytes=12 * GIB)
    # Without bitsandbytes (this machine) the lean optimizer is Adafactor.
    assert tight.fits and tight.options.gradient_checkpointing and tight.options.optimizer == "adafactor"
    roomy = plan_memory(shape, full, device_type="cuda", dtype=torch.bfloat16, resolution=512, budget_bytes=80 * GIB)
    assert roomy.options.optimizer == "adamw" and not roomy.options.gradient_checkpointing
    as_given = dataclasses.replace(full, memory_plan="off")
    off = plan_memory(shape, as_given, device_type="cuda", dtype=torch.bfloat16, resolution=512, budget_bytes=4 * GIB)
    assert not off.fits and off.options.optimizer == "adamw"
    check_plan(off)  # "off" runs anyway


def test_a_job_that_fits_nowhere_fails_saying_what_to_change():
    plan = plan_memory(
        _shape("sdxl-base"), _config(method="full"), device_type="cuda", dtype=torch.bfloat16, resolution=1024,
        budget_bytes=8 * GIB,
    )  # fmt: skip
    with pytest.raises(FailedPrecondition) as caught:
        check_plan(plan)
    message = caught.value.reason
    assert "8.0 GiB" in message and "resolution" in message and "MEMORY_PLAN_OFF" in message


def test_optimizers_adafactor_runs_and_8_bit_adamw_without_cuda_is_refused():
    weight = torch.nn.Parameter(torch.ones(4, 4))
    optimizer = make_optimizer("adafactor", [{"params": [weight], "lr": 0.1}], torch.device("cpu"))
    weight.sum().backward()
    optimizer.step()
    assert not torch.equal(weight.detach(), torch.ones(4, 4))
    with pytest.raises(FailedPrecondition, match="CUDA"):
        make_optimizer("adamw_8bit", [{"params": [weight], "lr": 0.1}], torch.device("cpu"))


def test_a_run_logs_its_plan_and_trains_with_the_optimizer_asked_for(caplog):
    config = TrainingConfig.from_spec(
        {
            "base_model": "tiny-sd15",
            "class_noun": "dog",
            "lora": {"rank": 4},
            "checkpointing": {"every_n_steps": 0},
            "hyperparameters": {"max_train_steps": 2, "resolution": 32, "optimizer": "adafactor"},
        },
        identifier="ohwx",
    )
    data = TrainingData([subject_image(i) for i in range(2)], [config.instance_prompt] * 2)
    with caplog.at_level(logging.INFO, logger="likeness.trainer.training.loop"):
        result = run_training(config, copy.deepcopy(_tiny("sd15")), data)
    assert result.steps_completed == 2
    assert any("memory plan (auto) on cpu" in r.getMessage() and "adafactor" in r.getMessage() for r in caplog.records)


def test_spec_values_are_validated_with_the_field_named():
    spec = {"base_model": "tiny-sd15", "class_noun": "dog"}
    for hyperparameters, field in (
        ({"optimizer": "sgd"}, "optimizer"),
        ({"memory_plan": "sometimes"}, "memory_plan"),
        ({"memory_budget_mib": 10}, "memory_budget_mib"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            TrainingConfig.from_spec({**spec, "hyperparameters": hyperparameters}, identifier="ohwx")
        assert caught.value.field == f"spec.hyperparameters.{field}"


def test_the_plan_command_prints_a_row_per_gpu_size(capsys):
    assert cli_main(["plan", "sd15", "--method", "full"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[0] for row in rows] == ["16 GiB", "24 GiB", "40 GiB", "80 GiB"]
    assert all(row[1] == "yes" for row in rows) and "gradient checkpointing" in rows[0][3] and "no memory" in rows[1][3]


def test_a_warm_worker_keeps_a_copy_of_small_models_only(monkeypatch):
    from likeness.trainer import worker
    from likeness.trainer.training import memory

    assert memory.keeps_warm_copy(16 * 2**20, 24 * GIB) and not memory.keeps_warm_copy(4 * GIB, 24 * GIB)

    class Catalog:
        loads = 0

        def load(self, base_id, device, dtype):
            Catalog.loads += 1
            return copy.deepcopy(_tiny("sd15"))

    pipelines = worker.WarmPipelines(Catalog())
    first = pipelines.load("tiny-sd15")
    assert pipelines.load("tiny-sd15") is not first and Catalog.loads == 1  # a copy of the kept one
    monkeypatch.setattr(memory, "WARM_COPY_SHARE", 0.0)  # as for a full-size model on a small host
    handed = pipelines.load("tiny-sd15")
    assert pipelines._template is None and Catalog.loads == 1 and handed is not None
    pipelines.load("tiny-sd15")
    assert Catalog.loads == 2  # nothing kept: the next job loads it again
