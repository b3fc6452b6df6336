"""Writes the Prometheus Operator's PrometheusRule from alerts.yml, so the alerting rules have one source.

python deploy/prometheus/sync_rules.py          # rewrite the PrometheusRule
python deploy/prometheus/sync_rules.py --check  # exit 1 when it is out of date (the tests do the same)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ALERTS_PATH = HERE / "alerts.yml"
PROMETHEUS_RULE_PATH = HERE.parent / "components" / "prometheus-operator" / "prometheusrule.yaml"

HEADER = (
    "# Generated from deploy/prometheus/alerts.yml by deploy/prometheus/sync_rules.py: edit alerts.yml, then run\n"
    "# `python deploy/prometheus/sync_rules.py`.\n"
)


class _BlockStyleDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL expressions) as literal blocks, as a person would."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def prometheus_rule(alerts: dict[str, Any]) -> dict[str, Any]:
    """The PrometheusRule object carrying the rule groups of a Prometheus rule file."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "likeness", "labels": {"app.kubernetes.io/name": "likeness"}},
        "spec": {"groups": alerts["groups"]},
    }


def render_prometheus_rule(alerts_text: str) -> str:
    """The text of prometheusrule.yaml for the given alerts.yml text."""
    body = yaml.dump(
        prometheus_rule(yaml.safe_load(alerts_text)),
        Dumper=_BlockStyleDumper,
        sort_keys=False,
        width=120,
        allow_unicode=True,
    )
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether the PrometheusRule is current")
    args = parser.parse_args(argv)
    expected = render_prometheus_rule(ALERTS_PATH.read_text(encoding="utf-8"))
    current = PROMETHEUS_RULE_PATH.read_text(encoding="utf-8") if PROMETHEUS_RULE_PATH.exists() else ""
    if args.check:
        if current != expected:
            print(f"{PROMETHEUS_RULE_PATH} is out of date; run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    PROMETHEUS_RULE_PATH.write_text(expected, encoding="utf-8")
    print(f"wrote {PROMETHEUS_RULE_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
