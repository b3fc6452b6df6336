"""`buf breaking` against the released protos (protos/released/likeness-v1.binpb): today's protos pass, and
removing a field from a copy of them is caught, so the check `make test` runs can fail."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / "tools" / "node_modules" / ".bin" / "buf"
BASELINE = ROOT / "protos" / "released" / "likeness-v1.binpb"


def _breaking(protos: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", "--against", str(BASELINE)], cwd=protos, capture_output=True, text=True, timeout=120
    )


def test_protos_keep_compatibility_with_the_release(tmp_path: Path) -> None:
    if not BUF.exists():
        pytest.skip("tools/node_modules lacks buf; run `make tools`")
    current = _breaking(ROOT / "protos")
    assert current.returncode == 0, current.stdout + current.stderr
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy, ignore=shutil.ignore_patterns("released"))
    proto = copy / "likeness" / "type" / "v1" / "types.proto"
    text = proto.read_text()
    without_seed = re.sub(r"\n[^\n]*optional int64 seed = 7;", "", text)
    assert without_seed != text
    proto.write_text(without_seed)
    broken = _breaking(copy)
    assert broken.returncode != 0 and "seed" in broken.stdout + broken.stderr
