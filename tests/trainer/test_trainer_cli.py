"""`likeness train`: submit from a folder with a live progress bar, detach on Ctrl-C, reattach with --watch."""

from __future__ import annotations

import subprocess
import sys

from trainer_helpers import photos

from likeness.cli.main import main
from likeness.cli.train_cmd import format_duration, progress_line
from likeness_client import LikenessClient
from likeness_client.v1 import trainer_service_pb2 as pb


def test_progress_line_shows_steps_loss_and_eta():
    line = progress_line(
        pb.TrainingProgress(step=120, total_steps=400, loss=0.1234, steps_per_second=3.2, eta_seconds=87)
    )
    assert "120/400" in line and "loss 0.1234" in line and "3.20 it/s" in line and "ETA 1m27s" in line
    assert format_duration(3 * 3600 + 60) == "3h01m" and format_duration(5) == "5s"


def test_train_from_a_folder_detach_with_ctrl_c_and_reattach(trainer, tmp_path, capsys, monkeypatch):
    address = trainer[0].address
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in photos(3):
        (folder / name).write_bytes(data)
    original_watch = LikenessClient.watch_training_job

    def interrupted_watch(self, job_id, after_sequence=0, **kwargs):
        for event in original_watch(self, job_id, after_sequence, **kwargs):
            yield event
            if event.HasField("progress"):
                raise KeyboardInterrupt  # what Ctrl-C raises in the CLI's main thread

    monkeypatch.setattr(LikenessClient, "watch_training_job", interrupted_watch)
    arguments = [
        "train",
        str(folder),
        "--class-noun",
        "dog",
        "--base-model",
        "tiny-sd15",
        "--steps",
        "4",
        "--rank",
        "4",
    ]
    assert main([*arguments, "--address", address]) == 0
    out = capsys.readouterr().out
    assert "dataset ds-" in out and "1/4" in out
    job_id = out.split("job ", 1)[1].split()[0]
    assert f"detached; job {job_id} keeps running. Reattach with: likeness train --watch {job_id}" in out

    monkeypatch.setattr(LikenessClient, "watch_training_job", original_watch)
    assert main(["train", "--watch", job_id, "--address", address]) == 0
    out = capsys.readouterr().out
    assert "4/4" in out and "subject model" in out and "ohwx dog" in out and "succeeded" in out
    with LikenessClient(address) as client:
        assert client.get_training_job(job_id).state == pb.JOB_STATE_SUCCEEDED
    assert main(["train", str(folder), "--base-model", "tiny-sd15", "--address", address]) == 2  # no class noun


def test_db_status_and_upgrade_report_the_schema_revision(tmp_path):
    from likeness.controlplane.migrate import head_revision

    url = f"sqlite:///{tmp_path / 'likeness.db'}"

    def db(action: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "likeness.cli.main", "db", action, "--database-url", url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "none (empty database), behind" in db("status")
    assert f"empty -> {head_revision()}" in db("upgrade")
    assert f"revision {head_revision()}, up to date" in db("status")


def test_train_sends_a_webhook_only_with_its_secret(tmp_path, monkeypatch, capsys):
    import argparse

    from likeness.cli.train_cmd import build_webhook

    args = argparse.Namespace(
        webhook_url="https://hooks.example/x",
        webhook_secret="s" * 16,
        webhook_progress=True,
        webhook_progress_interval=60,
    )
    assert build_webhook(args) == pb.Webhook(
        url="https://hooks.example/x", secret="s" * 16, send_progress=True, progress_interval_seconds=60
    )
    assert build_webhook(argparse.Namespace(webhook_url="")) is None
    monkeypatch.delenv("LIKENESS_WEBHOOK_SECRET", raising=False)
    # Refused before anything is sent: no server listens at this address.
    arguments = ["train", "--dataset", "ds-1", "--class-noun", "dog", "--webhook-url", "https://hooks.example/x"]
    assert main([*arguments, "--address", "127.0.0.1:1"]) == 2
    assert "LIKENESS_WEBHOOK_SECRET" in capsys.readouterr().err
