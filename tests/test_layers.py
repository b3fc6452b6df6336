"""The layer contract of services/likeness (docs/architecture.md): which package may import which, and that gRPC
stays in the servicers, components, the bootstrap and the client. Read from the source with `ast`, so an
upward import fails this test before it tangles anything."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "services" / "likeness"

#: Package -> the likeness packages it may import. Everything not listed for a package is an upward import.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "enums": set(),
    "text": {"errors"},
    "threads": set(),
    "runtime": {"errors"},
    "type": set(),
    "storage": {"errors"},
    "controlplane": {"errors", "storage"},
    "api": {"errors", "type"},
    "identity": {"controlplane", "enums", "errors", "storage"},
    "dataset": {"errors", "storage"},
    # The toy base model is a built-in the world provides: likeness.world registers it (BUILTIN_PROVIDERS).
    "models": {"errors", "threads"},
    "server": {"api", "controlplane", "enums", "errors", "identity", "storage"},
    "gallery": {"api", "controlplane", "enums", "errors", "models", "server", "storage", "text", "threads"},
    "inference": {
        "api", "controlplane", "errors", "gallery", "identity", "models", "runtime", "server", "storage", "text",
        "threads", "type",
    },
    "trainer": {
        "api", "controlplane", "dataset", "enums", "errors", "identity", "models", "runtime", "server", "storage",
        "type",
    },
    "erasure": {"controlplane", "enums", "errors", "gallery", "storage", "trainer"},
    "client": {"api", "errors", "gallery", "inference", "trainer", "type"},
    "studio": {"api", "client", "errors", "gallery", "inference", "server", "trainer", "type"},
    "world": {"client", "errors", "inference", "models", "server", "trainer", "type"},
}  # fmt: skip
#: Top-level packages that may import anything (the command line and the package root).
TOP = {"cli", "__init__", "__main__"}
#: Edge modules that wire a service's core to what sits above it (the erasure spans trainer and gallery, and
#: TrainerService serves it); only they may reach across a layer.
WIRING = {"trainer/service.py": {"erasure", "gallery"}, "trainer/servicer.py": {"erasure"}}
#: Where gRPC may appear: servicers, components, the bootstrap, the client, the shared status table.
GRPC_ALLOWED = ("servicer.py", "service.py", "testing.py", "server/", "client.py", "api/status.py")


def _imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
    return found


def _sources() -> list[Path]:
    return [path for path in sorted(PACKAGE.rglob("*.py")) if not path.name.endswith(("_pb2.py", "_pb2_grpc.py"))]


def test_packages_import_only_their_layers() -> None:
    violations = []
    for path in _sources():
        relative = path.relative_to(PACKAGE).as_posix()
        package = relative.split("/")[0].removesuffix(".py")
        if package in TOP:
            continue
        assert package in ALLOWED, f"{relative}: package {package!r} has no entry in the layer contract; add one"
        allowed = ALLOWED[package] | WIRING.get(relative, set()) | {package}
        for module, line in _imports(path):
            parts = module.split(".")
            if parts[0] != "likeness" or len(parts) < 2:
                continue
            if parts[1] not in allowed:
                violations.append(f"{relative}:{line} imports {module} ({package} may import {sorted(allowed)})")
    assert violations == [], "\n".join(violations)


def test_domain_cores_have_no_grpc() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE).as_posix()}:{line}"
        for path in _sources()
        for module, line in _imports(path)
        if module.split(".")[0] == "grpc"
        and not any(part in path.relative_to(PACKAGE).as_posix() for part in GRPC_ALLOWED)
    ]
    assert offenders == [], offenders


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    # The storage layer importing the trainer must be reported (the check itself can fail).
    probe = tmp_path / "probe.py"
    probe.write_text("from likeness.trainer.jobs import TrainingJobs\n")
    ((module, _),) = _imports(probe)
    assert module.split(".")[1] not in ALLOWED["storage"]
