"""Locust load test (bench/load/locustfile.py) against a real `likeness serve all` process on loopback.

Bounded: 6 simulated backends for 20 s. Every request must succeed (Locust exits 1 otherwise), bad requests must
get INVALID_ARGUMENT, and the server must still be serving, with its metrics counting the images, afterwards.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from likeness.inference.testing import publish_lora_subject
from likeness.storage.local import LocalStorage

LOCUSTFILE = Path(__file__).resolve().parents[2] / "bench" / "load" / "locustfile.py"


def test_the_services_hold_up_under_load(server_factory, tmp_path: Path) -> None:
    storage_dir = tmp_path / "shared"
    storage = LocalStorage(storage_dir)
    subjects = [publish_lora_subject(storage, seed=seed).model_id for seed in (1, 2)]
    server = server_factory("all", "--preload-base-models", "tiny-sd15", storage=storage_dir)
    server.wait_serving()

    stats = tmp_path / "locust"
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", server.address, "--headless"]
    command += [
        "-u",
        "6",
        "-r",
        "6",
        "--run-time",
        "20s",
        "--stop-timeout",
        "60",
        "--csv",
        str(stats),
        "--only-summary",
    ]
    env = {**os.environ, "LIKENESS_LOAD_SUBJECTS": ",".join(subjects), "LIKENESS_LOAD_STEPS": "4"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    with open(f"{stats}_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    # Enough requests that the 6 users overlapped (they did: their batches are what the server ran); a throughput
    # figure would belong in bench/, and a busy CI machine serves fewer in 20 s.
    assert int(rows["GenerateImages"]["Request Count"]) >= 6
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert int(rows["GenerateImages (invalid, expect INVALID_ARGUMENT)"]["Request Count"]) >= 1
    assert int(rows["SearchPrompts"]["Request Count"]) >= 1

    server.wait_serving(timeout=5)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    images = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("likeness_inference_images_total{")
    )
    assert images >= int(rows["GenerateImages"]["Request Count"])
    assert "Traceback" not in server.log()
    assert server.terminate() == 0
