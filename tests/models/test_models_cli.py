"""`likeness models create-tiny|list`."""

from __future__ import annotations

from pathlib import Path

import pytest

from likeness.cli.main import main
from likeness.models.loading import detect_arch


def test_create_tiny_writes_a_loadable_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "tiny-xl"
    assert main(["models", "create-tiny", "--arch", "sdxl", "--seed", "3", str(target)]) == 0
    assert detect_arch(target) == "sdxl"
    assert str(target) in capsys.readouterr().out

    assert main(["models", "create-tiny", "--arch", "sdxl", str(target)]) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "not an empty folder" in error


def test_list_prints_catalog_ids(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIKENESS_BASE_MODELS", raising=False)
    assert main(["models", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "toy-sd15\tbuiltin:toy",
        "tiny-sd15\tbuiltin:sd15",
        "tiny-sdxl\tbuiltin:sdxl",
    ]

    assert main(["models", "list", "--base-models", "big=/models/xl.safetensors|config=/models/xl"]) == 0
    assert capsys.readouterr().out.splitlines() == ["big\t/models/xl.safetensors|config=/models/xl"]

    assert main(["models", "list", "--base-models", "broken"]) != 0
    assert "ID=SOURCE" in capsys.readouterr().err
