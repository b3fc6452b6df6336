"""Regenerates all code from protos/ with one `buf generate` (buf.gen.yaml; run by `make proto`):

  Python (grpcio-tools: _pb2.py, _pb2.pyi, _pb2_grpc.py)  -> clients/python/likeness_client/v1/
  TypeScript (ts-proto, grpc-js services)                  -> clients/typescript/src/gen/
  Go (protoc-gen-go + protoc-gen-go-grpc)                  -> clients/go/gen/

The Python modules are generated as likeness/<service>/v1/*_pb2*.py and moved into the client package's one
`likeness_client.v1` package (the four protos' file names are unique), with their `from likeness.<service>.v1 import`
lines rewritten, so the thin client distribution owns the only copy and the services import it from there.
The SDKs' copies of clients/service_config.json (retry policy and deadlines) are written and checked the same way.

With `--check`, generates into a temporary folder and exits 1, listing the files, when the committed code differs
(missing, stale or orphaned), so CI catches protos changed without regenerating. Go's version annotation lines
(`// \tprotoc        v3.21.12`) do not count, and `make proto` leaves a file alone when only they differ.

buf compiles the protos itself, but with the well-known types (google/protobuf/timestamp.proto, ...) bundled in buf;
ts-proto copies their comments into clients/typescript/src/gen/google/. To keep those files the same whichever buf
release runs, the protos are generated from a scratch copy of protos/ next to the system's well-known types
(Debian protobuf-compiler, /usr/include), which buf then uses instead of its own.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
TEMPLATE = ROOT / "buf.gen.yaml"
BUF = ROOT / "tools" / "node_modules" / ".bin" / "buf"
TS_PLUGIN = ROOT / "tools" / "node_modules" / ".bin" / "protoc-gen-ts_proto"
PYTHON_RAW = "python-raw"
PYTHON_PACKAGE = "likeness_client.v1"
PYTHON_IMPORT = re.compile(rb"^from likeness\.(?:trainer|inference|gallery|type)\.v1 import ", re.MULTILINE)
SERVICE_CONFIG = "clients/service_config.json"
SERVICE_CONFIG_COPIES = (
    "clients/python/likeness_client/service_config.json",
    "clients/typescript/src/service_config.json",
    "clients/go/likeness/service_config.json",
)
VERSION_LINE = re.compile(rb"^//[ \t]+(protoc|protoc-gen-go|protoc-gen-go-grpc)[ \t]+(v[0-9]|\(unknown\)).*$")


@dataclass(frozen=True)
class Tree:
    language: str
    path: str  # relative to the repository root (and to buf's output folder)
    suffixes: tuple[str, ...]
    ignore_versions: bool = False


TREES = (
    Tree("Python", "clients/python/likeness_client/v1", ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")),
    Tree("service config", "clients", ("service_config.json",)),
    Tree("TypeScript", "clients/typescript/src/gen", (".ts",)),
    Tree("Go", "clients/go/gen", (".go",), ignore_versions=True),
)


def well_known_include() -> Path | None:
    protoc = shutil.which("protoc")
    candidates = [Path("/usr/include"), Path("/usr/local/include")]
    if protoc:
        candidates.append(Path(protoc).resolve().parent.parent / "include")
    return next((d for d in candidates if (d / "google/protobuf/timestamp.proto").is_file()), None)


def missing_tools() -> list[str]:
    missing = []
    if not BUF.exists():
        missing.append("buf (tools/node_modules: make tools)")
    if not TS_PLUGIN.exists():
        missing.append("ts-proto (tools/node_modules: make tools)")
    for tool in ("node", "protoc-gen-go", "protoc-gen-go-grpc"):
        if not shutil.which(tool):
            missing.append(f"{tool} (make tools)")
    if well_known_include() is None:
        missing.append("the well-known .proto files (install protobuf-compiler: make tools)")
    return missing


def check_go_mappings() -> list[str]:
    """Every proto needs its Go import path in buf.gen.yaml (the protos carry no go_package option)."""
    template = TEMPLATE.read_text()
    return [
        f"buf.gen.yaml has no Go mapping `M{rel}=...` for protoc-gen-go and protoc-gen-go-grpc"
        for rel in sorted(p.relative_to(PROTOS).as_posix() for p in (PROTOS / "likeness").rglob("*.proto"))
        if template.count(f"- M{rel}=") < 2
    ]


def generate(out: Path) -> None:
    """Runs buf generate with buf.gen.yaml; the trees land under out/<Tree.path>."""
    include = well_known_include()
    assert include is not None
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "protos"
        shutil.copytree(PROTOS, stage, ignore=shutil.ignore_patterns("released"))
        (stage / "google" / "protobuf").mkdir(parents=True)
        for wkt in (include / "google" / "protobuf").glob("*.proto"):
            shutil.copy(wkt, stage / "google" / "protobuf" / wkt.name)
        cmd = [str(BUF), "generate", str(stage), "--template", str(TEMPLATE), "--path", str(stage / "likeness")]
        result = subprocess.run([*cmd, "-o", str(out)], cwd=ROOT, check=False)
        if result.returncode != 0:
            raise SystemExit("gen_protos: buf generate failed")
    relocate_python(out)
    for copy in SERVICE_CONFIG_COPIES:
        (out / copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / SERVICE_CONFIG, out / copy)
    shutil.copyfile(ROOT / SERVICE_CONFIG, out / SERVICE_CONFIG)


def relocate_python(out: Path) -> None:
    """Moves python-raw/likeness/*/v1/* into the client package's v1 folder and points their imports there."""
    target = out / TREES[0].path
    target.mkdir(parents=True, exist_ok=True)
    for module in sorted((out / PYTHON_RAW).rglob("*_pb2*")):
        if (target / module.name).exists():
            raise SystemExit(f"gen_protos: two protos generate {module.name}; file names must be unique")
        source = module.read_bytes()
        (target / module.name).write_bytes(PYTHON_IMPORT.sub(b"from " + PYTHON_PACKAGE.encode() + b" import ", source))
    shutil.rmtree(out / PYTHON_RAW)


def files(root: Path, tree: Tree) -> set[str]:
    base = root / tree.path
    if not base.is_dir():
        return set()
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file() and p.name.endswith(tree.suffixes)}


def same(fresh: Path, committed: Path, tree: Tree) -> bool:
    a, b = fresh.read_bytes(), committed.read_bytes()
    if not tree.ignore_versions:
        return a == b

    def strip(data: bytes) -> list[bytes]:
        return [line for line in data.split(b"\n") if not VERSION_LINE.match(line)]

    return strip(a) == strip(b)


def compare(out: Path, tree: Tree) -> list[str]:
    fresh, committed = files(out, tree), files(ROOT, tree)
    problems = []
    for rel in sorted(fresh | committed):
        if rel not in committed:
            problems.append(f"{tree.path}/{rel} (missing)")
        elif rel not in fresh:
            problems.append(f"{tree.path}/{rel} (no longer generated)")
        elif not same(out / tree.path / rel, ROOT / tree.path / rel, tree):
            problems.append(f"{tree.path}/{rel} (out of date)")
    return problems


def sync(out: Path, tree: Tree) -> None:
    """Updates the committed tree: writes new and changed files, deletes orphans, keeps files that only differ in
    version annotations (so regenerating with another protoc build changes nothing)."""
    fresh, committed = files(out, tree), files(ROOT, tree)
    for rel in sorted(fresh):
        src, dst = out / tree.path / rel, ROOT / tree.path / rel
        if rel not in committed or not same(src, dst, tree):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        print(f"generated {tree.path}/{rel}")
    for rel in sorted(committed - fresh):
        (ROOT / tree.path / rel).unlink()
        print(f"removed {tree.path}/{rel}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is out of date")
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        print("gen_protos: cannot generate, missing:", *missing, sep="\n  ", file=sys.stderr)
        return 1
    unmapped = check_go_mappings()
    if unmapped:
        print("gen_protos:", *unmapped, sep="\n  ", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        if not args.check:
            for tree in TREES:
                sync(out, tree)
            return 0
        report = []
        for tree in TREES:
            problems = compare(out, tree)
            if problems:
                report.extend(problems)
            else:
                print(f"gen_protos: {tree.language} code is up to date", file=sys.stderr)
    if report:
        print("gen_protos: generated code is out of date; run `make proto` and commit:", file=sys.stderr)
        print(*(f"  {line}" for line in report), sep="\n", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
