"""The Go SDK: builds and vets offline, and a Go program built on it talks to a real server.

Builds in GOPATH mode against the Debian Go libraries (/usr/share/gocode, installed by `make tools`), since
nothing may be downloaded: no module proxy, no go.sum needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from scripted_services import DEFAULT_SEED, WATCH_EVENTS, image_sha256

ROOT = Path(__file__).resolve().parents[2]

MODULE_PATH = "github.com/likeness-ai/likeness/clients/go"
SYSTEM_GOPATH = Path("/usr/share/gocode")


@pytest.fixture(scope="session")
def go_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A GOPATH holding the SDK (a link to clients/go) and the e2e driver, plus the environment to build in it."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (golang-go; run `make tools`)")
    if not (SYSTEM_GOPATH / "src" / "google.golang.org" / "grpc").is_dir():
        pytest.skip("grpc-go is not installed offline (golang-google-grpc-dev in /usr/share/gocode; `make tools`)")
    gopath = tmp_path_factory.mktemp("gopath")
    sdk_link = gopath / "src" / MODULE_PATH
    sdk_link.parent.mkdir(parents=True)
    sdk_link.symlink_to(ROOT / "clients" / "go", target_is_directory=True)
    driver = gopath / "src" / "likenesse2e"
    driver.mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "go" / "main.go", driver / "main.go")
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}{os.pathsep}{SYSTEM_GOPATH}",
        "GOFLAGS": "",
        "GOPROXY": "off",
    }
    return gopath, env


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"go {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def test_go_sdk_builds_and_vets(go_workspace):
    gopath, env = go_workspace
    sdk = gopath / "src" / MODULE_PATH
    _go(["build", "./..."], sdk, env)
    _go(["vet", "./..."], sdk, env)
    unformatted = subprocess.run(["gofmt", "-l", "."], cwd=sdk, capture_output=True, text=True, check=False).stdout
    assert unformatted == "", f"gofmt would change: {unformatted}"


@pytest.fixture(scope="session")
def go_driver(go_workspace) -> Path:
    """The e2e driver, built once."""
    gopath, env = go_workspace
    binary = gopath / "likeness-e2e"
    _go(["build", "-o", str(binary), "likenesse2e"], gopath, env)
    return binary


def _drive(binary: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    result = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60, check=False, env=env)
    assert result.returncode == 0, f"go driver failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def _without_credentials_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("LIKENESS_API_KEY", "LIKENESS_TLS_CA_FILE")}


def test_go_client_against_live_server(go_driver, live_server):
    _check_scenario(_drive(go_driver, live_server.address), live_server)


def test_go_client_over_tls_with_api_key(go_driver, tls_live_server):
    server = tls_live_server
    _check_scenario(_drive(go_driver, "-ca", server.ca_file, "-key", server.api_key, server.address), server)


def test_go_client_takes_tls_and_key_from_env_and_is_unauthenticated_without_key(go_driver, tls_live_server):
    env = {**_without_credentials_env(), "LIKENESS_TLS_CA_FILE": tls_live_server.ca_file}
    assert _drive(go_driver, "-probe", tls_live_server.address, env=env) == {"code": "Unauthenticated"}  # 16
    env["LIKENESS_API_KEY"] = tls_live_server.api_key
    assert _drive(go_driver, "-probe", tls_live_server.address, env=env) == {"code": "OK"}


def _check_scenario(report: dict, live_server) -> None:
    assert report["gallery_serving"]
    assert report["template_count"] > 0 and report["placeholders"]
    assert report["top_hit_id"] == report["recorded_id"] != ""

    assert report["accepted"] == "a photo of {subject} on a mountain top"
    assert report["progress"] == 20 and report["warnings"] == ["prompt truncated"]
    images = sorted(report["images"], key=lambda image: image["index"])
    assert [image["index"] for image in images] == [0, 1]
    for image in images:
        seed = DEFAULT_SEED + image["index"]
        assert image["seed"] == str(seed)
        assert image["sha256"] == image_sha256(image["index"], seed)
        assert image["format"] == "png"
    assert report["summary_seeds"] == [str(DEFAULT_SEED), str(DEFAULT_SEED + 1)]
    assert report["failure_code"] == "ResourceExhausted"

    assert report["sequences"] == list(range(1, WATCH_EVENTS + 1))
    assert report["missing"] == "NotFound"
    calls = [call for call in live_server.scripted.trainer.watch_calls if call[0] == "job-go"]
    assert calls == [("job-go", 0), ("job-go", 3)]
