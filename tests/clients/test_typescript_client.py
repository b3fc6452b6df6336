"""The TypeScript SDK: compiles with tsc (strict), its helpers pass their checks against fake grpc-js servers
(tests/clients/node/units.ts), and a Node program built on it talks to the scripted services on the real server
bootstrap (tests/clients/node/e2e.ts). tests/clients/test_typescript_real_server.py runs it against `serve all`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from scripted_services import DEFAULT_SEED, WATCH_EVENTS, image_sha256

ROOT = Path(__file__).resolve().parents[2]

SDK = ROOT / "clients" / "typescript"
NODE_TESTS = Path(__file__).parent / "node"
TOOLS = ROOT / "tools" / "node_modules"
TSC = TOOLS / ".bin" / "tsc"
CANONICAL_SERVICE_CONFIG = ROOT / "clients" / "service_config.json"
SDK_SERVICE_CONFIG = SDK / "src" / "service_config.json"
README = SDK / "README.md"
#: The line before the README's code block that test_typescript_real_server.py compiles and runs.
README_EXAMPLE_MARKER = "<!-- example: tests/clients/test_typescript_real_server.py compiles and runs this block -->"

_builds: dict[str, Path] = {}


def require_node_tools() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node.js 18+ is needed for the TypeScript SDK)")
    if not TSC.exists() or not (TOOLS / "@grpc" / "grpc-js").exists():
        pytest.skip("tools/node_modules lacks typescript or @grpc/grpc-js; run `make tools`")
    return node


def readme_example() -> str:
    """The README's example, importing the SDK from the sources it is compiled with."""
    text = README.read_text()
    assert README_EXAMPLE_MARKER in text, f"{README} lost its tested example (the marker line)"
    block = text.split(README_EXAMPLE_MARKER, 1)[1]
    opening = block.index("```ts\n")
    code = block[opening + len("```ts\n") :]
    code = code[: code.index("\n```")]
    assert '"@likeness/client"' in code, "the example imports the package as users do"
    return code.replace('"@likeness/client"', '"./index"') + "\n"


def build_sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SDK with the Node test programs and the README example, compiled once per session in a scratch copy
    whose node_modules is the repo's tools."""
    if "sdk" in _builds:
        return _builds["sdk"]
    node = require_node_tools()
    build = tmp_path_factory.mktemp("ts-sdk")
    shutil.copytree(SDK / "src", build / "src")
    shutil.copy(SDK / "tsconfig.json", build / "tsconfig.json")
    shutil.copy(SDK / "package.json", build / "package.json")
    for program in NODE_TESTS.glob("*.ts"):
        shutil.copy(program, build / "src" / program.name)
    (build / "src" / "readme_example.ts").write_text(readme_example())
    (build / "node_modules").symlink_to(TOOLS, target_is_directory=True)
    result = subprocess.run(
        [node, str(TSC), "-p", str(build)], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, f"tsc failed:\n{result.stdout}\n{result.stderr}"
    _builds["sdk"] = build
    return build


@pytest.fixture(scope="session")
def compiled_sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sdk(tmp_path_factory)


def test_service_config_copy_is_the_canonical_file():
    """The SDK embeds its own copy (npm packages cannot reach outside their folder); `make proto` writes it."""
    assert SDK_SERVICE_CONFIG.read_bytes() == CANONICAL_SERVICE_CONFIG.read_bytes(), (
        f"{SDK_SERVICE_CONFIG.relative_to(ROOT)} differs from {CANONICAL_SERVICE_CONFIG.relative_to(ROOT)}; "
        "run `make proto` (or copy the canonical file)"
    )


def test_sdk_compiles_with_declarations(compiled_sdk: Path):
    declarations = (compiled_sdk / "dist" / "index.d.ts").read_text()
    for name in (
        "createClients",
        "generateImages",
        "watchTrainingJob",
        "prepareDataset",
        "downloadSubjectModel",
        "verifyWebhookSignature",
        "LikenessError",
        "ImageAssembler",
        "trainerv1",
    ):
        assert name in declarations
    assert (compiled_sdk / "dist" / "gen" / "likeness" / "trainer" / "v1" / "trainer_service.js").exists()
    # tsc copies the service config next to the code that embeds it.
    assert json.loads((compiled_sdk / "dist" / "service_config.json").read_text()) == json.loads(
        CANONICAL_SERVICE_CONFIG.read_text()
    )


def _webhook_vectors() -> list[dict]:
    """Deliveries signed here the Standard Webhooks way, independently of the SDK: with a plain secret (keyed with
    its UTF-8 bytes) and with a `whsec_<base64>` one (keyed with the decoded bytes)."""
    delivery_id, timestamp = "dlv_01j9", 1_750_000_000
    body = json.dumps({"type": "training_job.state_changed", "job_id": "job-1", "sequence": 3, "state": "RUNNING"})
    vectors = []
    for secret, key in (
        ("a-webhook-secret-of-some-length", b"a-webhook-secret-of-some-length"),
        ("whsec_" + base64.b64encode(b"\x00\xffa 24-byte signing key").decode(), b"\x00\xffa 24-byte signing key"),
    ):
        mac = hmac.new(key, f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
        signature = "v1," + base64.b64encode(mac).decode()
        vectors.append(
            {"secret": secret, "id": delivery_id, "timestamp": timestamp, "body": body, "signature": signature}
        )
    return vectors


def test_sdk_helpers_against_fake_servers(compiled_sdk: Path):
    """Pushback, status details, per-service addresses, downloads (good, tampered, escaping the folder), upload
    argument checks, webhook verification, the embedded service config: tests/clients/node/units.ts."""
    result = subprocess.run(
        [
            "node",
            str(compiled_sdk / "dist" / "units.js"),
            "--service-config",
            str(CANONICAL_SERVICE_CONFIG),
            "--webhook",
            json.dumps(_webhook_vectors()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"units.js printed nothing:\n{result.stderr}"
    report = json.loads(lines[-1])
    assert report["failed"] == [], "\n\n".join(f"{f['name']}:\n{f['error']}" for f in report["failed"])
    assert result.returncode == 0, result.stderr
    assert len(report["passed"]) >= 12, report["passed"]


def _drive(compiled_sdk: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    """Runs the e2e driver and returns the JSON report on its last line."""
    result = subprocess.run(
        ["node", str(compiled_sdk / "dist" / "e2e.js"), *args],
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
    assert report["failure"]["requestId"]  # the server's x-request-id trailer, surfaced on the LikenessError

    assert report["sequences"] == [str(s) for s in range(1, WATCH_EVENTS + 1)]
    assert report["succeededModel"] == "subject-scripted"
    assert report["missing"] == [5, True]  # NOT_FOUND, as a LikenessError
    calls = [call for call in live_server.scripted.trainer.watch_calls if call[0] == "job-node"]
    assert calls == [("job-node", 0), ("job-node", 3)]

    _check_upload_and_create(report, live_server)


def _check_upload_and_create(report: dict, live_server) -> None:
    trainer = live_server.scripted.trainer
    # The last upload the scripted trainer saw is the driver's (after its abandoned one).
    assert trainer.upload_options is not None and trainer.upload_options.display_name == "node upload"
    assert trainer.uploads == {
        "big.jpg": b"\x01" * (2 * 1024 * 1024 + 512 * 1024),
        "disk.png": b"\x09" * (1024 * 1024 + 3),
        "empty.jpg": b"",
        "photo-003": b"raw",
    }
    assert max(trainer.chunk_sizes) == 1024 * 1024  # at most 1 MiB a message
    assert report["upload"]["missingFile"] == ["ENOENT", False]  # the read error, the upload abandoned
    assert report["upload"]["reports"] == [
        ["big.jpg", True],
        ["disk.png", True],
        ["empty.jpg", False],
        ["photo-003", True],
    ]

    create = report["create"]
    assert trainer.create_calls.count("flaky-node") == 3  # UNAVAILABLE, its retry by gRPC, the second create
    assert create["existing"] == [False, True] and create["sameJob"]
    assert len(create["generatedKey"]) == 32 and create["generatedKey"] in trainer.create_calls
