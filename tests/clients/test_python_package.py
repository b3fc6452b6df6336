"""The thin client package as a user gets it: `pip install ./clients/python` into a fresh virtual environment pulls
grpcio and protobuf and nothing of the services (no torch), and the README's examples run there, unchanged but for
a 2-step training, against the real services: `serve all` in one process, and the deployment's layout of three
service processes behind the gateway's one entry (tests/gateway.py); per-service addresses reach the same."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from likeness.server.embedded import EmbeddedServer
from likeness.server.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from trainer_helpers import photos

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "python"
#: What the install may bring: the client, its two dependencies and theirs, and what a bare venv has.
ALLOWED_DISTRIBUTIONS = {"likeness-client", "grpcio", "protobuf", "typing-extensions", "pip", "setuptools"}


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # From a copy, as pip builds in the source folder and would leave build/ in the checkout.
    source = shutil.copytree(
        PACKAGE, venv.parent / "likeness-client", ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, f"pip install ./clients/python failed:\n{install.stdout}\n{install.stderr}"
    return python


def test_the_install_pulls_grpcio_and_protobuf_only(client_venv: Path) -> None:
    listed = subprocess.run(
        [str(client_venv), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    names = {item["name"].lower().replace("_", "-") for item in json.loads(listed.stdout)}
    assert names <= ALLOWED_DISTRIBUTIONS, f"unexpected distributions: {sorted(names - ALLOWED_DISTRIBUTIONS)}"
    probe = "import likeness_client, likeness_client.aio, likeness_client.sync, likeness_client.v1.trainer_service_pb2"
    subprocess.run([str(client_venv), "-c", probe], check=True, timeout=60)
    no_torch = subprocess.run([str(client_venv), "-c", "import torch"], capture_output=True, timeout=60, check=False)
    assert no_torch.returncode != 0


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("readme-services")
    settings = Settings(
        storage_url=str(root / "storage"),
        cache_dir=str(root / "cache"),
        device="cpu",
        trainer_progress_interval_seconds=0.0,
        log_level="WARNING",
    )
    with EmbeddedServer(settings, ["trainer", "inference", "gallery"]) as server:
        yield server.address


def _readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (PACKAGE / "README.md").read_text(), flags=re.DOTALL)


@pytest.fixture(params=["serve-all", "gateway"])
def entry_address(request: pytest.FixtureRequest) -> str:
    """The one address the README example is pointed at: the embedded `serve all`, or the gateway's entry."""
    if request.param == "gateway":
        return str(request.getfixturevalue("gateway_stack").address)
    return str(request.getfixturevalue("services"))


def test_the_readme_examples_run_in_the_fresh_venv(client_venv: Path, entry_address: str, tmp_path: Path) -> None:
    train_and_generate, concurrent = _readme_blocks()[:2]
    short = train_and_generate.replace(
        'class_noun="dog", dataset_id=dataset.dataset_id)',
        'class_noun="dog", dataset_id=dataset.dataset_id,\n'
        "    hyperparameters=trainer_pb.Hyperparameters(max_train_steps=2, resolution=64))",
    )
    assert short != train_and_generate, "the README's TrainingJobSpec line changed; update this test's shortening"
    (tmp_path / "example.py").write_text(short + "\nprint('MODEL', model_id)\n")
    (tmp_path / "readme_asyncio.py").write_text(concurrent + "\nimport sys\nasyncio.run(main(sys.argv[1]))\n")
    photo_paths = []
    for name, data in photos(3):
        (tmp_path / name).write_bytes(data)
        photo_paths.append(name)
    env = {
        **os.environ,
        "LIKENESS_ADDRESS": entry_address,
        "LIKENESS_BASE_MODEL": "toy-sd15",
        "PYTHONPATH": "",
    }
    run = subprocess.run(
        [str(client_venv), "example.py", *photo_paths],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, f"README example failed:\n{run.stdout}\n{run.stderr}"
    assert "succeeded" in run.stdout
    model_id = re.search(r"^MODEL (\S+)$", run.stdout, flags=re.MULTILINE).group(1)
    assert list(tmp_path.glob("beach-*.png")), run.stdout
    assert (tmp_path / "models" / model_id / "manifest.json").is_file()
    again = subprocess.run(
        [str(client_venv), "readme_asyncio.py", model_id],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, f"asyncio README example failed:\n{again.stdout}\n{again.stderr}"
    assert again.stdout.strip() == "[1, 1]"


def test_per_service_addresses_reach_each_process(gateway_stack) -> None:
    from likeness_client import LikenessClient

    addresses = gateway_stack.services
    with LikenessClient(
        "127.0.0.1:1",  # nothing listens there: every call must go to its own service's address
        trainer_address=addresses["trainer"],
        inference_address=addresses["inference"],
        gallery_address=addresses["gallery"],
    ) as client:
        client.wait_until_serving("likeness.inference.v1.InferenceService", timeout=60)
        client.list_training_jobs(page_size=1)
        assert client.get_server_status().base_models
        assert client.list_templates()
