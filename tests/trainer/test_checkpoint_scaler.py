"""fp16 resume is exact only with the loss scaler's state: a checkpoint carries the scale and growth tracker of an
fp16 run (accelerate's GradScaler) and a resumed run continues from them, not from the initial scale."""

from __future__ import annotations

import torch

from likeness.trainer.training.checkpoints import SCALER_NAME, read_checkpoint, write_checkpoint, write_rng_state


def _run() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def test_the_scaler_state_survives_a_checkpoint(tmp_path) -> None:
    model, optimizer, scheduler = _run()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
    for _ in range(5):  # steps move the scale and the growth tracker away from their initial values
        optimizer.zero_grad()
        scaler.scale(model(torch.ones(1, 4)).sum()).backward()
        scaler.step(optimizer)
        scaler.update()
    saved = scaler.state_dict()
    assert saved["scale"] != 2.0**16 or saved["_growth_tracker"] != 0
    write_checkpoint(
        tmp_path, step=5, modules={"m": model}, optimizer=optimizer, lr_scheduler=scheduler, training_state={},
        scaler=scaler,
    )  # fmt: skip
    write_rng_state(tmp_path, 0)
    assert (tmp_path / SCALER_NAME).is_file()

    resumed_model, resumed_optimizer, resumed_scheduler = _run()
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
    read_checkpoint(
        tmp_path, modules={"m": resumed_model}, optimizer=resumed_optimizer, lr_scheduler=resumed_scheduler, rank=0,
        scaler=fresh,
    )  # fmt: skip
    assert fresh.state_dict() == saved


def test_runs_without_a_scaler_write_none_and_read_any(tmp_path) -> None:
    model, optimizer, scheduler = _run()
    write_checkpoint(
        tmp_path, step=1, modules={"m": model}, optimizer=optimizer, lr_scheduler=scheduler, training_state={}
    )
    write_rng_state(tmp_path, 0)
    assert not (tmp_path / SCALER_NAME).exists()
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    read_checkpoint(tmp_path, modules={"m": model}, optimizer=optimizer, lr_scheduler=scheduler, rank=0, scaler=scaler)
    assert scaler.get_scale() == 8.0  # a checkpoint of an fp32/bf16 run leaves a new fp16 scaler as it starts
