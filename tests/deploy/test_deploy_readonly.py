"""The services run as the manifests run them: root filesystem read-only, only the pod's volumes writable.

No container runtime here, so the pod's filesystem is rebuilt in a private mount namespace (`unshare -m`):
the root is remounted read-only, and each writable volumeMount of the rendered inference container (shared
storage, cache, /tmp) becomes a writable folder of the test. The process gets that container's environment (the
Dockerfile's ENV, then the ConfigMap, then the container's env) and serves all three services, so every
component's start-up and a write of each kind (a builtin base model into the cache, a prompt record into
storage, a generated image) happen under the same constraints as in the pod. (The process runs as this machine's
user, because the virtual environment may not be readable by others; the manifests enforce uid 10001.)
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from deploy_helpers import by_kind, container_environment, free_port, kustomize, run_tool
from grpc_health.v1 import health_pb2, health_pb2_grpc

from likeness_client.v1 import gallery_service_pb2 as gallery_pb
from likeness_client.v1 import gallery_service_pb2_grpc as gallery_grpc
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import inference_service_pb2_grpc as inference_grpc
from likeness_client.v1 import types_pb2

#: Writable in the pod but provided by the host here as they are (/dev/shm is already a writable tmpfs).
HOST_PROVIDED = {"/dev/shm"}


def sandbox_available() -> str | None:
    """None when private read-only mounts can be made here, else why not."""
    if not Path("/usr/bin/unshare").exists():
        return "unshare (util-linux) is not installed"
    probe = run_tool(["unshare", "-m", "--propagation", "private", "mount", "-o", "remount,bind,ro", "/"])
    if probe.returncode != 0:
        return f"cannot make private read-only mounts here (needs CAP_SYS_ADMIN): {probe.stderr.strip()}"
    return None


def sandbox_script(mounts: dict[str, Path], command: list[str]) -> str:
    """Shell commands that mount each pod path onto its host folder, make / read-only, then exec `command`.
    Pod paths whose parent does not exist on the host get a tmpfs over their top folder to hold the mount point."""
    lines = ["set -eu"]
    tops = sorted({"/" + path.strip("/").split("/")[0] for path in mounts if path != "/tmp"})
    for top in tops:
        lines.append(f"mount -t tmpfs -o size=64m tmpfs {top}")
    for path, folder in mounts.items():
        if path != "/tmp":
            lines += [f"mkdir -p {path}", f"mount --bind {shlex.quote(str(folder))} {path}"]
    # /tmp last: the host folders above live under the host's /tmp.
    if "/tmp" in mounts:
        lines.append(f"mount --bind {shlex.quote(str(mounts['/tmp']))} /tmp")
    lines.append("mount -o remount,bind,ro /")
    lines.append("exec " + " ".join(shlex.quote(part) for part in command))
    return "\n".join(lines)


@pytest.fixture
def read_only_server(tmp_path) -> Iterator[dict[str, Any]]:
    reason = sandbox_available()
    if reason:
        pytest.skip(reason)
    objects = kustomize("overlays/dev")
    container = by_kind(objects, "Deployment")["likeness-inference"]["spec"]["template"]["spec"]["containers"][0]
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    assert {"/var/lib/likeness", "/var/cache/likeness", "/tmp"} <= set(writable)
    mounts = {}
    for path in writable:
        if path not in HOST_PROVIDED:
            mounts[path] = tmp_path / path.strip("/").replace("/", "_")
            mounts[path].mkdir()

    hidden = [path for path in mounts if Path(sys.prefix).is_relative_to(path) or Path(__file__).is_relative_to(path)]
    if hidden:
        pytest.skip(f"the checkout or its venv lives under {hidden[0]}, which the sandbox replaces with a pod volume")

    environment = container_environment(container, objects)
    environment.pop("PATH")  # the image's venv path; here the test's interpreter is used directly
    port, metrics_port = free_port(), free_port()
    environment.update(
        PATH=os.environ["PATH"],
        OMP_NUM_THREADS="1",
        LIKENESS_HOST="127.0.0.1",
        LIKENESS_PORT=str(port),
        LIKENESS_METRICS_PORT=str(metrics_port),
        # Build the tiny base model at start-up, as production preloads its real ones: a write into the cache.
        LIKENESS_PRELOAD_BASE_MODELS="tiny-sd15",
        LIKENESS_GRACE_SECONDS="5",
        # No cluster database here: the embedded SQLite file on the writable storage volume (a write the test
        # wants to see allowed), and no API keys, which this test of the file system does not exercise.
        LIKENESS_DATABASE_URL="sqlite:////var/lib/likeness/likeness.db",
        LIKENESS_AUTH="none",
    )
    script = sandbox_script(mounts, [sys.executable, "-m", "likeness.cli.main", "serve", "all"])
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            env=environment,
            stdout=out,
            stderr=out,
        )
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 300  # generous: model creation is slow on a loaded CI machine
            while True:
                if process.poll() is not None:
                    pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, f"not SERVING after 120 s:\n{log.read_text()[-4000:]}"
                time.sleep(0.25)
        yield {"address": address, "mounts": mounts, "process": process, "log": log}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_services_run_with_a_read_only_root_filesystem(read_only_server):
    mounts = read_only_server["mounts"]
    with grpc.insecure_channel(read_only_server["address"]) as channel:
        recorded = gallery_grpc.GalleryServiceStub(channel).RecordPrompt(
            gallery_pb.RecordPromptRequest(prompt="a watercolor of a lighthouse", base_model="tiny-sd15"), timeout=30
        )
        assert recorded.prompt.prompt_id
        request = inference_pb.GenerateImagesRequest(
            base_model="tiny-sd15",
            prompt="a lighthouse",
            parameters=types_pb2.GenerationParameters(num_inference_steps=2, width=64, height=64, seed=1),
            num_images=1,
        )
        events = list(inference_grpc.InferenceServiceStub(channel).GenerateImages(request, timeout=120))
    image = b"".join(e.image_chunk.data for e in events if e.WhichOneof("event") == "image_chunk")
    assert image, [e.WhichOneof("event") for e in events]
    assert events[-1].WhichOneof("event") == "summary"

    # The writes landed on the volumes: the record in shared storage, the builtin model in the cache.
    assert any(path.is_file() for path in mounts["/var/lib/likeness"].rglob("*"))
    assert any(path.name == "model_index.json" for path in mounts["/var/cache/likeness"].rglob("*"))

    process = read_only_server["process"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, read_only_server["log"].read_text()[-4000:]
    log = read_only_server["log"].read_text()
    assert "Read-only file system" not in log, log[-4000:]
