"""The Kubernetes manifests: every build renders, validates against the API schemas, follows the security and
operational policy, and configures the services with settings the real settings loader accepts."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_helpers import (
    BUILDS,
    DEPLOY,
    PROMETHEUS_DIR,
    REPO,
    by_kind,
    component_of,
    container_environment,
    dockerfile_environment,
    secret_value,
    selects,
)

from likeness.server.settings import Settings, load_settings

#: Validated against the oldest Kubernetes the manifests support (native gRPC probes are GA since 1.27; 1.29 is
#: the oldest release the big providers still run) and a recent one, with unknown fields rejected.
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")
#: Custom resources of the Prometheus Operator and of KEDA: no schema in kubernetes-validate, checked structurally
#: below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
#: The service each component's readiness probe asks for; None: the server as a whole (trainer workers serve no
#: client RPCs, only health and metrics).
GRPC_SERVICES = {
    "trainer": "likeness.trainer.v1.TrainerService",
    "trainer-worker": None,
    "inference": "likeness.inference.v1.InferenceService",
    "gallery": "likeness.gallery.v1.GalleryService",
}
EXPECTED_GPU = {
    "base": {"trainer-worker", "inference"},
    "overlays/dev": set(),
    "overlays/production": {"trainer-worker", "inference"},
}
#: Least time the startup probe must allow before the kubelet restarts a starting container.
MIN_STARTUP_SECONDS = {"trainer": 300, "trainer-worker": 300, "inference": 600, "gallery": 120}
#: The trainer's two roles: Deployment name -> (pod component label, LIKENESS_ROLE).
TRAINER_ROLES = {"likeness-trainer-api": ("trainer", "api"), "likeness-trainer-worker": ("trainer-worker", "worker")}
#: The Secret (and key) holding the control-plane database URL: created by the operator, or by postgres-dev.
DATABASE_SECRET = ("likeness-database", "url")
#: Secrets a build may reference without containing them: the operator creates them (docs/deployment.md; the
#: studio component's session key: docs/studio.md).
EXTERNAL_SECRETS = {"likeness-s3", "likeness-database", "likeness-studio"}
#: The only objects allowed to carry a database password: the dev database's generated Secrets.
DEV_DATABASE_SECRETS = {("overlays/dev", "likeness-postgres"), ("overlays/dev", "likeness-database")}
#: The kustomize components: every one must be part of some overlay, so the checks on rendered builds cover it.
COMPONENTS = DEPLOY / "components"
#: A database URL both the trainer and KEDA's postgresql scaler (pgx) read: no `+driver` in the scheme.
PLAIN_POSTGRES_URL = re.compile(r"^postgres(ql)?://")


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The Likeness services' Deployments (label app.kubernetes.io/name=likeness) and their pod specs. The gateway
    component's nginx pods run another image as another user: test_deploy_gateway.py checks them."""
    return [
        (dep, dep["spec"]["template"]["spec"])
        for dep in by_kind(objects, "Deployment").values()
        if dep["metadata"]["labels"].get("app.kubernetes.io/name") == "likeness"
    ]


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
    if build != "base" and "../../components/tls" in yaml.safe_load(
        (DEPLOY / build / "kustomization.yaml").read_text()
    ).get("components", []):
        pytest.skip("the tls component replaces these probes with exec probes: tests/deploy/test_deploy_tls.py")
    for deployment, spec in pod_specs(rendered(build)):
        component = component_of(deployment)
        container = spec["containers"][0]
        settings = container_settings(container, rendered(build))
        startup, readiness, liveness = (container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe"))
        for probe in (startup, readiness, liveness):
            assert probe["grpc"]["port"] == settings.port, deployment["metadata"]["name"]
        # Readiness follows the service's own health, which is NOT_SERVING while it drains.
        if GRPC_SERVICES[component] is None:
            assert "service" not in readiness["grpc"], deployment["metadata"]["name"]
        else:
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
    assert settings["trainer-worker"].grace_seconds > settings["inference"].grace_seconds, "workers checkpoint at stop"
    assert {s.storage_url for s in settings.values()} == {"/var/lib/likeness"}
    dev = {
        component_of(d): container_settings(s["containers"][0], rendered("overlays/dev"))
        for d, s in pod_specs(rendered("overlays/dev"))
    }
    assert {s.device for s in dev.values()} == {"cpu"}


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments and StatefulSets (postgres-dev's database) by name."""
    return {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}


def secret_references(spec: dict[str, Any]) -> set[tuple[str, str | None]]:
    """(Secret name, key or None for a whole-Secret envFrom) for every Secret a pod spec reads."""
    references = set()
    for container in spec["containers"] + spec.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                references.add((source["secretRef"]["name"], None))
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                references.add((ref["name"], ref["key"]))
    return references


def secret_keys(secret: dict[str, Any]) -> set[str]:
    return set(secret.get("data", {})) | set(secret.get("stringData", {}))


@pytest.mark.parametrize("build", BUILDS)
def test_references_between_objects_resolve(rendered, build):
    objects = rendered(build)
    deployments = by_kind(objects, "Deployment")
    all_workloads = workloads(objects)
    claims = by_kind(objects, "PersistentVolumeClaim")
    secrets = by_kind(objects, "Secret")
    for name, workload in all_workloads.items():
        spec = workload["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] in by_kind(objects, "ServiceAccount")
        templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
        mounted = {m["name"] for m in spec["containers"][0]["volumeMounts"]}
        assert mounted == {v["name"] for v in spec.get("volumes", [])} | templates, name
        for secret, key in secret_references(spec):
            if secret in secrets:
                assert key is None or key in secret_keys(secrets[secret]), f"{name}: Secret {secret} has no key {key}"
            else:
                assert secret in EXTERNAL_SECRETS, f"{name} reads Secret {secret}, which nothing creates"
        if workload["kind"] == "StatefulSet":
            assert workload["spec"]["serviceName"] in by_kind(objects, "Service"), name
    for service in by_kind(objects, "Service").values():
        selector = service["spec"]["selector"]
        targets = [
            workload
            for workload in all_workloads.values()
            if selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)} workloads"
        port_names = {p["name"] for p in targets[0]["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    for budget in by_kind(objects, "PodDisruptionBudget").values():
        labels = budget["spec"]["selector"]["matchLabels"].items()
        assert any(labels <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values())
    for autoscaler in by_kind(objects, "HorizontalPodAutoscaler").values():
        target = autoscaler["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, autoscaler["metadata"]["name"]


def autoscaler_of(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any] | None:
    """The spec of the HPA scaling a Deployment, if one does."""
    for autoscaler in by_kind(objects, "HorizontalPodAutoscaler").values():
        if autoscaler["spec"]["scaleTargetRef"]["name"] == deployment:
            return autoscaler["spec"]
    return None


def scaled_object_of(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any] | None:
    """The spec of the KEDA ScaledObject scaling a Deployment, if one does."""
    for scaled in by_kind(objects, "ScaledObject").values():
        if scaled["spec"]["scaleTargetRef"]["name"] == deployment:
            return scaled["spec"]
    return None


@pytest.mark.parametrize("build", BUILDS)
def test_workload_shapes(rendered, build):
    objects = rendered(build)
    deployments = by_kind(objects, "Deployment")
    budgets_by_deployment = {
        name: budget
        for name, d in deployments.items()
        for budget in by_kind(objects, "PodDisruptionBudget").values()
        if budget["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    }
    # Trainer API: stateless, at least two replicas, its count owned by a CPU HPA.
    api = deployments["likeness-trainer-api"]["spec"]
    assert api["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    api_hpa = autoscaler_of(objects, "likeness-trainer-api")
    assert api_hpa, "the trainer API scales on CPU"
    assert "replicas" not in api, "with an HPA the Deployment must not fix the replica count"
    assert api_hpa["minReplicas"] >= 2 and api_hpa["maxReplicas"] >= api_hpa["minReplicas"]
    assert [m["resource"]["name"] for m in api_hpa["metrics"] if m["type"] == "Resource"] == ["cpu"]
    assert budgets_by_deployment["likeness-trainer-api"]["spec"]["maxUnavailable"] == 1
    # Trainer workers: replaced in place (a surge pod would need a spare GPU); one replica, or owned by KEDA.
    worker = deployments["likeness-trainer-worker"]["spec"]
    assert worker["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert autoscaler_of(objects, "likeness-trainer-worker") is None, "KEDA, not a second HPA, scales the workers"
    if scaled_object_of(objects, "likeness-trainer-worker"):
        assert "replicas" not in worker, "with KEDA the Deployment must not fix the replica count"
    else:
        assert worker["replicas"] == 1
    inference = deployments["likeness-inference"]["spec"]
    assert inference["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budgets = {component_of(deployments[name]): budget for name, budget in budgets_by_deployment.items()}
    assert "inference" in budgets
    hpa = autoscaler_of(objects, "likeness-inference")
    if hpa:
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
    assert scraped == {"likeness-trainer", "likeness-trainer-worker", "likeness-inference", "likeness-gallery"}


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
    # The control plane's defaults, written out: API replicas and workers read the same values.
    assert (settings.lease_seconds, settings.heartbeat_seconds, settings.watch_poll_ms) == (15, 2, 100)
    assert "LIKENESS_DATABASE_URL" not in environ and "LIKENESS_ROLE" not in environ


# ------------------------------------------------------------------------------------- trainer roles and database


def first_container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_entry(container: dict[str, Any], name: str) -> dict[str, Any]:
    entries = [entry for entry in container.get("env", []) if entry["name"] == name]
    assert len(entries) == 1, f"{container['name']}: {len(entries)} env entries named {name}"
    return entries[0]


def fewest_replicas(objects: list[dict[str, Any]], name: str) -> int:
    """The least number of replicas a Deployment runs: the HPA's minimum if one scales it, else its count."""
    hpa = autoscaler_of(objects, name)
    if hpa:
        return hpa["minReplicas"]
    return by_kind(objects, "Deployment")[name]["spec"].get("replicas", 1)


@pytest.mark.parametrize("build", BUILDS)
def test_trainer_runs_as_an_api_and_gpu_workers(rendered, build):
    objects = rendered(build)
    deployments = by_kind(objects, "Deployment")
    assert "likeness-trainer" not in deployments, "the single trainer Deployment is split into API and workers"
    for name, (component, role) in TRAINER_ROLES.items():
        deployment = deployments[name]
        container = first_container(deployment)
        assert component_of(deployment) == component, name
        assert container["args"] == ["serve", "trainer"], name
        environment = container_environment(container, objects)
        assert environment["LIKENESS_ROLE"] == role, name
        settings = container_settings(container, objects)
        assert settings.role == role, name
        # Every replica must share one database: never the per-pod SQLite file the loader falls back to.
        assert settings.resolved_database_url == secret_value(objects, *DATABASE_SECRET), name
        # The database URL holds a password: from the Secret, never a literal or the ConfigMap.
        source = env_entry(container, "LIKENESS_DATABASE_URL")
        assert "value" not in source, name
        ref = source["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == DATABASE_SECRET and not ref.get("optional"), name
    api, worker = (first_container(deployments[name])["resources"] for name in TRAINER_ROLES)
    assert "nvidia.com/gpu" not in api["requests"] and "nvidia.com/gpu" not in api.get("limits", {})
    assert not deployments["likeness-trainer-api"]["spec"]["template"]["spec"].get("tolerations")
    assert fewest_replicas(objects, "likeness-trainer-api") >= 2, "the API runs at least two replicas"
    if build in ("base", "overlays/production"):
        assert worker["requests"]["nvidia.com/gpu"] == 1 and worker["limits"]["nvidia.com/gpu"] == 1
    else:
        assert "nvidia.com/gpu" not in worker["requests"], "dev is cpu-only"
    for configmap in by_kind(objects, "ConfigMap").values():
        assert "LIKENESS_DATABASE_URL" not in configmap.get("data", {}), configmap["metadata"]["name"]
        assert "LIKENESS_ROLE" not in configmap.get("data", {}), "the role is per Deployment"
    # API and workers agree on the lease protocol: both read it from the shared ConfigMap.
    api_settings, worker_settings = (
        container_settings(first_container(deployments[name]), objects) for name in TRAINER_ROLES
    )
    for setting in ("lease_seconds", "heartbeat_seconds", "watch_poll_ms", "database_url"):
        assert getattr(api_settings, setting) == getattr(worker_settings, setting), setting
    # Every service shares the one control-plane database (jobs; gallery entries; API keys; recorded generations).
    for deployment, _spec in pod_specs(objects):
        name, container = deployment["metadata"]["name"], first_container(deployment)
        assert container_settings(container, objects).resolved_database_url == secret_value(objects, *DATABASE_SECRET)
        assert DATABASE_SECRET[0] in {s for s, _ in secret_references(deployment["spec"]["template"]["spec"])}, name


@pytest.mark.parametrize("build", BUILDS)
def test_workers_drain_their_job_before_they_are_killed(rendered, build):
    objects = rendered(build)
    deployments = by_kind(objects, "Deployment")
    worker = deployments["likeness-trainer-worker"]
    spec = worker["spec"]["template"]["spec"]
    settings = container_settings(first_container(worker), objects)
    # A step, a checkpoint written to storage and the job handed back take minutes, not the 30 s default.
    assert settings.grace_seconds >= 60 and spec["terminationGracePeriodSeconds"] >= settings.grace_seconds + 15
    api = container_settings(first_container(deployments["likeness-trainer-api"]), objects)
    assert api.grace_seconds < settings.grace_seconds, "the API only finishes RPCs"


def test_service_of_the_old_trainer_now_selects_the_api(rendered):
    objects = rendered("base")
    service = by_kind(objects, "Service")["likeness-trainer"]
    labels = by_kind(objects, "Deployment")["likeness-trainer-api"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 50051, "metrics": 9090}
    workers = by_kind(objects, "Service")["likeness-trainer-worker"]
    assert workers["spec"]["clusterIP"] == "None", "no client traffic goes to workers"
    assert [p["name"] for p in workers["spec"]["ports"]] == ["metrics"]


# ------------------------------------------------------------------------------------------------ network policy


def ingress_ports(objects: list[dict[str, Any]], pod_labels: dict[str, str]) -> set[int]:
    """Ports on which some NetworkPolicy admits traffic to pods with these labels (None: no policy isolates them)."""
    ports: set[int] = set()
    isolated = False
    for policy in by_kind(objects, "NetworkPolicy").values():
        if selects(policy["spec"]["podSelector"], pod_labels) and "Ingress" in policy["spec"]["policyTypes"]:
            isolated = True
            for rule in policy["spec"].get("ingress", []):
                ports.update(port["port"] for port in rule.get("ports", []))
    assert isolated, f"no NetworkPolicy isolates pods labelled {pod_labels}"
    return ports


def template_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("build", BUILDS)
def test_network_policy_admits_what_each_role_serves(rendered, build):
    objects = rendered(build)
    deployments = by_kind(objects, "Deployment")
    assert ingress_ports(objects, template_labels(deployments["likeness-trainer-api"])) == {50051, 9090}
    assert ingress_ports(objects, template_labels(deployments["likeness-trainer-worker"])) == {9090}, "metrics only"
    for name in ("likeness-inference", "likeness-gallery"):
        assert ingress_ports(objects, template_labels(deployments[name])) == {50051, 9090}, name


def test_dev_database_admits_only_likeness_services(rendered):
    objects = rendered("overlays/dev")
    database = by_kind(objects, "StatefulSet")["likeness-postgres"]
    assert ingress_ports(objects, template_labels(database)) == {5432}
    rules = [
        rule
        for policy in by_kind(objects, "NetworkPolicy").values()
        if selects(policy["spec"]["podSelector"], template_labels(database))
        for rule in policy["spec"].get("ingress", [])
    ]
    peers = [peer["podSelector"] for rule in rules for peer in rule["from"] if "podSelector" in peer]
    for name, deployment in by_kind(objects, "Deployment").items():
        admitted = any(selects(selector, template_labels(deployment)) for selector in peers)
        assert admitted == (name in DATABASE_CLIENTS), (
            f"{name} {'cannot' if name in DATABASE_CLIENTS else 'can'} reach it"
        )


#: The Deployments that connect to the control-plane database: all of them.
DATABASE_CLIENTS = {"likeness-trainer-api", "likeness-trainer-worker", "likeness-gallery", "likeness-inference"}


# ---------------------------------------------------------------------------------------------------------- KEDA

#: Fields of a ScaledObject's spec and of a postgresql trigger (keda.sh/v1alpha1), to catch misspellings.
SCALED_OBJECT_FIELDS = {
    "scaleTargetRef",
    "pollingInterval",
    "initialCooldownPeriod",
    "cooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
POSTGRESQL_TRIGGER_METADATA = {
    "query",
    "targetQueryValue",
    "activationTargetQueryValue",
    "connectionFromEnv",
    "host",
    "port",
    "userName",
    "dbName",
    "sslmode",
    "passwordFromEnv",
}


def keda_query_and_auth(objects: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The queue-depth query of the worker ScaledObject and its TriggerAuthentication, checked structurally."""
    deployments = by_kind(objects, "Deployment")
    (scaled,) = by_kind(objects, "ScaledObject").values()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_FIELDS, sorted(set(spec) - SCALED_OBJECT_FIELDS)
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment" and target.get("apiVersion", "apps/v1") == "apps/v1"
    assert target["name"] in deployments, f"ScaledObject targets {target['name']}, which the build lacks"
    assert component_of(deployments[target["name"]]) == "trainer-worker"
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    metadata = trigger["metadata"]
    assert set(metadata) <= POSTGRESQL_TRIGGER_METADATA, sorted(set(metadata) - POSTGRESQL_TRIGGER_METADATA)
    assert all(isinstance(value, str) for value in metadata.values()), "KEDA trigger metadata values are strings"
    assert float(metadata["targetQueryValue"]) == 1, "one worker per job that needs one"
    assert "training_jobs" in metadata["query"]
    assert "connectionFromEnv" not in metadata and "passwordFromEnv" not in metadata, "credentials via the auth"
    auth_ref = trigger["authenticationRef"]
    assert auth_ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
    auth = by_kind(objects, "TriggerAuthentication")[auth_ref["name"]]
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    (secret_ref,) = auth["spec"]["secretTargetRef"]
    # The scaler reads the URL the workers read, from the same Secret.
    assert secret_ref["parameter"] == "connection"
    assert (secret_ref["name"], secret_ref["key"]) == DATABASE_SECRET
    return metadata["query"], auth


def test_keda_scales_workers_from_zero_on_queue_depth(rendered):
    objects = rendered("overlays/production")
    query, _auth = keda_query_and_auth(objects)
    # Every state the query names is a real job state; it counts exactly the ones that need a worker.
    states = set(re.findall(r"'([A-Z_]+)'", query))
    assert states == {"QUEUED", "RUNNING"}
    for build in ("base", "overlays/dev"):
        assert not by_kind(rendered(build), "ScaledObject"), f"{build} does not require KEDA"


def test_keda_query_counts_jobs_on_the_real_schema():
    """The trigger's query, run against the control plane's own schema (on SQLite: the same SQL)."""
    sa = pytest.importorskip("sqlalchemy")
    schema = pytest.importorskip("likeness.controlplane.schema")
    states = pytest.importorskip("likeness.trainer.states")
    scaled = yaml.safe_load_all((COMPONENTS / "keda-trainer-workers" / "scaledobject.yaml").read_text())
    query = next(doc for doc in scaled if doc["kind"] == "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"]
    assert set(re.findall(r"'([A-Z_]+)'", query)) <= {state.value for state in states.JobState}
    engine = sa.create_engine("sqlite://")
    schema.metadata.create_all(engine)
    table = schema.training_jobs
    required = {
        column.name: {"config": {}, "create_time": 0.0}.get(column.name, "x")
        for column in table.columns
        if not column.nullable and column.server_default is None
    }
    with engine.begin() as connection:
        for number, state in enumerate(states.JobState):
            for copy in range(number + 1):  # a different count per state
                connection.execute(
                    table.insert().values({**required, "job_id": f"{state.value}-{copy}", "state": state})
                )
        counted = connection.execute(sa.text(query)).scalar_one()
    expected = {state: number + 1 for number, state in enumerate(states.JobState)}
    assert counted == expected[states.JobState.QUEUED] + expected[states.JobState.RUNNING]


# -------------------------------------------------------------------------------------------- dev PostgreSQL


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    values = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    values.update(secret.get("stringData", {}))
    return values


def test_dev_overlay_runs_a_hardened_postgres_15(rendered):
    objects = rendered("overlays/dev")
    database = by_kind(objects, "StatefulSet")["likeness-postgres"]
    spec = database["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    repository, _, tag = container["image"].rpartition(":")
    assert repository.split("/")[-1] == "postgres" and tag.split(".")[0] == "15", container["image"]
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] == 999, "the image's postgres user"
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and not security["capabilities"].get("add")
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and container["resources"]["limits"]["memory"]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    environment = {entry["name"]: entry.get("value") for entry in container["env"]}
    writable = writable_mounts(container)
    assert is_under(environment["PGDATA"], writable) and {"/var/run/postgresql", "/tmp"} <= set(writable)
    (claim,) = database["spec"]["volumeClaimTemplates"]
    data_mount = next(m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert is_under(environment["PGDATA"], [data_mount["mountPath"]]), "the data lives on the volume"
    service = by_kind(objects, "Service")["likeness-postgres"]
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(5432, "postgres")]
    # The URL the trainer gets points at this Service with the server's own credentials.
    secrets = by_kind(objects, "Secret")
    server = secret_values(secrets["likeness-postgres"])
    url = secret_values(secrets[DATABASE_SECRET[0]])[DATABASE_SECRET[1]]
    expected = f"postgresql://{server['POSTGRES_USER']}:{server['POSTGRES_PASSWORD']}@likeness-postgres:5432/"
    assert url.startswith(expected + server["POSTGRES_DB"]), url
    # A plain postgresql:// URL: KEDA's scaler (pgx) reads the same key and knows no +driver suffix; the trainer
    # picks its driver itself.
    assert PLAIN_POSTGRES_URL.match(url), url
    assert load_settings(None, environ={"LIKENESS_DATABASE_URL": url}).database_url == url
    parse = pytest.importorskip("likeness.controlplane.database").parse_database_url
    assert parse(url).drivername == "postgresql+psycopg"


def test_production_expects_the_database_secret(rendered):
    objects = rendered("overlays/production")
    assert DATABASE_SECRET[0] not in by_kind(objects, "Secret"), "production's Secret is created by the operator"
    assert not by_kind(objects, "StatefulSet"), "production uses a managed database"


#: A URL with a password in it (scheme://user:password@host), or a variable naming a password.
PASSWORD_IN_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^@\s/]+@", re.IGNORECASE)
PASSWORD_NAME = re.compile(r"PASSWORD|PASSWD|^PGPASS", re.IGNORECASE)


def strings_in(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, string) for every string in a rendered object, keys included."""
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            found.append((f"{path}.{key}", str(key)))
            found.extend(strings_in(item, f"{path}.{key}"))
        return found
    if isinstance(value, list):
        return [pair for index, item in enumerate(value) for pair in strings_in(item, f"{path}[{index}]")]
    return [(path, value)] if isinstance(value, str) else []


@pytest.mark.parametrize("build", BUILDS)
def test_no_manifest_ships_a_database_password(rendered, build):
    for obj in rendered(build):
        name = obj["metadata"]["name"]
        if (build, name) in DEV_DATABASE_SECRETS and obj["kind"] == "Secret":
            continue
        content = strings_in(obj)
        if obj["kind"] == "Secret":
            content += [(f".data.{key}", value) for key, value in secret_values(obj).items()]
        for path, text in content:
            assert not PASSWORD_IN_URL.search(text), f"deploy/{build}: {obj['kind']}/{name}{path} holds a password"
            if obj["kind"] in {"Secret", "ConfigMap"} and path.count(".") == 2:
                assert not PASSWORD_NAME.search(path.rsplit(".", 1)[1]), f"{obj['kind']}/{name}{path}"
        for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for entry in container.get("env", []):
                if PASSWORD_NAME.search(entry["name"]) or entry["name"] == "LIKENESS_DATABASE_URL":
                    assert "value" not in entry, f"{name}/{container['name']}: {entry['name']} is a literal"


#: Components no overlay includes, each rendered and checked by its own test instead: gateway-api needs the
#: Gateway API CRDs and a controller (test_deploy_gateway.py builds it on the dev overlay).
OPTIONAL_COMPONENTS = {"gateway-api"}


def test_every_component_is_built_by_an_overlay():
    """The checks above run on rendered builds, so each component must be part of one (or of its own test)."""
    used = set()
    for overlay in ("dev", "production"):
        kustomization = yaml.safe_load((DEPLOY / "overlays" / overlay / "kustomization.yaml").read_text())
        used.update(Path(component).name for component in kustomization.get("components", []))
    assert not used & OPTIONAL_COMPONENTS
    assert used | OPTIONAL_COMPONENTS == {
        path.name for path in COMPONENTS.iterdir() if (path / "kustomization.yaml").exists()
    }
