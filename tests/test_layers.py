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
    # Outbound HTTP to caller-named URLs behind the one SSRF guard (webhooks, photo URLs).
    "net": {"errors"},
    "storage": {"errors"},
    "controlplane": {"errors", "storage"},
    "api": {"errors"},
    "identity": {"controlplane", "enums", "errors", "storage"},
    "dataset": {"errors", "storage"},
    # The toy base model is a built-in the world provides: likeness.world registers it (BUILTIN_PROVIDERS).
    "models": {"errors", "threads"},
    "server": {"api", "controlplane", "enums", "errors", "identity", "net", "storage"},
    "gallery": {"api", "controlplane", "enums", "errors", "models", "server", "storage", "text", "threads"},
    # Image inputs (img2img, inpainting) decode with the dataset's checked, EXIF-upright photo decoder.
    "inference": {
        "api", "controlplane", "dataset", "errors", "gallery", "identity", "models", "runtime", "server", "storage", "text",
        "threads",
    },
    "trainer": {
        "api", "controlplane", "dataset", "enums", "errors", "identity", "models", "net", "runtime", "server",
        "storage",
    },
    "erasure": {"controlplane", "enums", "errors", "gallery", "storage", "trainer"},
    "studio": {"api", "errors", "gallery", "inference", "server", "trainer"},
    "world": {"errors", "inference", "models", "server", "trainer"},
}  # fmt: skip
#: Top-level packages that may import anything (the command line and the package root).
TOP = {"cli", "__init__", "__main__"}
#: Edge modules that wire a service's core to what sits above it (the erasure spans trainer and gallery, and
#: TrainerService serves it); only they may reach across a layer.
WIRING = {"trainer/service.py": {"erasure", "gallery"}, "trainer/servicer.py": {"erasure"}}
#: Where gRPC may appear: servicers, components, the bootstrap, the shared status table, and the two packages that
#: call the services as clients (the command line, the Studio and the world's runner).
GRPC_ALLOWED = (
    "servicer.py", "service.py", "testing.py", "server/", "api/status.py", "cli/", "studio/", "world/runner.py",
)  # fmt: skip
#: What of the client package (the layer below everything: the API's messages, errors and webhook signatures) any
#: module may import; the clients, channels and stubs open connections and belong to the gRPC-allowed modules.
CLIENT_PACKAGE_FOR_CORES = ("likeness_client.errors", "likeness_client.v1", "likeness_client.webhooks")


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
        if _opens_grpc(module) and not any(part in path.relative_to(PACKAGE).as_posix() for part in GRPC_ALLOWED)
    ]
    assert offenders == [], offenders


def _opens_grpc(module: str) -> bool:
    if module.split(".")[0] == "grpc" or module.endswith("_pb2_grpc"):
        return True
    return module.split(".")[0] == "likeness_client" and not module.startswith(CLIENT_PACKAGE_FOR_CORES)


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    # The storage layer importing the trainer must be reported (the check itself can fail).
    probe = tmp_path / "probe.py"
    probe.write_text("from likeness.trainer.jobs import TrainingJobs\n")
    ((module, _),) = _imports(probe)
    assert module.split(".")[1] not in ALLOWED["storage"]
