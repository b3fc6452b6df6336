"""The TypeScript SDK: compiles with tsc, and a Node program built on it talks to a real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from scripted_services import DEFAULT_SEED, WATCH_EVENTS, image_sha256

ROOT = Path(__file__).resolve().parents[2]

SDK = ROOT / "clients" / "typescript"
TOOLS = ROOT / "tools" / "node_modules"
TSC = TOOLS / ".bin" / "tsc"


def _require_node_tools() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node.js 18+ is needed for the TypeScript SDK)")
    if not TSC.exists() or not (TOOLS / "@grpc" / "grpc-js").exists():
        pytest.skip("tools/node_modules lacks typescript or @grpc/grpc-js; run `make tools`")
    return node


@pytest.fixture(scope="session")
def compiled_sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SDK plus the end-to-end driver, compiled in a scratch copy whose node_modules is the repo's tools."""
    node = _require_node_tools()
    build = tmp_path_factory.mktemp("ts-sdk")
    shutil.copytree(SDK / "src", build / "src")
    shutil.copy(SDK / "tsconfig.json", build / "tsconfig.json")
    shutil.copy(SDK / "package.json", build / "package.json")
    shutil.copy(Path(__file__).parent / "node" / "e2e.ts", build / "src" / "e2e_driver.ts")
    (build / "node_modules").symlink_to(TOOLS, target_is_directory=True)
    result = subprocess.run(
        [node, str(TSC), "-p", str(build)], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, f"tsc failed:\n{result.stdout}\n{result.stderr}"
    return build


def test_sdk_compiles_with_declarations(compiled_sdk: Path):
    declarations = (compiled_sdk / "dist" / "index.d.ts").read_text()
    for name in ("createClients", "generateImages", "watchTrainingJob", "ImageAssembler", "trainerv1"):
        assert name in declarations
    assert (compiled_sdk / "dist" / "gen" / "likeness" / "trainer" / "v1" / "trainer_service.js").exists()


def _drive(compiled_sdk: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    """Runs the e2e driver and returns the JSON report on its last line."""
    result = subprocess.run(
        ["node", str(compiled_sdk / "dist" / "e2e_driver.js"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, f"node driver failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _without_credentials_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("LIKENESS_API_KEY", "LIKENESS_TLS_CA_FILE")}


def test_node_client_against_live_server(compiled_sdk: Path, live_server):
    _check_scenario(_drive(compiled_sdk, live_server.address), live_server)


def test_node_client_over_tls_with_api_key(compiled_sdk: Path, tls_live_server):
    server = tls_live_server
    report = _drive(compiled_sdk, server.address, "--ca", server.ca_file, "--key", server.api_key)
    _check_scenario(report, server)


def test_node_client_takes_tls_and_key_from_env_and_is_unauthenticated_without_key(compiled_sdk: Path, tls_live_server):
    env = {**_without_credentials_env(), "LIKENESS_TLS_CA_FILE": tls_live_server.ca_file}
    assert _drive(compiled_sdk, tls_live_server.address, "--probe", env=env) == {"code": 16}  # UNAUTHENTICATED
    env["LIKENESS_API_KEY"] = tls_live_server.api_key
    assert _drive(compiled_sdk, tls_live_server.address, "--probe", env=env) == {"code": 0}


def _check_scenario(report: dict, live_server) -> None:
    assert report["health"] == {"server": "SERVING", "gallery": "SERVING", "unknown": 5}  # NOT_FOUND
    assert report["templateCount"] > 0 and report["templatesHavePlaceholder"]
    assert report["topHitId"] == report["recordedId"] and report["topHitSteps"] == 25

    assert report["events"][:2] == ["accepted", "warning"]
    assert report["events"].count("progress") == 2 and report["events"][-1] == "summary"
    images = sorted(report["images"], key=lambda image: image["index"])
    assert [image["index"] for image in images] == [0, 1]
    for image in images:
        seed = DEFAULT_SEED + image["index"]
        assert image["seed"] == str(seed)  # int64 beyond 2**53 survives as bigint
        assert image["sha256"] == image_sha256(image["index"], seed)
        assert image["format"] == 2  # IMAGE_FORMAT_JPEG
    assert report["firstEvent"] == "accepted"
    assert report["failure"]["code"] == 8 and "fewer images" in report["failure"]["details"]  # RESOURCE_EXHAUSTED

    assert report["sequences"] == [str(s) for s in range(1, WATCH_EVENTS + 1)]
    assert report["succeededModel"] == "subject-scripted"
    assert report["missing"] == 5
    calls = [call for call in live_server.scripted.trainer.watch_calls if call[0] == "job-node"]
    assert calls == [("job-node", 0), ("job-node", 3)]
