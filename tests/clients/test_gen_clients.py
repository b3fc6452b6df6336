"""scripts/gen_protos.py (one `buf generate`, buf.gen.yaml): the committed Python, TypeScript and Go code matches the
protos, and --check catches drift."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PY_GEN = Path("clients/python/likeness_client/v1")
TS_GEN = Path("clients/typescript/src/gen")
GO_GEN = Path("clients/go/gen")
PY_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
SERVICE_CONFIGS = [path.relative_to(ROOT) for path in (ROOT / "clients").rglob("service_config.json")]


def _copy_service_configs(root: Path) -> None:
    """The canonical clients/service_config.json and the SDKs' copies of it, which the check also compares."""
    for relative in SERVICE_CONFIGS:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, root / relative)


def _require_generators() -> None:
    missing = [tool for tool in ("protoc-gen-go", "protoc-gen-go-grpc", "node") if not shutil.which(tool)]
    for tool in ("buf", "protoc-gen-ts_proto"):
        if not (ROOT / "tools" / "node_modules" / ".bin" / tool).exists():
            missing.append(f"{tool} (tools/node_modules)")
    if not Path("/usr/include/google/protobuf/timestamp.proto").exists() and not shutil.which("protoc"):
        missing.append("protoc (well-known types)")
    if missing:
        pytest.skip(f"code generators not installed: {', '.join(missing)}; run `make tools`")


def _check(root: Path, script: str = "gen_protos.py") -> subprocess.CompletedProcess:
    if script.endswith(".py"):
        cmd = [sys.executable, str(root / "scripts" / script), "--check"]
    else:
        cmd = ["bash", str(root / "scripts" / script), "--check"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def test_committed_generated_code_is_up_to_date():
    _require_generators()
    result = _check(ROOT)
    assert result.returncode == 0, result.stderr
    for language in ("Python", "TypeScript", "Go"):
        assert f"{language} code is up to date" in result.stderr


def test_gen_clients_sh_runs_the_same_check():
    _require_generators()
    result = _check(ROOT, "gen_clients.sh")
    assert result.returncode == 0, result.stderr
    assert "Go code is up to date" in result.stderr


def test_check_lists_stale_missing_and_orphaned_files(tmp_path: Path):
    _require_generators()
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "gen_protos.py", tmp_path / "scripts" / "gen_protos.py")
    shutil.copy(ROOT / "buf.gen.yaml", tmp_path / "buf.gen.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / TS_GEN, tmp_path / TS_GEN)
    shutil.copytree(ROOT / GO_GEN, tmp_path / GO_GEN)
    for path in (ROOT / PY_GEN).rglob("*"):
        if path.name.endswith(PY_SUFFIXES):
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    (tmp_path / "tools").symlink_to(ROOT / "tools", target_is_directory=True)

    stale = tmp_path / TS_GEN / "likeness/gallery/v1/gallery_service.ts"
    stale.write_text(stale.read_text().replace("searchPrompts", "searchPromptz"))
    (tmp_path / GO_GEN / "likeness/type/v1/types.pb.go").unlink()
    (tmp_path / GO_GEN / "likeness/type/v1/removed.pb.go").write_text("package typev1\n")
    stale_py = tmp_path / PY_GEN / "trainer_service_pb2_grpc.py"
    stale_py.write_text(stale_py.read_text() + "\n")
    _copy_service_configs(tmp_path)
    (tmp_path / "clients/go/likeness/service_config.json").write_text("{}\n")
    # A different protoc patch release only changes the version annotation; that must not count as drift.
    annotated = tmp_path / GO_GEN / "likeness/trainer/v1/trainer_service.pb.go"
    text = annotated.read_text()
    protoc_line = re.search(r"^// \tprotoc +\S.*$", text, re.MULTILINE)
    assert protoc_line is not None
    annotated.write_text(text.replace(protoc_line.group(0), "// \tprotoc        v9.99.1", 1))

    result = _check(tmp_path)

    assert result.returncode == 1
    assert f"{TS_GEN}/likeness/gallery/v1/gallery_service.ts (out of date)" in result.stderr
    assert f"{GO_GEN}/likeness/type/v1/types.pb.go (missing)" in result.stderr
    assert f"{GO_GEN}/likeness/type/v1/removed.pb.go (no longer generated)" in result.stderr
    assert f"{PY_GEN}/trainer_service_pb2_grpc.py (out of date)" in result.stderr
    assert "clients/go/likeness/service_config.json (out of date)" in result.stderr
    assert "trainer_service.pb.go" not in result.stderr
    assert "make proto" in result.stderr


def test_check_fails_when_a_proto_changes(tmp_path: Path):
    _require_generators()
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "gen_protos.py", tmp_path / "scripts" / "gen_protos.py")
    shutil.copy(ROOT / "buf.gen.yaml", tmp_path / "buf.gen.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    for tree in (TS_GEN, GO_GEN):
        shutil.copytree(ROOT / tree, tmp_path / tree)
    shutil.copytree(ROOT / PY_GEN, tmp_path / PY_GEN, ignore=shutil.ignore_patterns("__pycache__"))
    _copy_service_configs(tmp_path)
    (tmp_path / "tools").symlink_to(ROOT / "tools", target_is_directory=True)
    proto = tmp_path / "protos/likeness/type/v1/types.proto"
    text = proto.read_text()
    assert "\n// " in text
    proto.write_text(text.replace("\n// ", "\n// Edited. ", 1))

    result = _check(tmp_path)

    assert result.returncode == 1
    assert f"{TS_GEN}/likeness/type/v1/types.ts (out of date)" in result.stderr
    assert f"{GO_GEN}/likeness/type/v1/types.pb.go (out of date)" in result.stderr
