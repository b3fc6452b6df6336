"""The gateway component (deploy/components/gateway) and its Gateway API alternative (deploy/components/gateway-api).

* The overlays include the gateway; its ConfigMap is the component's files, mounted where the command reads them;
  its pods are locked down (non-root, read-only root filesystem, only the nginx prefix writable, no capabilities,
  resources, probes on nginx's own status port); `likeness` is the one entry Service; the NetworkPolicies let the
  services' clients in and the gateway out to the services' gRPC port (and DNS) only.
* The routing of nginx.conf sends every gRPC service of protos/ to the Service whose pods serve it, and health and
  reflection to one of them; the GRPCRoute of the gateway-api component is structurally valid Gateway API v1 and
  routes exactly as nginx.conf does.
* nginx runs the shipped configuration for real: in a private mount namespace with the root filesystem read-only
  and only its prefix writable (as in the pod), and with tls.conf, terminating TLS with a certificate it reloads at
  each handshake and verifying the services' certificates by their Service names.

The end-to-end test through the gateway, with the real services, is tests/e2e/test_gateway.py.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from deploy_helpers import DEPLOY, REPO, by_kind, component_of, free_port, run_tool, selects, tool
from gateway import COMPONENT, TLS_MOUNT, Nginx, health_status, render_config, require_nginx, upstream_servers
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

GATEWAY_API_COMPONENT = DEPLOY / "components" / "gateway-api"
CERTIFICATE_EXAMPLE = DEPLOY / "components" / "tls" / "certificate.example.yaml"
#: The builds that include the gateway component, and the transport file each mounts as transport.conf.
GATEWAY_BUILDS = {"overlays/dev": "plaintext.conf", "overlays/production": "tls.conf"}
GATEWAY_FILES = ("nginx.conf", "plaintext.conf", "tls.conf")
GATEWAY_LABELS = {"app.kubernetes.io/name": "likeness-gateway", "app.kubernetes.io/component": "gateway"}
#: The Deployments behind the gateway, by pod component label; trainer workers serve no client RPCs.
SERVICE_COMPONENTS = {"trainer", "inference", "gallery"}
#: Services every Likeness server answers for itself, routed to one of them.
SHARED_SERVICES = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}
SECRET_KEYS = {"tls.crt", "tls.key", "ca.crt"}
SERVING = health_pb2.HealthCheckResponse.SERVING


def gateway_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(objects, "Deployment")["likeness-gateway"]


def nginx_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = gateway_deployment(objects)["spec"]["template"]["spec"]["containers"]
    return container


def components_of(overlay: str) -> list[str]:
    kustomization = yaml.safe_load((DEPLOY / overlay / "kustomization.yaml").read_text())
    return [Path(component).name for component in kustomization.get("components", [])]


def proto_services() -> set[str]:
    """Full names of the gRPC services in protos/ (package + service)."""
    names = set()
    for proto in (REPO / "protos").rglob("*.proto"):
        text = proto.read_text()
        (package,) = re.findall(r"^package\s+([\w.]+);", text, flags=re.MULTILINE)
        names.update(f"{package}.{name}" for name in re.findall(r"^service\s+(\w+)", text, flags=re.MULTILINE))
    return names


def nginx_routes() -> dict[str, str]:
    """nginx.conf's routing: gRPC service -> upstream name, from its `location /SERVICE/ { grpc_pass ...; }`."""
    text = (COMPONENT / "nginx.conf").read_text()
    routes = re.findall(r"location\s+/([\w.]+)/\s*\{\s*grpc_pass\s+\$likeness_upstream_scheme://([\w.-]+);", text)
    assert len(routes) == len(dict(routes)), "a service is routed twice"
    return dict(routes)


def grpc_port(service: dict[str, Any]) -> dict[str, Any]:
    (port,) = [port for port in service["spec"]["ports"] if port["name"] == "grpc"]
    return port


def serving_services(objects: list[dict[str, Any]]) -> dict[str, str]:
    """gRPC service -> the Kubernetes Service whose pods serve it: a ClusterIP Service with a grpc port selecting
    the Deployment that runs `likeness serve COMPONENT`, for the services of package likeness.COMPONENT.v1.
    Headless Services are left out: nginx resolves its upstreams once, at start, and pod addresses change."""
    deployments = by_kind(objects, "Deployment")
    serving: dict[str, str] = {}
    for name, service in by_kind(objects, "Service").items():
        if not [port for port in service["spec"]["ports"] if port["name"] == "grpc"] or name == "likeness":
            continue
        if service["spec"].get("clusterIP") == "None":
            continue
        (target,) = [
            d for d in deployments.values() if selects({"matchLabels": service["spec"]["selector"]}, pod_labels(d))
        ]
        args = target["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[0] == "serve", args
        for grpc_service in proto_services():
            if grpc_service.startswith(f"likeness.{args[1]}.v1."):
                assert grpc_service not in serving, f"{grpc_service}: {serving[grpc_service]} and {name}"
                serving[grpc_service] = name
    return serving


def example_dns_names() -> list[str]:
    """The names of the likeness-tls Certificate of the cert-manager example."""
    documents = [doc for doc in yaml.safe_load_all(CERTIFICATE_EXAMPLE.read_text()) if doc]
    (certificate,) = [d for d in documents if d["kind"] == "Certificate" and d["spec"]["secretName"] == "likeness-tls"]
    return certificate["spec"]["dnsNames"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


# ------------------------------------------------------------------------------------------------ the manifests


def test_the_overlays_include_the_gateway():
    for overlay in GATEWAY_BUILDS:
        assert "gateway" in components_of(overlay), overlay
    production = components_of("overlays/production")
    assert production.index("gateway") < production.index("tls"), "the tls component patches the gateway"
    assert "gateway-api" not in components_of("overlays/dev") + production, "needs CRDs and a controller"


@pytest.mark.parametrize("build", GATEWAY_BUILDS)
def test_the_configmap_is_the_component_files_mounted_where_nginx_reads_them(rendered, build):
    objects = rendered(build)
    spec = gateway_deployment(objects)["spec"]["template"]["spec"]
    container = nginx_container(objects)
    (volume,) = [v for v in spec["volumes"] if "configMap" in v]
    configmap = by_kind(objects, "ConfigMap")[volume["configMap"]["name"]]
    assert configmap["metadata"]["name"].startswith("likeness-gateway-"), "generated with a content hash"
    assert configmap["data"] == {name: (COMPONENT / name).read_text() for name in GATEWAY_FILES}
    items = {item["path"]: item["key"] for item in volume["configMap"]["items"]}
    assert items == {"nginx.conf": "nginx.conf", "transport.conf": GATEWAY_BUILDS[build]}
    assert "include transport.conf;" in configmap["data"]["nginx.conf"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert container["command"] == ["nginx"]
    args = container["args"]
    option = dict(zip(args[::2], args[1::2], strict=True))
    assert option["-c"] == f"{mount['mountPath']}/nginx.conf" and option["-e"] == "stderr", args
    # The prefix (pid file, temp folders: relative paths of nginx.conf) is the one writable volume.
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    assert writable == [option["-p"].rstrip("/")], writable
    (tmp,) = [v for v in spec["volumes"] if v["name"] == "tmp"]
    assert tmp["emptyDir"]["sizeLimit"]


@pytest.mark.parametrize("build", GATEWAY_BUILDS)
def test_gateway_pods_are_locked_down(rendered, build):
    objects = rendered(build)
    deployment = gateway_deployment(objects)
    spec = deployment["spec"]["template"]["spec"]
    container = nginx_container(objects)
    pod_security, security = spec["securityContext"], container["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] not in (None, 0)
    assert pod_security["runAsUser"] == 101, "the nginx user of the unprivileged image"
    assert pod_security["fsGroup"] == pod_security["runAsGroup"], "the tls Secret's 0440 files must be readable"
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    account = by_kind(objects, "ServiceAccount")[spec["serviceAccountName"]]
    assert account["automountServiceAccountToken"] is False
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False and security["runAsNonRoot"] is True
    assert security["capabilities"]["drop"] == ["ALL"] and not security["capabilities"].get("add")
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and resources["limits"]["memory"]
    assert "nvidia.com/gpu" not in resources["limits"] and not spec.get("tolerations")
    repository, _, tag = container["image"].rpartition(":")
    assert repository.endswith("nginx-unprivileged") and tag and tag != "latest" and "/" not in tag, container["image"]
    # Two replicas, rolled one at a time without losing capacity, and a disruption budget.
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budgets = [
        b
        for b in by_kind(objects, "PodDisruptionBudget").values()
        if selects(b["spec"]["selector"], pod_labels(deployment))
    ]
    assert [b["spec"].get("maxUnavailable") for b in budgets] == [1]


@pytest.mark.parametrize("build", GATEWAY_BUILDS)
def test_probes_and_ports_match_nginx_conf(rendered, build):
    objects = rendered(build)
    container = nginx_container(objects)
    nginx_conf = (COMPONENT / "nginx.conf").read_text()
    transport = (COMPONENT / GATEWAY_BUILDS[build]).read_text()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    (entry_port,) = re.findall(r"^listen (\d+) ", transport, flags=re.MULTILINE)
    (status_port,) = re.findall(r"^\s*listen (\d+);", nginx_conf, flags=re.MULTILINE)
    assert ports == {"grpc": int(entry_port), "status": int(status_port)}
    (healthz,) = re.findall(r"location = (/\w+) \{", nginx_conf)
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container[kind]
        assert probe["httpGet"] == {"path": healthz, "port": "status"}, kind
        assert probe["timeoutSeconds"] <= probe["periodSeconds"], kind
    assert container["livenessProbe"]["periodSeconds"] * container["livenessProbe"]["failureThreshold"] >= 60
    # The stop signal (SIGQUIT, the image's) lets calls finish for worker_shutdown_timeout after the preStop sleep.
    spec = gateway_deployment(objects)["spec"]["template"]["spec"]
    (shutdown,) = re.findall(r"^worker_shutdown_timeout (\d+)s;", nginx_conf, flags=re.MULTILINE)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + int(shutdown)


@pytest.mark.parametrize("build", GATEWAY_BUILDS)
def test_likeness_is_the_one_entry_service(rendered, build):
    objects = rendered(build)
    service = by_kind(objects, "Service")["likeness"]
    targets = [
        name
        for name, workload in {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}.items()
        if selects({"matchLabels": service["spec"]["selector"]}, pod_labels(workload))
    ]
    assert targets == ["likeness-gateway"]
    port = grpc_port(service)
    assert (port["port"], port["targetPort"]) == (50051, "grpc")
    tls = GATEWAY_BUILDS[build] == "tls.conf"
    assert port.get("appProtocol") == (None if tls else "kubernetes.io/h2c"), "h2c only when it is cleartext"
    assert service["spec"]["type"] == "ClusterIP"


def ingress_rules(objects: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    rules = []
    for policy in by_kind(objects, "NetworkPolicy").values():
        if selects(policy["spec"]["podSelector"], labels) and "Ingress" in policy["spec"]["policyTypes"]:
            rules.extend(policy["spec"].get("ingress", []))
    return rules


def ports_of(rule: dict[str, Any]) -> set[tuple[str, int]]:
    return {(port.get("protocol", "TCP"), port["port"]) for port in rule.get("ports", [])}


@pytest.mark.parametrize("build", GATEWAY_BUILDS)
def test_network_policies_admit_clients_and_let_the_gateway_reach_only_the_services(rendered, build):
    objects = rendered(build)
    gateway_labels = pod_labels(gateway_deployment(objects))
    # In: gRPC from the peers the services admit their clients from.
    rules = ingress_rules(objects, gateway_labels)
    assert rules and {port for rule in rules for port in ports_of(rule)} == {("TCP", 50051)}
    service_peers = by_kind(objects, "NetworkPolicy")["likeness-allow-grpc"]["spec"]["ingress"][0]["from"]
    assert service_peers in [rule["from"] for rule in rules]
    # Any other rule admits named pods of this namespace only (the studio component's admits the Studio).
    for rule in rules:
        if rule["from"] != service_peers:
            assert all(set(peer) == {"podSelector"} and peer["podSelector"] for peer in rule["from"]), rule
    # Out: isolated for egress; the services' gRPC port (not the workers', not the database) and DNS.
    egress_policies = [
        p
        for p in by_kind(objects, "NetworkPolicy").values()
        if selects(p["spec"]["podSelector"], gateway_labels) and "Egress" in p["spec"]["policyTypes"]
    ]
    assert egress_policies, "the gateway's egress is restricted"
    egress = [rule for policy in egress_policies for rule in policy["spec"].get("egress", [])]
    assert {port for rule in egress if "to" not in rule for port in ports_of(rule)} == {("UDP", 53), ("TCP", 53)}
    for name, workload in {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}.items():
        labels = pod_labels(workload)
        reachable = any(
            ("TCP", 50051) in ports_of(rule)
            and any(selects(peer.get("podSelector", {}), labels) for peer in rule["to"])
            for rule in egress
            if "to" in rule
        )
        is_service = labels.get("app.kubernetes.io/name") == "likeness" and component_of(workload) in SERVICE_COMPONENTS
        assert reachable == is_service, f"the gateway {'cannot' if is_service else 'can'} reach {name}"
        if is_service:
            # ...and each service admits the gateway on its gRPC port.
            assert any(
                ("TCP", 50051) in ports_of(rule)
                and any(selects(peer.get("podSelector", {"x": "x"}), gateway_labels) for peer in rule["from"])
                for rule in ingress_rules(objects, labels)
            ), name


# -------------------------------------------------------------------------------------------------- the routing


@pytest.mark.parametrize("build", GATEWAY_BUILDS)
def test_nginx_routes_every_service_to_the_service_that_serves_it(rendered, build):
    objects = rendered(build)
    routes = nginx_routes()
    serving = serving_services(objects)
    assert set(serving) == proto_services(), "every gRPC service of protos/ has a Service"
    assert set(routes) == proto_services() | SHARED_SERVICES
    upstreams = upstream_servers((COMPONENT / "nginx.conf").read_text())
    services = by_kind(objects, "Service")
    for grpc_service, upstream in routes.items():
        service_name = serving.get(grpc_service, upstream)
        # Upstreams are named after their Service: with TLS, nginx verifies the service by that name.
        assert upstream == service_name, f"{grpc_service} goes to {upstream}, served by {service_name}"
        assert upstreams[upstream] == f"{service_name}:{grpc_port(services[service_name])['port']}"
    assert {routes[name] for name in SHARED_SERVICES} == {"likeness-gallery"}, "health and reflection: one service"
    # Anything else: nginx answers UNIMPLEMENTED itself, HTTP 200 (see tests/e2e/test_gateway.py).
    fallback = re.search(r"location / \{((?:[^{}]|\{[^{}]*\})*)\}", (COMPONENT / "nginx.conf").read_text())
    assert fallback and "add_header grpc-status 12 always;" in fallback.group(1)
    assert "return 200;" in fallback.group(1) and "grpc_pass" not in fallback.group(1)


#: Fields of the Gateway API v1 objects used here (gateway.networking.k8s.io/v1, standard channel), to catch
#: misspellings: kubernetes-validate has no schema for CRDs.
GRPCROUTE_SPEC = {"parentRefs", "hostnames", "rules"}
PARENT_REF = {"group", "kind", "namespace", "name", "sectionName", "port"}
GRPCROUTE_RULE = {"name", "matches", "filters", "backendRefs", "sessionPersistence"}
GRPCROUTE_MATCH = {"method", "headers"}
GRPC_METHOD_MATCH = {"type", "service", "method"}
BACKEND_REF = {"group", "kind", "name", "namespace", "port", "weight", "filters"}
GATEWAY_SPEC = {"gatewayClassName", "listeners", "addresses", "infrastructure", "backendTLS", "allowedListeners"}
LISTENER = {"name", "hostname", "port", "protocol", "tls", "allowedRoutes"}
OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.fixture(scope="module")
def gateway_api_build(tmp_path_factory) -> list[dict[str, Any]]:
    """The dev overlay with the gateway-api component added, as an overlay of one's own would add it."""
    folder = tmp_path_factory.mktemp("gateway-api")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "likeness-dev",
        "resources": [os.path.relpath(DEPLOY / "overlays" / "dev", folder)],
        "components": [os.path.relpath(GATEWAY_API_COMPONENT, folder)],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = run_tool([tool("kubectl"), "kustomize", str(folder)])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_the_grpcroute_is_valid_gateway_api_and_routes_as_nginx_does(gateway_api_build):
    objects = gateway_api_build
    kustomization = yaml.safe_load((GATEWAY_API_COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    gateways = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Gateway"}
    routes = [o for o in objects if o["kind"] == "GRPCRoute"]
    assert gateways and routes
    for gateway in gateways.values():
        assert gateway["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert set(gateway["spec"]) <= GATEWAY_SPEC, sorted(set(gateway["spec"]) - GATEWAY_SPEC)
        assert OBJECT_NAME.match(gateway["spec"]["gatewayClassName"])
        for listener in gateway["spec"]["listeners"]:
            assert set(listener) <= LISTENER, sorted(set(listener) - LISTENER)
            # GRPCRoutes attach to HTTP (cleartext HTTP/2) and HTTPS listeners.
            assert listener["protocol"] in {"HTTP", "HTTPS"} and 1 <= listener["port"] <= 65535
            kinds = listener.get("allowedRoutes", {}).get("kinds")
            assert kinds is None or {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"} in kinds
    services = by_kind(objects, "Service")
    table: dict[str, str] = {}
    for route in routes:
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["metadata"]["namespace"]
        spec = route["spec"]
        assert set(spec) <= GRPCROUTE_SPEC, sorted(set(spec) - GRPCROUTE_SPEC)
        for parent in spec["parentRefs"]:
            assert set(parent) <= PARENT_REF, sorted(set(parent) - PARENT_REF)
            assert parent.get("group", "gateway.networking.k8s.io") == "gateway.networking.k8s.io"
            assert parent.get("kind", "Gateway") == "Gateway"
            assert parent.get("namespace", route["metadata"]["namespace"]) == route["metadata"]["namespace"]
            gateway = gateways[parent["name"]]
            listeners = {listener["name"] for listener in gateway["spec"]["listeners"]}
            assert parent.get("sectionName", next(iter(listeners))) in listeners
        for rule in spec["rules"]:
            assert set(rule) <= GRPCROUTE_RULE, sorted(set(rule) - GRPCROUTE_RULE)
            (backend,) = rule["backendRefs"]
            assert set(backend) <= BACKEND_REF, sorted(set(backend) - BACKEND_REF)
            assert backend.get("group", "") == "" and backend.get("kind", "Service") == "Service"
            assert "namespace" not in backend, "same namespace: no ReferenceGrant needed"
            service = services[backend["name"]]
            port = grpc_port(service)
            assert backend["port"] == port["port"]
            # Controllers speak cleartext HTTP/2 to a backend port only when its appProtocol says so.
            assert port["appProtocol"] == "kubernetes.io/h2c"
            for match in rule["matches"]:
                assert set(match) <= GRPCROUTE_MATCH, sorted(set(match) - GRPCROUTE_MATCH)
                method = match["method"]
                assert set(method) <= GRPC_METHOD_MATCH and method.get("type", "Exact") == "Exact", method
                assert "method" not in method, "whole services are routed"
                assert method["service"] not in table, f"{method['service']} is routed twice"
                table[method["service"]] = backend["name"]
    assert table == nginx_routes(), "the GRPCRoute and nginx.conf route alike"


# ------------------------------------------------------------------------------------------- nginx, for real


def sandbox_unavailable() -> str | None:
    if not Path("/usr/bin/unshare").exists():
        return "unshare (util-linux) is not installed"
    probe = run_tool(["unshare", "-m", "--propagation", "private", "mount", "-o", "remount,bind,ro", "/"])
    if probe.returncode != 0:
        return f"cannot make private read-only mounts here (needs CAP_SYS_ADMIN): {probe.stderr.strip()}"
    return None


def test_nginx_runs_the_shipped_configuration_on_a_read_only_root(tmp_path):
    """The pod's command in a private mount namespace where / is read-only and only the prefix is writable (the
    pod's /tmp emptyDir): nginx starts, answers its probe, writes only there and stops cleanly on SIGQUIT."""
    require_nginx()
    reason = sandbox_unavailable()
    if reason:
        pytest.skip(reason)
    unused = {service: f"127.0.0.1:{free_port()}" for service in ("trainer", "inference", "gallery")}
    nginx = Nginx(tmp_path / "nginx", unused)
    prefix = nginx.root
    prefix.mkdir(parents=True, exist_ok=True)
    script = "set -eu; mount --bind {0} {0}; mount -o remount,bind,ro /; touch /likeness-probe 2>/dev/null && exit 3; exec {1}"
    command = " ".join(f"'{part}'" for part in nginx.command())
    with open(nginx.access_log_path, "wb") as stdout, open(nginx.error_log_path, "wb") as stderr:
        process = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script.format(prefix, command)],
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"exited with {process.returncode}: {nginx.error_log()}"
            try:
                with urllib.request.urlopen(nginx.status_url, timeout=2) as response:
                    assert response.status == 200 and response.read() == b"ok\n"
                    break
            except OSError:
                assert time.monotonic() < deadline, nginx.error_log()
                time.sleep(0.05)
        process.send_signal(signal.SIGQUIT)
        assert process.wait(timeout=20) == 0, nginx.error_log()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    written = {path.name for path in prefix.iterdir()}
    assert {"client_body_temp", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp"} <= written, written
    problems = [line for line in nginx.error_log().splitlines() if re.search(r"\[(emerg|alert|crit|error)\]", line)]
    assert not problems, problems


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class Authority:
    """A CA that issues server certificates, written as a Secret volume would hold them."""

    def __init__(self) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name("likeness gateway test CA"))
            .issuer_name(_name("likeness gateway test CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, dns_names: list[str]) -> tuple[bytes, bytes, int]:
        """(certificate PEM, key PEM, serial number) for `dns_names`."""
        now = dt.datetime.now(dt.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(dns_names[0]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return certificate.public_bytes(serialization.Encoding.PEM), key_pem, certificate.serial_number

    def write_secret(self, folder: Path, dns_names: list[str], version: int) -> int:
        """Writes tls.crt, tls.key and ca.crt as the kubelet lays out a Secret volume (each key a symlink through
        `..data`, swapped atomically on an update); returns the certificate's serial number."""
        folder.mkdir(parents=True, exist_ok=True)
        certificate, key, serial = self.issue(dns_names)
        data = folder / f"..2026_01_01_00_00_0{version}"
        data.mkdir()
        (data / "tls.crt").write_bytes(certificate)
        (data / "tls.key").write_bytes(key)
        (data / "ca.crt").write_bytes(self.pem)
        (folder / "..data_tmp").symlink_to(data.name)
        os.replace(folder / "..data_tmp", folder / "..data")
        for name in SECRET_KEYS:
            if not (folder / name).is_symlink():
                (folder / name).symlink_to(f"..data/{name}")
        return serial


def tls_health_server(authority: Authority, dns_names: list[str]) -> tuple[grpc.Server, str]:
    """A grpc.health.v1 server over TLS with a certificate for `dns_names`, SERVING."""
    certificate, key, _serial = authority.issue(dns_names)
    servicer = health.HealthServicer()
    servicer.set("", SERVING)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = free_port()
    assert server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key, certificate)])) == port
    server.start()
    return server, f"127.0.0.1:{port}"


def served_serial(port: int, ca_file: Path) -> int:
    """Serial number of the certificate the gateway presents for `likeness`, verified against the CA."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="likeness") as connection,
    ):
        der = connection.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der).serial_number


def test_tls_conf_terminates_tls_verifies_the_services_and_follows_a_renewed_secret(tmp_path):
    """nginx with tls.conf, as the tls component mounts it: the entry presents the Secret's certificate for
    `likeness`; each service is reached over TLS and verified against ca.crt by its Service name (an upstream
    whose certificate lacks the name is refused); a renewed Secret is served without a reload."""
    require_nginx()
    authority = Authority()
    dns_names = example_dns_names()
    secret = tmp_path / "tls"
    first_serial = authority.write_secret(secret, dns_names, version=1)
    good, good_address = tls_health_server(authority, dns_names)
    impostor, impostor_address = tls_health_server(authority, ["someone-else"])
    upstreams = {"trainer": good_address, "gallery": good_address, "inference": impostor_address}
    try:
        with Nginx(tmp_path / "nginx", upstreams, transport="tls", tls_dir=secret) as nginx:
            credentials = grpc.ssl_channel_credentials((secret / "ca.crt").read_bytes())
            options = [("grpc.ssl_target_name_override", "likeness")]
            with grpc.secure_channel(nginx.address, credentials, options=options) as channel:
                # Health goes to the gallery (a verified upstream).
                check = health_pb2_grpc.HealthStub(channel).Check
                assert check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
                # The trainer's path reaches the trainer's server over TLS, which knows no such method.
                with pytest.raises(grpc.RpcError) as reached:
                    channel.unary_unary("/likeness.trainer.v1.TrainerService/ListTrainingJobs")(b"", timeout=10)
                assert reached.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert "unknown service" not in (reached.value.details() or ""), "answered by the server"
                # The inference upstream's certificate is not valid for likeness-inference: refused.
                with pytest.raises(grpc.RpcError) as refused:
                    channel.unary_unary("/likeness.inference.v1.InferenceService/GetServerStatus")(b"", timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
            assert re.search(r"upstream SSL certificate does not match \"likeness-inference\"", nginx.error_log())
            upstream_of = {line["method"]: line["upstream"] for line in nginx.access_log()}
            assert upstream_of["/likeness.trainer.v1.TrainerService/ListTrainingJobs"] == good_address
            # A renewal (new key and certificate, same CA), as cert-manager and the kubelet write it.
            assert served_serial(nginx.port, secret / "ca.crt") == first_serial
            renewed_serial = authority.write_secret(secret, dns_names, version=2)
            assert served_serial(nginx.port, secret / "ca.crt") == renewed_serial
            assert health_status(nginx.address, credentials=credentials) is None, "name not verified: no override"
    finally:
        good.stop(0)
        impostor.stop(0)


@pytest.mark.parametrize("build", ["overlays/production"])
def test_the_tls_component_switches_the_gateway_to_tls(rendered, build):
    objects = rendered(build)
    spec = gateway_deployment(objects)["spec"]["template"]["spec"]
    container = nginx_container(objects)
    (volume,) = [v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == "likeness-tls"]
    assert "items" not in volume["secret"], "all three keys"
    mode = volume["secret"]["defaultMode"]
    assert mode & 0o040 and not mode & 0o007, f"{mode:o}"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True and "subPath" not in mount, "a subPath mount is never renewed"
    # Every file nginx reads from the Secret is a key of it, at the mounted path.
    read = set()
    for name in ("nginx.conf", "tls.conf"):
        read.update(re.findall(re.escape(TLS_MOUNT) + r"([\w.]+);", (COMPONENT / name).read_text()))
    assert mount["mountPath"] + "/" == TLS_MOUNT and read == SECRET_KEYS, read
    # The certificate must be valid for the gateway's Service in every form clients dial, and for each upstream
    # name nginx verifies.
    dns_names = set(example_dns_names())
    namespace = gateway_deployment(objects)["metadata"]["namespace"]
    assert {"likeness", f"likeness.{namespace}.svc", f"likeness.{namespace}.svc.cluster.local"} <= dns_names
    assert set(upstream_servers((COMPONENT / "nginx.conf").read_text())) <= dns_names


def test_render_config_substitutes_only_addresses_and_ports(tmp_path):
    """The helper's substitutions touch nothing else: the routing tested is the routing shipped."""
    upstreams = {"trainer": "127.0.0.1:1", "inference": "127.0.0.1:2", "gallery": "127.0.0.1:3"}
    conf = render_config(tmp_path, upstreams, port=4, status_port=5)
    shipped = (COMPONENT / "nginx.conf").read_text().splitlines()
    rendered_lines = conf.read_text().splitlines()
    changed = [(a.strip(), b.strip()) for a, b in zip(shipped, rendered_lines, strict=True) if a != b]
    assert changed == [
        ("server likeness-trainer:50051;", "server 127.0.0.1:1;"),
        ("server likeness-inference:50051;", "server 127.0.0.1:2;"),
        ("server likeness-gallery:50051;", "server 127.0.0.1:3;"),
        ("listen 8081;", "listen 127.0.0.1:5;"),
    ]
    transport = (tmp_path / "transport.conf").read_text()
    assert transport == (COMPONENT / "plaintext.conf").read_text().replace("listen 50051 ", "listen 127.0.0.1:4 ")
