"""scripts/gen_clients.sh: the committed TypeScript and Go stubs match the protos, and --check catches drift."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


SCRIPT = ROOT / "scripts" / "gen_clients.sh"
TS_GEN = Path("clients/typescript/src/gen")
GO_GEN = Path("clients/go/gen")


def _require_generators() -> None:
    missing = [tool for tool in ("protoc", "protoc-gen-go", "protoc-gen-go-grpc", "node") if not shutil.which(tool)]
    if not (ROOT / "tools" / "node_modules" / ".bin" / "protoc-gen-ts_proto").exists():
        missing.append("ts-proto (tools/node_modules)")
    if missing:
        pytest.skip(f"code generators not installed: {', '.join(missing)}; run `make tools`")


def _check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(root / "scripts" / "gen_clients.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_committed_client_code_is_up_to_date():
    _require_generators()
    result = _check(ROOT)
    assert result.returncode == 0, result.stderr
    assert "SKIPPING" not in result.stderr
    assert "TypeScript client code is up to date" in result.stderr
    assert "Go client code is up to date" in result.stderr


def test_check_lists_stale_missing_and_orphaned_files(tmp_path: Path):
    _require_generators()
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "gen_clients.sh")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / TS_GEN, tmp_path / TS_GEN)
    shutil.copytree(ROOT / GO_GEN, tmp_path / GO_GEN)
    (tmp_path / "tools").symlink_to(ROOT / "tools", target_is_directory=True)

    stale = tmp_path / TS_GEN / "likeness/gallery/v1/gallery_service.ts"
    stale.write_text(stale.read_text().replace("searchPrompts", "searchPromptz"))
    (tmp_path / GO_GEN / "likeness/type/v1/types.pb.go").unlink()
    (tmp_path / GO_GEN / "likeness/type/v1/removed.pb.go").write_text("package typev1\n")
    # A different protoc patch release only changes the version annotation; that must not count as drift.
    annotated = tmp_path / GO_GEN / "likeness/trainer/v1/trainer_service.pb.go"
    text = annotated.read_text()
    assert "// \tprotoc        v" in text
    annotated.write_text(text.replace("// \tprotoc        v", "// \tprotoc        v9", 1))

    result = _check(tmp_path)

    assert result.returncode == 1
    assert f"{TS_GEN}/likeness/gallery/v1/gallery_service.ts (out of date)" in result.stderr
    assert f"{GO_GEN}/likeness/type/v1/types.pb.go (missing)" in result.stderr
    assert f"{GO_GEN}/likeness/type/v1/removed.pb.go (no longer generated)" in result.stderr
    assert "trainer_service.pb.go" not in result.stderr
    assert "make proto" in result.stderr
