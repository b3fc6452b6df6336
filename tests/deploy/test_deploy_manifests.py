"""The Kubernetes manifests: every build renders, validates against the API schemas, follows the security and
operational policy, and configures the services with settings the real settings loader accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_helpers import (
    BUILDS,
    PROMETHEUS_DIR,
    REPO,
    by_kind,
    component_of,
    container_environment,
    dockerfile_environment,
)

from likeness.server.settings import Settings, load_settings

#: Validated against the oldest Kubernetes the manifests support (native gRPC probes are GA since 1.27; 1.29 is
#: the oldest release the big providers still run) and a recent one, with unknown fields rejected.
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")
#: Custom resources of the Prometheus Operator: no schema in kubernetes-validate, checked structurally below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
GRPC_SERVICES = {
    "trainer": "likeness.trainer.v1.TrainerService",
    "inference": "likeness.inference.v1.InferenceService",
    "gallery": "likeness.gallery.v1.GalleryService",
}
EXPECTED_GPU = {
    "base": {"trainer", "inference"},
    "overlays/dev": set(),
    "overlays/production": {"trainer", "inference"},
}
#: Least time the startup probe must allow before the kubelet restarts a starting container.
MIN_STARTUP_SECONDS = {"trainer": 300, "inference": 600, "gallery": 120}


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(dep, dep["spec"]["template"]["spec"]) for dep in by_kind(objects, "Deployment").values()]


def container_settings(container: dict[str, Any], objects: list[dict[str, Any]]) -> Settings:
    return load_settings(None, environ=container_environment(container, objects))


def writable_mounts(container: dict[str, Any]) -> list[str]:
    return [mount["mountPath"] for mount in container.get("volumeMounts", []) if not mount.get("readOnly")]


def is_under(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


@pytest.mark.parametrize("build", BUILDS)
def test_build_validates_against_kubernetes_schemas(rendered, build):
    objects = rendered(build)
    assert objects, f"deploy/{build} renders nothing"
    for version in KUBERNETES_VERSIONS:
        for obj in objects:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            if obj["kind"] in CUSTOM_KINDS:
                with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                    kubernetes_validate.validate(obj, version, strict=True)
                continue
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(part) for part in exc.path)
                pytest.fail(f"deploy/{build}: {name} is invalid for Kubernetes {version} at {path}: {exc.message}")


def test_strict_validation_rejects_a_misspelt_field(rendered):
    """Guards the check above: a typo in a probe must not pass as an unknown-but-allowed field."""
    deployment = dict(by_kind(rendered("base"), "Deployment")["likeness-inference"])
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grcp"] = {"port": 50051}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("build", BUILDS)
def test_pods_run_locked_down(rendered, build):
    for deployment, spec in pod_specs(rendered(build)):
        name = deployment["metadata"]["name"]
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["runAsUser"] == 10001, f"{name}: must match the image's user"
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        # Service links would inject LIKENESS_<SERVICE>_PORT variables that the settings loader rejects.
        assert spec["enableServiceLinks"] is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        for container in spec["containers"] + spec.get("initContainers", []):
            security = container["securityContext"]
            label = f"{name}/{container['name']}"
            assert security["readOnlyRootFilesystem"] is True, label
            assert security["allowPrivilegeEscalation"] is False, label
            assert security.get("privileged", False) is False, label
            assert security["capabilities"]["drop"] == ["ALL"], label
            assert not security["capabilities"].get("add"), label
            assert security.get("runAsUser", pod_security["runAsUser"]) != 0, label


def service_link_variables(service: dict[str, Any]) -> dict[str, str]:
    """The variables the kubelet injects for a Service when service links are on (docker-links style)."""
    prefix = service["metadata"]["name"].upper().replace("-", "_")
    variables = {f"{prefix}_SERVICE_HOST": "10.96.0.10"}
    for port in service["spec"]["ports"]:
        number, protocol = port["port"], port.get("protocol", "TCP")
        variables[f"{prefix}_PORT"] = f"{protocol.lower()}://10.96.0.10:{number}"
        variables[f"{prefix}_PORT_{number}_{protocol}"] = f"{protocol.lower()}://10.96.0.10:{number}"
    return variables


def test_service_link_variables_are_not_mistaken_for_settings(rendered):
    """Services named `likeness-*` get link variables that look like settings; the loader must ignore them (the
    pods also set enableServiceLinks: false, so nothing depends on it)."""
    objects = rendered("base")
    container = by_kind(objects, "Deployment")["likeness-gallery"]["spec"]["template"]["spec"]["containers"][0]
    environment = container_environment(container, objects)
    links = service_link_variables(by_kind(objects, "Service")["likeness-inference"])
    assert links
    assert load_settings(None, environ={**environment, **links}) == load_settings(None, environ=environment)
    for deployment, spec in pod_specs(objects):
        assert spec.get("enableServiceLinks") is False, deployment["metadata"]["name"]


@pytest.mark.parametrize("build", BUILDS)
def test_containers_set_resources_and_gpus_where_expected(rendered, build):
    with_gpu = set()
    for deployment, spec in pod_specs(rendered(build)):
        container = spec["containers"][0]
        resources = container["resources"]
        label = deployment["metadata"]["name"]
        assert {"cpu", "memory"} <= set(resources["requests"]), f"{label}: cpu and memory requests are required"
        assert "memory" in resources["limits"], f"{label}: a memory limit is required"
        tolerates_gpu_nodes = any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))
        gpus = resources["limits"].get("nvidia.com/gpu")
        if gpus is not None:
            with_gpu.add(component_of(deployment))
            assert gpus == 1 and resources["requests"].get("nvidia.com/gpu", gpus) == 1, label
            assert tolerates_gpu_nodes, f"{label}: requests a GPU but does not tolerate the nvidia.com/gpu taint"
        else:
            assert "nvidia.com/gpu" not in resources["requests"], label
            assert not tolerates_gpu_nodes, f"{label}: tolerates GPU nodes without using a GPU"
    assert with_gpu == EXPECTED_GPU[build]


@pytest.mark.parametrize("build", BUILDS)
def test_images_are_pinned_and_shared(rendered, build):
    images = set()
    for _deployment, spec in pod_specs(rendered(build)):
        for container in spec["containers"]:
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and "/" not in tag, f"{image}: name a tag (or digest)"
            assert tag != "latest", f"{image}: a moving tag makes rollouts unreproducible"
            images.add(image)
    assert len(images) == 1, f"every service runs the same image, got {sorted(images)}"


@pytest.mark.parametrize("build", BUILDS)
def test_probes_use_native_grpc_health_checks(rendered, build):
    for deployment, spec in pod_specs(rendered(build)):
        component = component_of(deployment)
        container = spec["containers"][0]
        settings = container_settings(container, rendered(build))
        startup, readiness, liveness = (container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe"))
        for probe in (startup, readiness, liveness):
            assert probe["grpc"]["port"] == settings.port, deployment["metadata"]["name"]
        # Readiness follows the service's own health, which is NOT_SERVING while it drains.
        assert readiness["grpc"]["service"] == GRPC_SERVICES[component]
        # Liveness and startup ask for the server as a whole.
        assert "service" not in liveness["grpc"] and "service" not in startup["grpc"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert budget >= MIN_STARTUP_SECONDS[component], f"{component}: startup probe allows only {budget} s"
        assert liveness["failureThreshold"] * liveness["periodSeconds"] >= 60, "liveness must tolerate hiccups"


@pytest.mark.parametrize("build", BUILDS)
def test_termination_grace_outlasts_the_drain(rendered, build):
    for deployment, spec in pod_specs(rendered(build)):
        container = spec["containers"][0]
        settings = container_settings(container, rendered(build))
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_stop_seconds = float(pre_stop[-1]) if pre_stop[:1] == ["sleep"] else 0.0
        needed = pre_stop_seconds + settings.grace_seconds
        assert spec["terminationGracePeriodSeconds"] > needed, (
            f"{deployment['metadata']['name']}: terminationGracePeriodSeconds must exceed preStop "
            f"({pre_stop_seconds} s) + LIKENESS_GRACE_SECONDS ({settings.grace_seconds} s)"
        )


@pytest.mark.parametrize("build", BUILDS)
def test_settings_load_and_writable_paths_are_mounted(rendered, build):
    objects = rendered(build)
    image_paths = {k: v for k, v in dockerfile_environment().items() if v.startswith("/") and ":" not in v}
    assert {"HOME", "HF_HOME", "TORCH_HOME", "LIKENESS_CACHE_DIR"} <= set(image_paths)
    for deployment, spec in pod_specs(objects):
        container = spec["containers"][0]
        settings = container_settings(container, objects)
        writable = writable_mounts(container)
        label = deployment["metadata"]["name"]
        assert "/tmp" in writable, f"{label}: /tmp must be a writable volume under a read-only root"
        environment = container_environment(container, objects)
        for name in image_paths:
            path = environment[name]
            if path.startswith("/"):
                assert is_under(path, writable), f"{label}: {name}={path} is not on a writable volume"
        assert is_under(settings.cache_dir, writable), label
        if settings.storage_root_is_local:
            assert is_under(settings.storage_url, writable), f"{label}: storage {settings.storage_url} not mounted"
        else:
            assert settings.storage_url.startswith("s3://"), label
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {"grpc": settings.port, "metrics": settings.metrics_port}, label
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", label
        assert annotations["prometheus.io/port"] == str(settings.metrics_port), label


def test_settings_of_each_service_differ_where_intended(rendered):
    objects = rendered("base")
    settings = {
        component_of(dep): container_settings(spec["containers"][0], objects) for dep, spec in pod_specs(objects)
    }
    assert settings["trainer"].grace_seconds > settings["inference"].grace_seconds, "trainer checkpoints at stop"
    assert {s.storage_url for s in settings.values()} == {"/var/lib/likeness"}
    dev = {
        component_of(d): container_settings(s["containers"][0], rendered("overlays/dev"))
        for d, s in pod_specs(rendered("overlays/dev"))
    }
    assert {s.device for s in dev.values()} == {"cpu"}


@pytest.mark.parametrize("build", BUILDS)
def test_references_between_objects_resolve(rendered, build):
    objects = rendered(build)
    deployments = by_kind(objects, "Deployment")
    claims = by_kind(objects, "PersistentVolumeClaim")
    for deployment, spec in pod_specs(objects):
        assert spec["serviceAccountName"] in by_kind(objects, "ServiceAccount")
        for volume in spec["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, deployment["metadata"]["name"]
        mounted = {m["name"] for m in spec["containers"][0]["volumeMounts"]}
        assert mounted == {v["name"] for v in spec["volumes"]}, deployment["metadata"]["name"]
    for service in by_kind(objects, "Service").values():
        selector = service["spec"]["selector"]
        targets = [
            dep
            for dep in deployments.values()
            if selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)} Deployments"
        port_names = {p["name"] for p in targets[0]["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    for budget in by_kind(objects, "PodDisruptionBudget").values():
        labels = budget["spec"]["selector"]["matchLabels"].items()
        assert any(labels <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values())


@pytest.mark.parametrize("build", BUILDS)
def test_workload_shapes(rendered, build):
    objects = rendered(build)
    deployments = by_kind(objects, "Deployment")
    trainer = deployments["likeness-trainer"]["spec"]
    # One job runner per GPU; old and new trainer pods never overlap (jobs resume from checkpoints).
    assert trainer["strategy"]["type"] == "Recreate" and trainer["replicas"] == 1
    inference = deployments["likeness-inference"]["spec"]
    assert inference["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budgets = {
        component_of(d): b
        for d in deployments.values()
        for b in by_kind(objects, "PodDisruptionBudget").values()
        if b["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    }
    assert "inference" in budgets
    autoscalers = by_kind(objects, "HorizontalPodAutoscaler")
    if autoscalers:
        hpa = autoscalers["likeness-inference"]["spec"]
        assert hpa["scaleTargetRef"]["name"] == "likeness-inference"
        assert "replicas" not in inference, "with an HPA the Deployment must not fix the replica count"
        metric = hpa["metrics"][0]["pods"]["metric"]
        assert metric["selector"]["matchLabels"]["grpc_service"] == GRPC_SERVICES["inference"]
        assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
        fewest_replicas = hpa["minReplicas"]
    else:
        fewest_replicas = inference["replicas"]
    if "minAvailable" in budgets["inference"]["spec"]:
        # A budget that needs every replica available blocks node drains forever.
        assert budgets["inference"]["spec"]["minAvailable"] < fewest_replicas


@pytest.mark.parametrize(
    ("build", "namespace"), [("overlays/dev", "likeness-dev"), ("overlays/production", "likeness")]
)
def test_overlays_own_a_restricted_namespace(rendered, build, namespace):
    objects = rendered(build)
    namespaces = by_kind(objects, "Namespace")
    assert set(namespaces) == {namespace}
    assert namespaces[namespace]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, f"{obj['kind']}/{obj['metadata']['name']}"


def test_storage_choices(rendered):
    for build in ("base", "overlays/dev"):
        claims = by_kind(rendered(build), "PersistentVolumeClaim")
        assert claims["likeness-storage"]["spec"]["accessModes"] == ["ReadWriteMany"], "pods share it across nodes"
    production = rendered("overlays/production")
    assert "likeness-storage" not in by_kind(production, "PersistentVolumeClaim")
    for _deployment, spec in pod_specs(production):
        container = spec["containers"][0]
        assert {"secretRef": {"name": "likeness-s3"}} in container["envFrom"]
        assert all(m["mountPath"] != "/var/lib/likeness" for m in container["volumeMounts"])
    for build in BUILDS:
        for deployment, spec in pod_specs(rendered(build)):
            for mount in spec["containers"][0]["volumeMounts"]:
                if mount["name"] == "base-models":
                    assert mount["readOnly"] is True and mount["mountPath"] == "/models", deployment["metadata"]


def test_service_monitor_matches_the_services(rendered):
    objects = rendered("overlays/production")
    monitor = by_kind(objects, "ServiceMonitor")["likeness"]
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    endpoint_ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
    scraped = {
        service["metadata"]["name"]
        for service in by_kind(objects, "Service").values()
        if selector <= service["metadata"]["labels"].items()
        and endpoint_ports & {port["name"] for port in service["spec"]["ports"]}
    }
    assert scraped == {"likeness-trainer", "likeness-inference", "likeness-gallery"}


def test_prometheus_rule_carries_alerts_yml(rendered):
    rule = by_kind(rendered("overlays/production"), "PrometheusRule")["likeness"]
    alerts = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == alerts["groups"]


def test_base_env_file_only_names_known_settings():
    """likeness.env is the documented list of settings; a typo there would stop every pod at start-up."""
    env_file = Path(REPO / "deploy/base/likeness.env").read_text().splitlines()
    environ = dict(line.split("=", 1) for line in env_file if line and not line.startswith("#"))
    settings = load_settings(None, environ=environ)
    assert settings.metrics_port == 9090 and settings.port == 50051
