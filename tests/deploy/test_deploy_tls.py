"""The tls component (deploy/components/tls): the builds that include it validate; every Likeness container mounts
the `likeness-tls` Secret read-only, has the TLS settings, and is probed by exec probes of the probe module with the
mounted CA instead of the kubelet's grpc probes (which cannot speak TLS); Prometheus scrapes over https with that
CA; the cert-manager example names everything that is verified; and the very probe commands of the manifests pass
against a live TLS health server (files laid out as the kubelet mounts a Secret), also after a rotation."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from deploy_helpers import DEPLOY, by_kind, component_of, container_environment, free_port, run_tool, tool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from likeness.server import probe
from likeness.server.settings import load_settings
from likeness.server.tls import TlsFiles, server_credentials

TLS_COMPONENT = DEPLOY / "components" / "tls"
CERTIFICATE_EXAMPLE = TLS_COMPONENT / "certificate.example.yaml"
SECRET = "likeness-tls"
SECRET_KEYS = {"tls.crt", "tls.key", "ca.crt"}
MOUNT = "/etc/likeness/tls"
PROBE_COMMAND = ["python", "-m", "likeness.server.probe"]
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
LIKENESS_DEPLOYMENTS = {"likeness-trainer-api", "likeness-trainer-worker", "likeness-inference", "likeness-gallery"}
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
#: The builds with the component: the production overlay includes it; `overlays/dev+tls` is the dev overlay with
#: the component added (rendered from a temporary kustomization), to show it composes with cpu-only and postgres-dev.
TLS_BUILDS = ("overlays/production", "overlays/dev+tls")
#: Seconds an exec probe's timeout must leave beyond the probe's own RPC deadline for Python to start.
PYTHON_START_SECONDS = 3


def components_of(overlay: str) -> list[str]:
    kustomization = yaml.safe_load((DEPLOY / overlay / "kustomization.yaml").read_text())
    return [Path(component).name for component in kustomization.get("components", [])]


def kustomize_folder(folder: Path) -> list[dict[str, Any]]:
    result = run_tool([tool("kubectl"), "kustomize", str(folder)])
    assert result.returncode == 0, f"kustomize build of {folder} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def tls_rendered(rendered, tmp_path_factory):
    """`tls_rendered(build)` for the TLS_BUILDS."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def get(build: str) -> list[dict[str, Any]]:
        if build not in cache:
            if build == "overlays/dev+tls":
                folder = tmp_path_factory.mktemp("dev-tls")
                kustomization = {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [os.path.relpath(DEPLOY / "overlays" / "dev", folder)],
                    "components": [os.path.relpath(TLS_COMPONENT, folder)],
                }
                (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
                cache[build] = kustomize_folder(folder)
            else:
                cache[build] = rendered(build)
        return cache[build]

    return get


def likeness_deployments(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    deployments = {
        name: deployment
        for name, deployment in by_kind(objects, "Deployment").items()
        if deployment["metadata"]["labels"].get("app.kubernetes.io/name") == "likeness"
    }
    assert set(deployments) == LIKENESS_DEPLOYMENTS
    return deployments


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    return spec["containers"] + spec.get("initContainers", [])


def secret_volume_names(deployment: dict[str, Any]) -> set[str]:
    return {
        volume["name"]
        for volume in deployment["spec"]["template"]["spec"].get("volumes", [])
        if volume.get("secret", {}).get("secretName") == SECRET
    }


def probe_args(probe_spec: dict[str, Any]) -> Any:
    command = probe_spec["exec"]["command"]
    assert command[: len(PROBE_COMMAND)] == PROBE_COMMAND, command
    return probe.parse_args(command[len(PROBE_COMMAND) :])


def services_selecting(objects: list[dict[str, Any]], deployment: dict[str, Any]) -> set[str]:
    labels = deployment["spec"]["template"]["metadata"]["labels"].items()
    return {
        name
        for name, service in by_kind(objects, "Service").items()
        if service["spec"].get("selector") and service["spec"]["selector"].items() <= labels
    }


def certificate_example() -> dict[str, Any]:
    documents = [doc for doc in yaml.safe_load_all(CERTIFICATE_EXAMPLE.read_text()) if doc]
    (certificate,) = [
        doc for doc in documents if doc["kind"] == "Certificate" and doc["spec"].get("secretName") == SECRET
    ]
    return certificate


# ---------------------------------------------------------------------------------------------------- the builds


def test_production_includes_the_component_and_dev_stays_plaintext(rendered):
    assert "tls" in components_of("overlays/production")
    production = components_of("overlays/production")
    assert production.index("tls") > production.index("prometheus-operator"), "it patches the ServiceMonitor"
    assert "tls" not in components_of("overlays/dev")
    for name, deployment in likeness_deployments(rendered("overlays/dev")).items():
        assert not secret_volume_names(deployment), name
        for container in containers(deployment):
            assert all("grpc" in container[kind] for kind in PROBES), f"{name}: dev keeps the native probes"
            assert not any(e["name"].startswith("LIKENESS_TLS_") for e in container.get("env", [])), name


def test_the_certificate_example_is_not_part_of_the_component():
    kustomization = yaml.safe_load((TLS_COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    assert CERTIFICATE_EXAMPLE.name not in yaml.safe_dump(kustomization), "cert-manager must stay optional"


@pytest.mark.parametrize("build", TLS_BUILDS)
def test_tls_builds_validate_against_kubernetes_schemas(tls_rendered, build):
    for version in KUBERNETES_VERSIONS:
        for obj in tls_rendered(build):
            if obj["kind"] in CUSTOM_KINDS:
                continue
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(part) for part in exc.path)
                pytest.fail(f"{build}: {obj['kind']}/{obj['metadata']['name']} invalid for {version} at {path}: {exc}")


@pytest.mark.parametrize("build", TLS_BUILDS)
def test_every_likeness_container_mounts_the_secret_read_only(tls_rendered, build):
    for name, deployment in likeness_deployments(tls_rendered(build)).items():
        spec = deployment["spec"]["template"]["spec"]
        (volume_name,) = secret_volume_names(deployment)
        (volume,) = [v for v in spec["volumes"] if v["name"] == volume_name]
        # All three keys (no `items` subset), readable by the pod's group, which the server runs in.
        assert "items" not in volume["secret"] and not volume["secret"].get("optional"), name
        mode = volume["secret"].get("defaultMode", 0o644)
        assert mode & 0o040 and not mode & 0o007, f"{name}: defaultMode {mode:o}"
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"], name
        for container in containers(deployment):
            mounts = [m for m in container["volumeMounts"] if m["name"] == volume_name]
            assert len(mounts) == 1, f"{name}/{container['name']}: mounts the Secret {len(mounts)} times"
            (mount,) = mounts
            assert mount["readOnly"] is True and mount["mountPath"] == MOUNT, f"{name}/{container['name']}"
            # A subPath mount is never updated when the Secret is renewed: rotation would need a restart.
            assert "subPath" not in mount and "subPathExpr" not in mount, f"{name}/{container['name']}"


@pytest.mark.parametrize("build", TLS_BUILDS)
def test_every_likeness_container_has_the_tls_settings(tls_rendered, build):
    objects = tls_rendered(build)
    for name, deployment in likeness_deployments(objects).items():
        for container in containers(deployment):
            environment = container_environment(container, objects)
            settings = load_settings(None, environ=environment)
            files = settings.tls_files
            assert files is not None, f"{name}/{container['name']}: TLS is off"
            assert (files.cert_file, files.key_file) == (f"{MOUNT}/tls.crt", f"{MOUNT}/tls.key"), name
            assert environment["LIKENESS_TLS_CA_FILE"] == f"{MOUNT}/ca.crt", f"{name}: in-cluster clients' CA"
            assert not files.client_ca_file, f"{name}: mutual TLS would lock out Prometheus and the clients"


@pytest.mark.parametrize("build", TLS_BUILDS)
def test_exec_probes_replace_the_grpc_probes(tls_rendered, rendered, build):
    objects = tls_rendered(build)
    base = by_kind(rendered("base"), "Deployment")
    for name, deployment in likeness_deployments(objects).items():
        for container in containers(deployment):
            label = f"{name}/{container['name']}"
            assert not [kind for kind in PROBES if "grpc" in container.get(kind, {})], f"{label}: a grpc probe is left"
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        base_container = base[name]["spec"]["template"]["spec"]["containers"][0]
        settings = load_settings(None, environ=container_environment(container, objects))
        for kind in PROBES:
            spec, before = container[kind], base_container[kind]
            args = probe_args(spec)
            assert args.port == settings.port, f"{name} {kind}"
            # The same question as the base's grpc probe: readiness the service's own name, the others "".
            assert args.service == before["grpc"].get("service", ""), f"{name} {kind}"
            assert args.tls is not False and args.tls_ca == f"{MOUNT}/ca.crt", f"{name} {kind}: verify with the CA"
            assert args.tls_server_name in services_selecting(objects, deployment), f"{name} {kind}"
            assert spec["timeoutSeconds"] >= args.timeout + PYTHON_START_SECONDS, f"{name} {kind}: Python start"
            assert spec["periodSeconds"] >= spec["timeoutSeconds"], f"{name} {kind}: runs would pile up"
            budget, old_budget = (p["periodSeconds"] * p["failureThreshold"] for p in (spec, before))
            if kind == "readinessProbe":
                assert budget <= 30, f"{name}: an unhealthy pod stays in its Service for {budget} s"
            else:
                assert budget >= old_budget, f"{name} {kind}: {budget} s, the base allows {old_budget} s"
        assert component_of(deployment) == component_of(base[name])


@pytest.mark.parametrize("build", TLS_BUILDS)
def test_prometheus_scrapes_over_https_with_the_ca(tls_rendered, build):
    objects = tls_rendered(build)
    dns_names = set(certificate_example()["spec"]["dnsNames"])
    for name, deployment in likeness_deployments(objects).items():
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scheme"] == "https", name
    monitors = by_kind(objects, "ServiceMonitor")
    if "prometheus-operator" in components_of(build.split("+")[0]):
        assert monitors, f"{build}: the prometheus-operator component's ServiceMonitor is missing"
    for monitor_name, monitor in monitors.items():
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["scheme"] == "https", monitor_name
            tls_config = endpoint["tlsConfig"]
            assert tls_config["ca"]["secret"] == {"name": SECRET, "key": "ca.crt"}, monitor_name
            assert not tls_config.get("insecureSkipVerify"), monitor_name
            assert tls_config["serverName"] in dns_names, "the certificate must be valid for the scrape's name"
    for name, service in by_kind(objects, "Service").items():
        if service["metadata"]["labels"].get("app.kubernetes.io/name") != "likeness":
            continue
        for port in service["spec"]["ports"]:
            assert port.get("appProtocol") not in {"kubernetes.io/h2c", "http"}, f"{name} {port['name']}: cleartext"
            if port["name"] == "metrics":
                assert port["appProtocol"] == "https", name


def test_the_certificate_example_names_everything_that_is_verified(tls_rendered):
    documents = [doc for doc in yaml.safe_load_all(CERTIFICATE_EXAMPLE.read_text()) if doc]
    assert {doc["apiVersion"] for doc in documents} == {"cert-manager.io/v1"}
    certificate = certificate_example()
    spec = certificate["spec"]
    issuers = {doc["metadata"]["name"] for doc in documents if doc["kind"] == "Issuer"}
    for doc in documents:
        if doc["kind"] == "Certificate":
            assert doc["spec"]["issuerRef"]["kind"] == "Issuer" and doc["spec"]["issuerRef"]["name"] in issuers
    ca_issuers = [doc for doc in documents if doc["kind"] == "Issuer" and "ca" in doc["spec"]]
    assert ca_issuers, "an issuer that fills ca.crt (the CA issuer does)"
    assert {"server auth", "client auth"} <= set(spec["usages"])
    dns_names = set(spec["dnsNames"])
    objects = tls_rendered("overlays/production")
    namespace = by_kind(objects, "Deployment")["likeness-gallery"]["metadata"]["namespace"]
    for name, deployment in likeness_deployments(objects).items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert {probe_args(container[kind]).tls_server_name for kind in PROBES} <= dns_names, name
    for name, service in by_kind(objects, "Service").items():
        if service["metadata"]["labels"].get("app.kubernetes.io/name") == "likeness":
            assert {name, f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"} <= dns_names, name


# ----------------------------------------------------------------------------------------- the probes, for real


def write_certificates(folder: Path, dns_names: list[str], label: str) -> None:
    """A fresh CA and a certificate it signs for `dns_names`, as the Secret's keys tls.crt, tls.key and ca.crt."""
    folder.mkdir(parents=True)
    now = dt.datetime.now(dt.timezone.utc)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name(f"likeness {label} CA"))
        .issuer_name(name(f"likeness {label} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(dns_names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


class SecretVolume:
    """A folder laid out as the kubelet mounts a Secret: each key a symlink through `..data`, itself a symlink to a
    timestamped folder; an update writes a new folder and swaps `..data` atomically."""

    def __init__(self, root: Path, dns_names: list[str]) -> None:
        self.root, self.dns_names, self.version = root, dns_names, 0
        root.mkdir(parents=True)
        self.rotate()
        for key in SECRET_KEYS:
            (root / key).symlink_to(f"..data/{key}")

    def rotate(self) -> None:
        self.version += 1
        folder = f"..2026_01_01_00_00_0{self.version}"
        write_certificates(self.root / folder, self.dns_names, f"rotation-{self.version}")
        (self.root / "..data_tmp").symlink_to(folder)
        os.replace(self.root / "..data_tmp", self.root / "..data")


@pytest.fixture
def live_server(tmp_path) -> Iterator[dict[str, Any]]:
    """A grpc.health.v1 server on loopback with the servers' own reloading TLS credentials, reading a Secret volume
    holding a certificate for the names of the cert-manager example."""
    volume = SecretVolume(tmp_path / "tls", certificate_example()["spec"]["dnsNames"])
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = free_port()
    credentials = server_credentials(TlsFiles(str(volume.root / "tls.crt"), str(volume.root / "tls.key")))
    assert server.add_secure_port(f"127.0.0.1:{port}", credentials) == port
    server.start()
    try:
        yield {"port": port, "volume": volume, "health": servicer}
    finally:
        server.stop(0)


def remapped(command: list[str], port: int, folder: Path) -> list[str]:
    """The manifest's probe command with the container's paths and port pointed at the live server's."""
    argv = [sys.executable if index == 0 and arg == "python" else arg for index, arg in enumerate(command)]
    argv = [str(folder) + arg[len(MOUNT) :] if arg.startswith(MOUNT + "/") else arg for arg in argv]
    argv[argv.index("--port") + 1] = str(port)
    return argv


def probe_environment(container: dict[str, Any], objects: list[dict[str, Any]], folder: Path) -> dict[str, str]:
    """What an exec probe inherits: the container's TLS settings (paths remapped) over this process's environment."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LIKENESS_", "GRPC_"))}
    for key, value in container_environment(container, objects).items():
        if key.startswith("LIKENESS_TLS_"):
            environment[key] = str(folder) + value[len(MOUNT) :] if value.startswith(MOUNT + "/") else value
    return environment


def run_probes(
    objects: list[dict[str, Any]], live: dict[str, Any]
) -> dict[tuple[str, str], subprocess.CompletedProcess]:
    results = {}
    for name, deployment in likeness_deployments(objects).items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        environment = probe_environment(container, objects, live["volume"].root)
        for kind in PROBES:
            argv = remapped(container[kind]["exec"]["command"], live["port"], live["volume"].root)
            results[name, kind] = subprocess.run(
                argv, env=environment, capture_output=True, text=True, timeout=container[kind]["timeoutSeconds"]
            )
    return results


@pytest.mark.parametrize("build", TLS_BUILDS)
def test_the_manifests_probe_commands_pass_against_a_live_tls_server(tls_rendered, live_server, build):
    objects = tls_rendered(build)
    readiness_services = {
        probe_args(d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]).service
        for d in likeness_deployments(objects).values()
    }
    servicer = live_server["health"]
    for service in readiness_services | {""}:
        servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    for (name, kind), result in run_probes(objects, live_server).items():
        assert result.returncode == 0, f"{name} {kind}: {result.stderr}"
    # A draining service fails its readiness probe only; the server as a whole stays alive.
    for service in readiness_services - {""}:
        servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    for (name, kind), result in run_probes(objects, live_server).items():
        args = probe_args(by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0][kind])
        expected = 1 if args.service else 0
        assert result.returncode == expected, f"{name} {kind}: {result.stderr}"
        if expected:
            assert result.stderr.strip().endswith("is NOT_SERVING") and len(result.stderr.splitlines()) == 1


def test_probes_pass_after_the_secret_rotates_without_a_server_restart(tls_rendered, live_server):
    objects = tls_rendered("overlays/production")
    servicer = live_server["health"]
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    gallery = by_kind(objects, "Deployment")["likeness-gallery"]["spec"]["template"]["spec"]["containers"][0]
    volume: SecretVolume = live_server["volume"]
    old_ca = (volume.root / "ca.crt").read_bytes()
    argv = remapped(gallery["livenessProbe"]["exec"]["command"], live_server["port"], volume.root)
    assert subprocess.run(argv, capture_output=True, text=True, timeout=30).returncode == 0
    time.sleep(0.05)  # a new modification time for the rotated files
    volume.rotate()  # a new CA too: only the new certificate verifies against the new ca.crt
    assert (volume.root / "ca.crt").read_bytes() != old_ca
    after = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert after.returncode == 0, after.stderr
