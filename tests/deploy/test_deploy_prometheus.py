"""Monitoring: the scrape config and alerting rules pass promtool, the rules' unit tests pass, the operator's
PrometheusRule is alerts.yml, every metric the rules and the dashboard use exists in the code, and a real Prometheus
scrapes a real `likeness serve gallery` through the very relabelling prometheus.yml applies to Kubernetes pods."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from deploy_helpers import PROMETHEUS_DIR, REPO, by_kind, free_port, kustomize, run_tool, tool
from grpc_health.v1 import health_pb2, health_pb2_grpc

ALERTS = PROMETHEUS_DIR / "alerts.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "components" / "prometheus-operator" / "likeness-dashboard.json"
#: Modules defining the Prometheus metrics the services export (default registry): likeness/<area>/metrics.py.
METRICS_MODULES = tuple(
    f"likeness.{path.parent.name}.metrics" for path in sorted((REPO / "services" / "likeness").glob("*/metrics.py"))
)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    """Every PromQL query of the Grafana dashboard, Grafana's $__rate_interval replaced by a fixed window."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"].replace("$__rate_interval", "1m") for panel in panels for target in panel.get("targets", [])]


def metric_names_in(expr: str) -> list[str]:
    return re.findall(r"\b(likeness_[a-z0-9_]+|up)\b(?=\s*[{\[)]|\s*$)", expr)


def sanitize(name: str) -> str:
    """Kubernetes service discovery's label-name mangling: anything not [a-zA-Z0-9_] becomes '_'."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_discovery_targets(
    deployment: dict[str, Any], addresses: dict[str, str], namespace: str
) -> list[dict[str, Any]]:
    """What Prometheus' Kubernetes pod discovery yields for one pod of a Deployment: one target per container
    port, labelled with the pod's labels and annotations. `addresses` maps port names to where they listen."""
    template = deployment["spec"]["template"]
    meta = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": f"{deployment['metadata']['name']}-0",
        "__meta_kubernetes_pod_node_name": "gpu-node-0",
    }
    meta.update({f"__meta_kubernetes_pod_label_{sanitize(k)}": v for k, v in template["metadata"]["labels"].items()})
    meta.update(
        {f"__meta_kubernetes_pod_annotation_{sanitize(k)}": v for k, v in template["metadata"]["annotations"].items()}
    )
    targets = []
    for container in template["spec"]["containers"]:
        for port in container["ports"]:
            labels = {
                **meta,
                "__meta_kubernetes_pod_container_name": container["name"],
                "__meta_kubernetes_pod_container_port_name": port["name"],
            }
            targets.append({"targets": [addresses[port["name"]]], "labels": labels})
    return targets


def with_static_discovery(config: dict[str, Any], targets: list[dict[str, Any]]) -> dict[str, Any]:
    """prometheus.yml with its Kubernetes discovery replaced by the given targets, relabelling unchanged."""
    config = copy.deepcopy(config)
    for job in config["scrape_configs"]:
        job.pop("kubernetes_sd_configs")
        job["static_configs"] = targets
    return config


def test_promtool_checks_the_scrape_config(tmp_path):
    result = run_tool([tool("promtool"), "check", "config", str(SCRAPE_CONFIG)])
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian's Prometheus is built without Kubernetes discovery: check everything else of the file, with the
        # discovery swapped for an equivalent static target list (the relabelling is exercised for real below).
        config = with_static_discovery(yaml.safe_load(SCRAPE_CONFIG.read_text()), [{"targets": ["10.0.0.1:9090"]}])
        config["rule_files"] = [str(ALERTS)]
        copy_path = tmp_path / "prometheus.yml"
        copy_path.write_text(yaml.safe_dump(config))
        result = run_tool([tool("promtool"), "check", "config", str(copy_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_checks_the_rules():
    result = run_tool([tool("promtool"), "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_rule_unit_tests_pass():
    result = run_tool([tool("promtool"), "test", "rules", str(PROMETHEUS_DIR / "tests" / "alerts_test.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_is_generated_from_alerts_yml():
    sys.path.insert(0, str(PROMETHEUS_DIR))
    try:
        sync_rules = importlib.import_module("sync_rules")
    finally:
        sys.path.remove(str(PROMETHEUS_DIR))
    expected = sync_rules.render_prometheus_rule(ALERTS.read_text())
    assert sync_rules.PROMETHEUS_RULE_PATH.read_text() == expected, (
        "deploy/components/prometheus-operator/prometheusrule.yaml is out of date: "
        "run python deploy/prometheus/sync_rules.py"
    )


def test_every_alert_is_documented_and_actionable():
    operations = (REPO / "docs" / "operations.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in operations.splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == name.lower() and anchor in headings, f"{name}: no runbook section in docs/operations.md"


def exported_metric_names() -> set[str]:
    """Names of every series the services can export, from the real metric definitions."""
    from prometheus_client import REGISTRY

    for module in METRICS_MODULES:
        importlib.import_module(module)
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
    }
    names = set()
    for metric in REGISTRY.collect():
        names.add(metric.name)
        names.update(metric.name + suffix for suffix in suffixes.get(metric.type, ()))
    return names


def test_rules_use_only_metrics_the_services_export():
    exported = exported_metric_names() | {"up"}
    for rule in alert_rules():
        for name in metric_names_in(rule["expr"]):
            assert name in exported, f"{rule['alert']} uses {name}, which no service exports"


def test_dashboard_uses_only_metrics_the_services_export():
    exported = exported_metric_names() | {"up"}
    queries = dashboard_queries()
    assert len(queries) >= 20
    used = {name for expr in queries for name in metric_names_in(expr)}
    assert used <= exported, f"the dashboard queries {sorted(used - exported)}, which no service exports"


def test_metrics_documented_in_operations_guide():
    operations = (REPO / "docs" / "operations.md").read_text()
    from prometheus_client import REGISTRY

    for module in METRICS_MODULES:
        importlib.import_module(module)
    families = {m.name for m in REGISTRY.collect() if m.name.startswith("likeness_")}
    missing = sorted(name for name in families if f"`{name}" not in operations)
    assert not missing, f"docs/operations.md does not describe {missing}"


# ------------------------------------------------------------------------------------------------ real scrape


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def query(base: str, promql: str) -> list[dict[str, Any]]:
    answer = get_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def wait_for(condition, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(0.25)
    details = f"\n{log.read_text(errors='replace')[-3000:]}" if log else ""
    raise AssertionError(f"timed out waiting for {what} (last: {last!r}){details}")


@pytest.fixture
def gallery_server(tmp_path) -> Iterator[dict[str, Any]]:
    """A real `likeness serve gallery` process on loopback ports."""
    ports = {"grpc": free_port(), "metrics": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        LIKENESS_HOST="127.0.0.1",
        LIKENESS_PORT=str(ports["grpc"]),
        LIKENESS_METRICS_PORT=str(ports["metrics"]),
        LIKENESS_STORAGE_URL=str(tmp_path / "storage"),
        LIKENESS_CACHE_DIR=str(tmp_path / "cache"),
        LIKENESS_GRACE_SECONDS="2",
        LIKENESS_LOG_FORMAT="text",
    )
    log = tmp_path / "gallery.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "likeness.cli.main", "serve", "gallery"], env=env, stdout=out, stderr=out
        )
    try:
        address = f"127.0.0.1:{ports['grpc']}"
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def serving() -> bool:
                if process.poll() is not None:
                    raise AssertionError(f"likeness serve gallery exited:\n{log.read_text()[-3000:]}")
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    return False
                return status == health_pb2.HealthCheckResponse.SERVING

            wait_for(serving, 60, "the gallery to report SERVING", log)
        yield {"address": address, "ports": ports, "process": process, "log": log}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def prometheus(tmp_path, gallery_server) -> Iterator[str]:
    """A real Prometheus loading prometheus.yml's relabelling and alerts.yml, discovering the gallery as a pod of
    the rendered likeness-gallery Deployment (its labels, annotations and ports)."""
    binary = tool("prometheus")
    gallery = by_kind(kustomize("base"), "Deployment")["likeness-gallery"]
    addresses = {name: f"127.0.0.1:{port}" for name, port in gallery_server["ports"].items()}
    config = with_static_discovery(
        yaml.safe_load(SCRAPE_CONFIG.read_text()), pod_discovery_targets(gallery, addresses, "likeness")
    )
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{log.read_text()[-3000:]}")
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                return response.status == 200

        wait_for(ready, 30, "Prometheus to be ready", log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_real_prometheus_scrapes_a_real_service(gallery_server, prometheus):
    from likeness_client.v1 import gallery_service_pb2 as pb
    from likeness_client.v1 import gallery_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(gallery_server["address"]) as channel:
        stub = pb_grpc.GalleryServiceStub(channel)
        assert stub.ListTemplates(pb.ListTemplatesRequest(), timeout=10).templates
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as info:
                stub.GetPrompt(pb.GetPromptRequest(prompt_id="no-such-prompt"), timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND

    # The relabelling names the job after the component and keeps only the metrics port.
    up = wait_for(lambda: query(prometheus, 'up{job="likeness-gallery"} == 1'), 20, "up == 1")
    assert up[0]["metric"]["namespace"] == "likeness" and up[0]["metric"]["container"] == "gallery"
    targets = get_json(f"{prometheus}/api/v1/targets")["data"]
    assert len(targets["activeTargets"]) == 1, "only the metrics port is a target"
    assert len(targets["droppedTargets"]) == 1, "the gRPC port is dropped by the relabelling"

    not_found = wait_for(
        lambda: query(
            prometheus,
            'likeness_grpc_server_handled_total{job="likeness-gallery",grpc_method="GetPrompt",grpc_code="NOT_FOUND"}',
        ),
        20,
        "the GetPrompt failures to be scraped",
    )
    assert float(not_found[0]["value"][1]) == 3
    assert not_found[0]["metric"]["grpc_service"] == "likeness.gallery.v1.GalleryService"
    ok = query(prometheus, 'likeness_grpc_server_handled_total{grpc_method="ListTemplates",grpc_code="OK"}')
    assert float(ok[0]["value"][1]) == 1
    serving = query(prometheus, 'likeness_service_serving{job="likeness-gallery",component="gallery"}')
    assert float(serving[0]["value"][1]) == 1

    # The rules evaluate without error on real series, and the service-down rule sees the missing services.
    def evaluated() -> list[dict[str, Any]]:
        groups = get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if all(rule.get("lastEvaluation", "").startswith("20") for rule in rules) else []

    rules = wait_for(evaluated, 20, "every rule to be evaluated")
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    assert all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]

    def services_down() -> set[str]:
        alerts = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
        return {a["labels"]["job"] for a in alerts if a["labels"]["alertname"] == "LikenessServiceDown"}

    # (An evaluation before the first scrape may briefly count the gallery as absent too.)
    wait_for(lambda: services_down() == {"likeness-trainer", "likeness-inference"}, 20, "LikenessServiceDown")

    # Every dashboard query parses and evaluates on real series.
    for expr in dashboard_queries():
        query(prometheus, expr)

    # SIGTERM drains and exits cleanly, well within the pod's termination grace period.
    process = gallery_server["process"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0, gallery_server["log"].read_text()[-3000:]
