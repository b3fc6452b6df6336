"""The Likeness gateway on loopback: three service processes behind a real nginx running the gateway component's
own configuration. For end-to-end tests of anything that dials ONE address (the Python, TypeScript and Go SDKs).

The layout is the Kubernetes deployment's (deploy/overlays/dev), shrunk onto one machine:

* `likeness serve trainer`, `likeness serve inference` and `likeness serve gallery`, three processes on three
  free loopback ports, sharing one control-plane database (an SQLite file) and one storage folder, as the pods
  share PostgreSQL and the storage volume. The trainer runs with its default role `all` (API and a training worker
  in one process); `GatewayStack(separate_worker=True)` runs the API (`--role api`) and a worker
  (`--role worker`) as two processes, as the cluster does.
* nginx running deploy/components/gateway/nginx.conf, with plaintext.conf as its transport.conf (what the dev
  overlay mounts), from the files of the component itself: only the upstream addresses (`likeness-trainer:50051`
  and so on) and the listen ports are substituted, and a substitution that no longer matches fails loudly, so the
  routing tested is the routing shipped. nginx runs as the pod runs it (`nginx -p PREFIX -c CONF -e stderr`, pid
  and temp folders under the prefix, `daemon off` from the file), with its access log (JSON lines) and error log
  in files.

The servers run on CPU with the default catalog: the builtin `toy-sd15` (the default base model), `tiny-sd15` and
`tiny-sdxl`, which ship with the package (nothing is downloaded). Authentication is off (`--auth none`: every
caller is tenant `default`) unless `extra_args` says otherwise.

Use the fixture `gateway_stack`: tests/conftest.py registers it for every test under tests/, so just ask for it
(do not import it into a test module: that would make a second, module-level instance). It is session-scoped,
started on first use and shared by every test of the session that asks for it, so do not assume an empty
database::

    def test_one_address(gateway_stack):
        channel = grpc.insecure_channel(gateway_stack.address)  # "127.0.0.1:PORT", as likeness:50051 in a cluster
        gateway_stack.services["inference"]                     # "127.0.0.1:PORT" of the inference process itself
        stub = InferenceServiceStub(channel)
        stub.GetServerStatus(request, metadata=(("x-request-id", "my-test-1"),))
        gateway_stack.logged_call("my-test-1")["upstream"]      # the process nginx sent that call to

    # A test in another language: hand the address to the SDK's test runner.
    subprocess.run(["npm", "test"], env={**os.environ, "LIKENESS_ADDRESS": gateway_stack.address}, ...)

Or start one of your own (a fresh database, other flags), as a context manager (tests/conftest.py puts tests/ on
sys.path, so `gateway` imports from any test folder)::

    from gateway import GatewayStack

    with GatewayStack(tmp_path, extra_args=("--auth", "api-key")) as stack:
        ...

Attributes of a started `GatewayStack`:

    address        the one entry, "127.0.0.1:PORT" (cleartext HTTP/2, no TLS)
    services       {"trainer": ..., "inference": ..., "gallery": ...}: each process's own "127.0.0.1:PORT"
    status_url     nginx's probe endpoint, "http://127.0.0.1:PORT/healthz"
    root           the folder holding everything: storage/, likeness.db, cache/, nginx/ (conf/, access.log,
                   error.log) and one log per service process
    storage_url    the storage folder the processes share (for `likeness ... --storage-url`)
    database_url   "sqlite:///ROOT/likeness.db", the control-plane database they share (for `likeness keys create`)
    access_log()   nginx's access log, one dict per call: request_id, method (the gRPC path), grpc_status,
                   upstream (the process's address, empty when nginx answered itself), seconds, bytes_in...
    logged_call(request_id)
                   the access-log line of the call sent with metadata x-request-id: request_id (waits for it:
                   nginx writes a line when the call's stream closes)
    logs()         the tail of every log, for assertion messages
    create_api_key(tenant, admin=False)
                   a new API key in the shared database, for a stack with extra_args=("--auth", "api-key");
                   send it as metadata ("authorization", f"Bearer {key}")

It is ready when every process reports SERVING for its own service (grpc.health.v1) and a Health/Check through
nginx does too. It skips the test (pytest.skip) only when nginx is not installed and cannot be
(`scripts/install_tools.sh nginx`, which needs root and apt-get); a process that does not start fails the test
with the logs. This module imports only grpc, grpc_health, pytest and the standard library: no `likeness` module,
no generated stubs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
#: The kustomize component whose files nginx runs.
COMPONENT = REPO / "deploy" / "components" / "gateway"
#: The Kubernetes Service each upstream of nginx.conf names, by service process.
SERVICE_HOSTS = {"trainer": "likeness-trainer", "inference": "likeness-inference", "gallery": "likeness-gallery"}
#: The gRPC service each process serves, whose health decides that it is ready.
GRPC_SERVICES = {
    "trainer": "likeness.trainer.v1.TrainerService",
    "inference": "likeness.inference.v1.InferenceService",
    "gallery": "likeness.gallery.v1.GalleryService",
}
#: Where the pod mounts the likeness-tls Secret (tls.conf and nginx.conf read it there).
TLS_MOUNT = "/etc/likeness/tls/"
#: The ports nginx.conf and the transport files listen on, as in the pod.
ENTRY_PORT, STATUS_PORT = 50051, 8081
START_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------------------ nginx


def find_nginx() -> str | None:
    """The nginx binary: on PATH, or Debian's /usr/sbin/nginx (not on a non-root PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def require_nginx() -> str:
    """The nginx binary, installing it first (scripts/install_tools.sh nginx) if needed; skips the test only when
    that is not possible here."""
    found = find_nginx()
    if found:
        return found
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_tools.sh"), "nginx"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    found = find_nginx()
    if found:
        return found
    reason = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
    pytest.skip(f"nginx is not installed and could not be (scripts/install_tools.sh nginx: {reason})")


def _substitute(text: str, old: str, new: str, file_name: str) -> str:
    """`text` with the one occurrence of `old` replaced: the shipped file must still have exactly that line."""
    count = text.count(old)
    if count != 1:
        raise AssertionError(
            f"deploy/components/gateway/{file_name} has {count} occurrences of {old!r}, expected 1: "
            "tests/gateway.py substitutes it; update both together"
        )
    return text.replace(old, new)


def upstream_servers(nginx_conf: str) -> dict[str, str]:
    """`upstream NAME { server ADDRESS; ... }` blocks of nginx.conf: upstream name -> address."""
    return dict(re.findall(r"upstream\s+([\w.-]+)\s*\{\s*server\s+([^\s;]+)", nginx_conf))


def render_config(
    folder: Path,
    upstreams: dict[str, str],
    port: int,
    status_port: int,
    transport: str = "plaintext",
    tls_dir: Path | None = None,
) -> Path:
    """Writes the component's configuration into `folder` as the pod mounts it (nginx.conf, and plaintext.conf or
    tls.conf as transport.conf), for loopback: each upstream's `server likeness-X:50051` pointed at
    `upstreams["X"]` (an address "127.0.0.1:PORT"), the entry and status ports at `port` and `status_port` on
    127.0.0.1, and with `tls_dir` the Secret's mount path at that folder (holding tls.crt, tls.key, ca.crt).
    Returns the path of nginx.conf."""
    folder.mkdir(parents=True, exist_ok=True)
    nginx_conf = (COMPONENT / "nginx.conf").read_text()
    shipped = upstream_servers(nginx_conf)
    expected = {host: f"{host}:{ENTRY_PORT}" for host in SERVICE_HOSTS.values()}
    if shipped != expected:
        raise AssertionError(f"nginx.conf's upstreams are {shipped}, tests/gateway.py expects {expected}")
    for service, host in SERVICE_HOSTS.items():
        nginx_conf = _substitute(
            nginx_conf, f"server {host}:{ENTRY_PORT};", f"server {upstreams[service]};", "nginx.conf"
        )
    nginx_conf = _substitute(nginx_conf, f"listen {STATUS_PORT};", f"listen 127.0.0.1:{status_port};", "nginx.conf")
    transport_file = f"{transport}.conf"
    transport_conf = (COMPONENT / transport_file).read_text()
    transport_conf = _substitute(transport_conf, f"listen {ENTRY_PORT} ", f"listen 127.0.0.1:{port} ", transport_file)
    if tls_dir is not None:
        nginx_conf = nginx_conf.replace(TLS_MOUNT, f"{tls_dir}/")
        transport_conf = transport_conf.replace(TLS_MOUNT, f"{tls_dir}/")
    elif TLS_MOUNT in transport_conf:
        raise AssertionError(f"{transport_file} reads the likeness-tls Secret: pass tls_dir")
    (folder / "nginx.conf").write_text(nginx_conf)
    (folder / "transport.conf").write_text(transport_conf)
    return folder / "nginx.conf"


class Nginx:
    """nginx running the component's configuration (see `render_config`) on free loopback ports, in the foreground
    (`daemon off` is in nginx.conf), with the pid file and temp folders under `root` (its -p prefix) and the access
    log (stdout) and error log (stderr) in root/access.log and root/error.log."""

    def __init__(
        self,
        root: Path,
        upstreams: dict[str, str],
        transport: str = "plaintext",
        tls_dir: Path | None = None,
    ) -> None:
        self.root = root
        self.binary = require_nginx()
        self.port, self.status_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.status_url = f"http://127.0.0.1:{self.status_port}/healthz"
        self.conf = render_config(root / "conf", upstreams, self.port, self.status_port, transport, tls_dir)
        self.access_log_path, self.error_log_path = root / "access.log", root / "error.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        """The pod's command line (deploy/components/gateway/gateway.yaml), with this prefix and configuration."""
        command = [self.binary, "-p", f"{self.root}/", "-c", str(self.conf), "-e", "stderr"]
        if os.geteuid() == 0:
            # A root master would run its workers as `nobody`, who cannot enter pytest's private temp folders (the
            # TLS files are read by the workers). In the pod nginx runs as uid 101 throughout.
            command += ["-g", "user root root;"]
        return command

    def check_config(self) -> subprocess.CompletedProcess:
        """`nginx -t` on the configuration: rc 0 and "syntax is ok" when nginx accepts it."""
        return subprocess.run([*self.command(), "-t"], capture_output=True, text=True, timeout=30, check=False)

    def start(self, timeout: float = 30.0) -> Nginx:
        with open(self.access_log_path, "ab") as stdout, open(self.error_log_path, "ab") as stderr:
            self.process = subprocess.Popen(self.command(), stdout=stdout, stderr=stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.error_log()}")
            try:
                with urllib.request.urlopen(self.status_url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nginx did not answer {self.status_url} within {timeout} s:\n{self.error_log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGQUIT, the image's stop signal), then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def error_log(self) -> str:
        return self.error_log_path.read_text(errors="replace") if self.error_log_path.exists() else ""

    def access_log(self) -> list[dict[str, Any]]:
        """The access log so far, one dict per finished call (a line is written when the call's stream closes,
        which may be a moment after the client saw the end of it: use `logged_call` to wait for one)."""
        if not self.access_log_path.exists():
            return []
        lines = self.access_log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]

    def logged_call(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The access-log line of the call sent with metadata `x-request-id: request_id`, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.access_log() if line["request_id"] == request_id]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no call with x-request-id {request_id!r} in {self.access_log_path}")
            time.sleep(0.05)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------- service processes


def health_status(address: str, service: str = "", timeout: float = 2.0, credentials: Any = None) -> int | None:
    """grpc.health.v1 Check of `service` at `address`: the status number (1 is SERVING), or None if the call
    failed."""
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        try:
            request = health_pb2.HealthCheckRequest(service=service)
            return health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout).status
        except grpc.RpcError:
            return None


class ServiceProcess:
    """One `likeness serve SERVICE` process on a free loopback port (metrics off), its output in a log file."""

    def __init__(self, name: str, service: str, args: Sequence[str], root: Path, env: dict[str, str]) -> None:
        self.name, self.service = name, service
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = root / f"{name}.log"
        command = [
            sys.executable, "-m", "likeness.cli.main", "serve", service,
            "--host", "127.0.0.1", "--port", str(self.port), "--metrics-port", "0", *args,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def wait_serving(self, grpc_service: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            if health_status(self.address, grpc_service) == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not report {grpc_service or 'the server'} SERVING:\n{self.log()}")

    def terminate(self) -> None:
        """SIGTERM: the server drains (--grace-seconds) and exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> None:
        """Waits for the exit, killing the process after `timeout` seconds."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


class GatewayStack:
    """Three Likeness service processes and nginx in front of them; see the module docstring."""

    def __init__(
        self,
        root: Path,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        separate_worker: bool = False,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        """`root`: an empty folder for everything. `extra_args`: more `likeness serve` flags for every process.
        `env`: more environment variables for them (LIKENESS_* variables of this process are not passed on, so
        the shell's settings do not leak in). `separate_worker`: the trainer API and a training worker as two
        processes, as in the cluster."""
        self.root = root
        self.storage_url = str(root / "storage")
        self.database_url = f"sqlite:///{root / 'likeness.db'}"
        self.extra_args, self.separate_worker, self.start_timeout = tuple(extra_args), separate_worker, start_timeout
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
        self.env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
        self.processes: dict[str, ServiceProcess] = {}
        self.nginx: Nginx | None = None
        self.services: dict[str, str] = {}
        self.address = ""
        self.status_url = ""

    def common_args(self) -> list[str]:
        return [
            "--storage-url", self.storage_url, "--database-url", self.database_url,
            "--cache-dir", str(self.root / "cache"), "--device", "cpu", "--torch-threads", "1",
            "--grace-seconds", "2", "--log-level", "WARNING", "--trainer-progress-interval-seconds", "0",
        ]  # fmt: skip

    def start(self) -> GatewayStack:
        self.root.mkdir(parents=True, exist_ok=True)
        require_nginx()  # skips before anything is started
        common = [*self.common_args(), *self.extra_args]
        # The gallery first: it migrates the shared database while the others still import torch.
        trainer_role = ["--role", "api"] if self.separate_worker else []
        plan = [("gallery", "gallery", []), ("trainer", "trainer", trainer_role), ("inference", "inference", [])]
        if self.separate_worker:
            plan.append(("trainer-worker", "trainer", ["--role", "worker"]))
        try:
            for name, service, role in plan:
                self.processes[name] = ServiceProcess(name, service, [*common, *role], self.root, self.env)
            deadline = time.monotonic() + self.start_timeout
            for name, process in self.processes.items():
                process.wait_serving(GRPC_SERVICES.get(name, ""), deadline)
            self.services = {name: self.processes[name].address for name in SERVICE_HOSTS}
            self.nginx = Nginx(self.root / "nginx", self.services).start()
            self.address, self.status_url = self.nginx.address, self.nginx.status_url
            while health_status(self.address) != health_pb2.HealthCheckResponse.SERVING:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the gateway's Health/Check is not SERVING:\n{self.logs()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait()

    def create_api_key(self, tenant: str, admin: bool = False) -> str:
        """A new API key for `tenant` in the shared database (`likeness keys create`), for a stack started with
        `extra_args=("--auth", "api-key")`; send it as metadata `authorization: Bearer KEY`."""
        command = [
            sys.executable, "-m", "likeness.cli.main", "keys", "create", "--tenant", tenant,
            "--database-url", self.database_url, "--storage-url", self.storage_url, *(["--admin"] if admin else []),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=120, check=False)
        assert result.returncode == 0, f"likeness keys create failed: {result.stderr}"
        return result.stdout.split()[0]

    def access_log(self) -> list[dict[str, Any]]:
        return self.nginx.access_log() if self.nginx else []

    def logged_call(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        assert self.nginx is not None, "not started"
        return self.nginx.logged_call(request_id, timeout)

    def logs(self) -> str:
        parts = [f"--- {name} ---\n{process.log()}" for name, process in self.processes.items()]
        if self.nginx is not None:
            parts.append(f"--- nginx error.log ---\n{self.nginx.error_log()[-4000:]}")
        return "\n".join(parts)

    def __enter__(self) -> GatewayStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def gateway_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    """A started `GatewayStack` shared by the session (see the module docstring)."""
    with GatewayStack(tmp_path_factory.mktemp("gateway")) as stack:
        yield stack
