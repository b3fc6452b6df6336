"""The Go SDK: builds, vets and passes its unit tests offline, and a Go program built on it talks to a server with
the real bootstrap and gallery and the scripted trainer and inference streams (tests/clients/scripted_services.py).
tests/clients/test_go_real_server.py runs the README example against the real services.

Builds in GOPATH mode against the Debian Go libraries (/usr/share/gocode, installed by `make tools`), since
nothing may be downloaded: no module proxy, no go.sum needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from scripted_services import DEFAULT_SEED, WATCH_EVENTS, image_sha256

from likeness_client import webhooks

ROOT = Path(__file__).resolve().parents[2]

MODULE_PATH = "github.com/likeness-ai/likeness/clients/go"
SYSTEM_GOPATH = Path("/usr/share/gocode")
UPLOAD_CHUNK_BYTES = 1024 * 1024


def make_go_workspace(gopath: Path) -> dict[str, str]:
    """A GOPATH holding the SDK (a link to clients/go) and the e2e driver; returns the environment to build in it.

    GRPC_GO_RETRY=on: grpc-go before 1.40 performs the service config's retries only with it."""
    if shutil.which("go") is None:
        pytest.skip("go is not installed (golang-go; run `make tools`)")
    if not (SYSTEM_GOPATH / "src" / "google.golang.org" / "grpc").is_dir():
        pytest.skip("grpc-go is not installed offline (golang-google-grpc-dev in /usr/share/gocode; `make tools`)")
    sdk_link = gopath / "src" / MODULE_PATH
    sdk_link.parent.mkdir(parents=True)
    sdk_link.symlink_to(ROOT / "clients" / "go", target_is_directory=True)
    driver = gopath / "src" / "likenesse2e"
    driver.mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "go" / "main.go", driver / "main.go")
    return {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}{os.pathsep}{SYSTEM_GOPATH}",
        "GOFLAGS": "",
        "GOPROXY": "off",
        "GRPC_GO_RETRY": "on",
    }


def go(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"go {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def go_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    gopath = tmp_path_factory.mktemp("gopath")
    return gopath, make_go_workspace(gopath)


def test_go_sdk_builds_vets_and_passes_its_unit_tests(go_workspace):
    """The unit tests cover uploads, downloads (checksums, paths that leave the folder), error details, webhook
    signatures, per-service addresses, and the embedded service config against clients/service_config.json."""
    gopath, env = go_workspace
    sdk = gopath / "src" / MODULE_PATH
    go(["build", "./..."], sdk, env)
    go(["vet", "./...", "likenesse2e"], sdk, env)
    go(["test", "-count=1", "./likeness"], sdk, env)
    unformatted = subprocess.run(
        ["gofmt", "-l", ".", str(Path(__file__).parent / "go")], cwd=sdk, capture_output=True, text=True, check=False
    ).stdout
    assert unformatted == "", f"gofmt would change: {unformatted}"


def test_embedded_service_config_is_the_canonical_one():
    canonical = ROOT / "clients" / "service_config.json"
    copy = ROOT / "clients" / "go" / "likeness" / "service_config.json"
    assert copy.read_bytes() == canonical.read_bytes(), f"copy {canonical} over {copy}"


@pytest.fixture(scope="session")
def go_driver(go_workspace) -> Path:
    """The e2e driver, built once."""
    gopath, env = go_workspace
    binary = gopath / "likeness-e2e"
    go(["build", "-o", str(binary), "likenesse2e"], gopath, env)
    return binary


def drive(binary: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60):
    env = {**(env if env is not None else os.environ), "GRPC_GO_RETRY": "on"}
    result = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=timeout, check=False, env=env, input=stdin
    )
    assert result.returncode == 0, f"go driver failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def _without_credentials_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("LIKENESS_API_KEY", "LIKENESS_TLS_CA_FILE")}


def test_go_client_against_live_server(go_driver, live_server):
    _check_scenario(drive(go_driver, live_server.address), live_server)


def test_go_client_over_tls_with_api_key(go_driver, tls_live_server):
    server = tls_live_server
    _check_scenario(drive(go_driver, "-ca", server.ca_file, "-key", server.api_key, server.address), server)


def test_go_client_takes_tls_and_key_from_env_and_is_unauthenticated_without_key(go_driver, tls_live_server):
    env = {**_without_credentials_env(), "LIKENESS_TLS_CA_FILE": tls_live_server.ca_file}
    assert drive(go_driver, "-probe", tls_live_server.address, env=env) == {"code": "Unauthenticated"}  # 16
    env["LIKENESS_API_KEY"] = tls_live_server.api_key
    assert drive(go_driver, "-probe", tls_live_server.address, env=env) == {"code": "OK"}


def test_go_webhook_verification_accepts_what_the_python_signer_signs(go_driver):
    secret, body, now = "whsec-of-at-least-16", '{"type": "training_job.progress", "sequence": 7}', 1_750_000_000
    signed = webhooks.signed_headers(secret, "dlv_01", body.encode(), timestamp=now)
    rotated = {**signed, "webhook-signature": "v1,AAAA " + signed["webhook-signature"]}
    cases = [
        {"secret": secret, "headers": signed, "body": body, "now": now + 60},
        {"secret": secret, "headers": rotated, "body": body, "now": now},
        {"secret": "another-secret-of-16", "headers": signed, "body": body, "now": now},
        {"secret": secret, "headers": signed, "body": body.replace("7", "8"), "now": now},
        {"secret": secret, "headers": signed, "body": body, "now": now + webhooks.TOLERANCE_SECONDS + 1},
    ]
    results = drive(go_driver, "-webhook", stdin=json.dumps(cases))
    assert results[:2] == ["", ""]
    assert all("webhook signature" in error for error in results[2:]), results


def _check_scenario(report: dict, live_server) -> None:
    assert report["gallery_serving"]
    assert report["template_count"] > 0 and report["placeholders"]
    assert report["top_hit_id"] == report["recorded_id"] != ""
    assert report["recorded_prompt"] == "a charcoal sketch of {subject} reading in a library"

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
    # A stream that fails after its first messages is committed: gRPC does not retry it.
    assert report["failure_code"] == "ResourceExhausted"
    assert report["failure_message"] == "out of GPU memory; retry with fewer images"

    assert report["sequences"] == list(range(1, WATCH_EVENTS + 1))
    assert report["missing"] == "NotFound"
    calls = [call for call in live_server.scripted.trainer.watch_calls if call[0] == "job-go"]
    assert calls == [("job-go", 0), ("job-go", 3)]

    scripted = live_server.scripted.trainer
    # The server's BadRequest detail, parsed by likeness.FromError; repeated names are refused before any call.
    assert report["bad_request_field"] == "options"
    assert report["duplicate_field"] == "photos"
    # The upload: options first, then every photo in chunks of at most 1 MiB; an empty photo is one empty chunk.
    assert scripted.upload_options is not None and scripted.upload_options.display_name == "go upload"
    uploaded = {name: (len(data), hashlib.sha256(data).hexdigest()) for name, data in scripted.uploads.items()}
    assert uploaded == {upload["name"]: (upload["size"], upload["sha256"]) for upload in report["uploads"]}
    large = report["uploads"][0]["size"]
    assert large == UPLOAD_CHUNK_BYTES * 5 // 2
    assert scripted.chunk_sizes == [UPLOAD_CHUNK_BYTES, UPLOAD_CHUNK_BYTES, UPLOAD_CHUNK_BYTES // 2, 5, 0]
    assert report["dataset_id"] == "dataset-scripted"
    # The first create failed UNAVAILABLE; gRPC's retry (the service config) sent it again with the same key.
    assert scripted.create_calls.count(report["retried_key"]) == 2
    assert report["retried_job_id"].startswith("job-")
    assert len(report["generated_key"]) == 32 and report["generated_key"] in scripted.create_calls
