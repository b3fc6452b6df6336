"""The exec health probe (`python -m likeness.server.probe`): exit 0 only for SERVING, one line of reason otherwise,
plaintext, TLS (its CA fallbacks) and mutual TLS against a real grpc.health.v1 server, and a light import."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tls_certs import Certificates, make_certificates

from likeness.server import probe

SERVICE = "likeness.gallery.v1.GalleryService"
DRAINING = "likeness.inference.v1.InferenceService"


@dataclass
class HealthServer:
    plaintext_port: int
    tls_port: int
    mutual_tls_port: int
    certs: Certificates
    servicer: health.HealthServicer


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[HealthServer]:
    """One grpc.health.v1 server on three loopback ports: plaintext, TLS, and TLS requiring client certificates."""
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    key, chain, ca = certs.key_file.read_bytes(), certs.cert_file.read_bytes(), certs.ca_file.read_bytes()
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    servicer.set(DRAINING, health_pb2.HealthCheckResponse.NOT_SERVING)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
    plaintext = grpc_server.add_insecure_port("127.0.0.1:0")
    tls = grpc_server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, chain)]))
    mutual = grpc_server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=True),
    )
    grpc_server.start()
    try:
        yield HealthServer(plaintext, tls, mutual, certs, servicer)
    finally:
        grpc_server.stop(0)


def clean_environment(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LIKENESS_", "GRPC_"))}
    environment.update(extra)
    return environment


def run_probe(*args: str, env: dict[str, str] | None = None, importtime: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "likeness.server.probe", *args]
    return subprocess.run(
        command, env=env or clean_environment(), capture_output=True, text=True, timeout=30, check=False
    )


def reason(result: subprocess.CompletedProcess) -> str:
    """The probe's stderr, which must be exactly one line starting `probe: ` when it fails, empty when it passes."""
    lines = result.stderr.splitlines()
    if result.returncode == 0:
        assert lines == [], result.stderr
        return ""
    assert len(lines) == 1 and lines[0].startswith("probe: "), result.stderr
    return lines[0]


# ----------------------------------------------------------------------------------------------------- plaintext


def test_serving_server_passes_in_plaintext(server):
    result = run_probe("--port", str(server.plaintext_port))
    assert result.returncode == 0 and reason(result) == ""
    assert run_probe("--port", str(server.plaintext_port), "--service", SERVICE).returncode == 0


def test_not_serving_and_unknown_services_fail_with_one_line(server):
    draining = run_probe("--port", str(server.plaintext_port), "--service", DRAINING)
    assert draining.returncode == 1 and "NOT_SERVING" in reason(draining) and DRAINING in reason(draining)
    unknown = run_probe("--port", str(server.plaintext_port), "--service", "no.such.Service")
    assert unknown.returncode == 1 and "NOT_FOUND" in reason(unknown)


def test_a_service_that_turns_not_serving_fails_the_next_run(server):
    name = "likeness.trainer.v1.TrainerService"
    server.servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    assert run_probe("--port", str(server.plaintext_port), "--service", name).returncode == 0
    server.servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run_probe("--port", str(server.plaintext_port), "--service", name).returncode == 1


def test_nothing_listening_and_bad_usage_fail_with_status_1():
    with_nothing = run_probe("--port", "1", "--timeout", "1")
    assert with_nothing.returncode == 1 and "UNAVAILABLE" in reason(with_nothing)
    for args in (["--port", "x"], ["--timeout", "0"], ["--tls", "--plaintext"], ["--unknown"]):
        result = run_probe(*args)
        assert result.returncode == 1 and "usage:" in reason(result), args


# ----------------------------------------------------------------------------------------------------------- TLS


def test_tls_with_the_ca_passes_and_the_wrong_ca_or_name_fails(server, tmp_path):
    port = str(server.tls_port)
    assert run_probe("--port", port, "--tls-ca", str(server.certs.ca_file)).returncode == 0
    served = run_probe("--port", port, "--service", SERVICE, "--tls-ca", str(server.certs.ca_file))
    assert served.returncode == 0, served.stderr
    other = make_certificates(tmp_path / "other", "other")
    wrong_ca = run_probe("--port", port, "--tls-ca", str(other.ca_file))
    # One line, although gRPC's core would log the failed handshake on lines of its own.
    assert wrong_ca.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in reason(wrong_ca)
    wrong_name = run_probe("--port", port, "--tls-ca", str(server.certs.ca_file), "--tls-server-name", "elsewhere")
    assert wrong_name.returncode == 1 and "TLS" in reason(wrong_name)
    plaintext = run_probe("--port", port, "--plaintext")
    assert plaintext.returncode == 1 and "plaintext" in reason(plaintext)
    missing = run_probe("--port", port, "--tls-ca", str(tmp_path / "absent.pem"))
    assert missing.returncode == 1 and "cannot read CA file" in reason(missing)


def test_tls_against_a_plaintext_port_fails(server):
    result = run_probe("--port", str(server.plaintext_port), "--tls-ca", str(server.certs.ca_file))
    assert result.returncode == 1 and "TLS" in reason(result)


def test_tls_follows_the_servers_environment_and_the_ca_variable(server):
    """An exec probe inherits the container's environment: LIKENESS_TLS_CERT_FILE means the server beside it
    serves TLS, and LIKENESS_TLS_CA_FILE names the CA when --tls-ca does not."""
    port = str(server.tls_port)
    env = clean_environment(
        LIKENESS_TLS_CERT_FILE=str(server.certs.cert_file),
        LIKENESS_TLS_KEY_FILE=str(server.certs.key_file),
        LIKENESS_TLS_CA_FILE=str(server.certs.ca_file),
    )
    assert run_probe("--port", port, env=env).returncode == 0
    only_ca = clean_environment(LIKENESS_TLS_CA_FILE=str(server.certs.ca_file))
    assert run_probe("--port", port, "--tls", env=only_ca).returncode == 0
    # Without --tls or the server's settings the probe speaks plaintext, which a TLS port refuses.
    assert run_probe("--port", port, env=only_ca).returncode == 1


def test_tls_falls_back_to_the_mounted_ca(server, monkeypatch, capsys):
    monkeypatch.setattr(probe, "MOUNTED_CA_FILE", str(server.certs.ca_file))
    assert probe.main(["--port", str(server.tls_port), "--tls"], environ={}) == 0
    monkeypatch.setattr(probe, "MOUNTED_CA_FILE", str(server.certs.ca_file) + ".absent")
    # No mounted CA: the system roots, which do not know the test CA.
    assert probe.main(["--port", str(server.tls_port), "--tls"], environ={}) == 1
    assert capsys.readouterr().err.startswith("probe: ")


def test_mutual_tls_presents_the_servers_own_certificate(server):
    port = str(server.mutual_tls_port)
    ca = str(server.certs.ca_file)
    without = run_probe("--port", port, "--tls-ca", ca)
    assert without.returncode == 1, "the server requires a client certificate"
    explicit = ["--tls-cert", str(server.certs.cert_file), "--tls-key", str(server.certs.key_file)]
    assert run_probe("--port", port, "--tls-ca", ca, *explicit).returncode == 0
    env = clean_environment(
        LIKENESS_TLS_CERT_FILE=str(server.certs.cert_file),
        LIKENESS_TLS_KEY_FILE=str(server.certs.key_file),
        LIKENESS_TLS_CLIENT_CA_FILE=ca,
    )
    assert run_probe("--port", port, "--tls-ca", ca, env=env).returncode == 0
    half = run_probe("--port", port, "--tls-ca", ca, "--tls-cert", str(server.certs.cert_file))
    assert half.returncode == 1 and "together" in reason(half)


# ------------------------------------------------------------------------------------------------------- imports


def imported_modules(stderr: str) -> set[str]:
    """Module names from `python -X importtime` output."""
    modules = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                modules.add(name)
    return modules


def test_the_probe_imports_only_grpc_grpc_health_and_the_standard_library(server):
    result = run_probe("--port", str(server.plaintext_port), importtime=True)
    assert result.returncode == 0, result.stderr
    modules = imported_modules(result.stderr)
    assert {"grpc", "grpc_health.v1.health_pb2_grpc"} <= modules, "importtime output not understood"
    assert not {name for name in modules if name.split(".")[0] in {"torch", "numpy", "PIL", "sqlalchemy"}}
    # `-m` runs the module itself as __main__: only its two parent packages are imported, both bare.
    assert {name for name in modules if name.split(".")[0] == "likeness"} == {"likeness", "likeness.server"}
    # Everything else is a package that grpc and grpc_health import themselves (protobuf and friends), or the
    # standard library.
    baseline = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import grpc; from grpc_health.v1 import health_pb2_grpc"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    allowed = {name.split(".")[0] for name in imported_modules(baseline.stderr)} | set(sys.stdlib_module_names)
    extra = {name for name in modules if name.split(".")[0] not in allowed | {"likeness"}}
    assert not extra, f"the probe imports {sorted(extra)}"


def test_the_probe_module_does_not_import_torch_in_process():
    code = "import sys, likeness.server.probe; print('torch' in sys.modules, 'likeness.server.settings' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.split() == ["False", "False"]
