"""`likeness demo` (the README's first command) end to end, with a short training run."""

from __future__ import annotations

import subprocess
import sys

from PIL import Image

from likeness.cli.demo_cmd import DEMO_PROMPTS


def test_demo_runs_the_whole_workflow(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "likeness.cli.main", "demo", "--out", str(out)]
    command += ["--storage-url", str(tmp_path / "storage"), "--cache-dir", str(tmp_path / "cache")]
    command += ["--steps", "8", "--images-per-prompt", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "succeeded" in result.stdout
    assert "serve all --studio" in result.stdout and "http://127.0.0.1:8080/" in result.stdout  # where to look next
    recorded = len(DEMO_PROMPTS)  # one image per prompt, each recorded as one gallery entry with its thumbnail
    assert f"recorded in the gallery: {recorded} entries, {recorded} with thumbnails" in result.stdout

    generated = sorted((out / "generated").glob("*.png"))
    assert len(generated) == len(DEMO_PROMPTS)
    for path in generated:
        image = Image.open(path)
        assert image.size == (32, 32)
        assert "ohwx toy" in image.text["parameters"]  # A1111-style metadata names the expanded subject
    sheet = Image.open(out / "contact-sheet.png")
    assert sheet.height > sheet.width  # one row per prompt plus the base-model row
    assert (out / "training-photos.png").exists() and (out / "dataset-contact-sheet.jpg").exists()
