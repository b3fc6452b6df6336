"""Runs every benchmark and writes bench/results.json (for machines) and docs/benchmarks.md (for people).

Each `bench/bench_<area>.py` exposes `run() -> list[dict]` with `name`, `value`, `unit`, `goal` and optionally
`note`; comparisons inside one module are measured side by side in the same run. `--only AREA` runs a subset and
merges its figures into the existing results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
REPORT = ROOT / "docs" / "benchmarks.md"
AREAS = (
    "dataset", "trainer", "inference", "personalization", "control_plane", "gallery", "security", "studio", "clients",
    "fullsize", "compiled",
)  # fmt: skip


def _load(area: str):
    path = ROOT / "bench" / f"bench_{area}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"bench_{area}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{platform.machine()}, {os.cpu_count()} cores, {device}, torch {torch.__version__}"


def _met(goal: str, value: float) -> str:
    goal = (goal or "").strip()
    for op in ("<=", ">=", "<", ">", "≤", "≥"):
        if goal.startswith(op):
            target = float(goal[len(op) :].strip().rstrip("x×%s "))
            return (
                {
                    "<=": value <= target,
                    "≤": value <= target,
                    ">=": value >= target,
                    "≥": value >= target,
                    "<": value < target,
                    ">": value > target,
                }[op]
                and "met"
            ) or "**missed**"
    return "—"


def write_report(figures: list[dict], machine: str) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/run.py`); the same figures are in `bench/results.json`.",
        "Ratios compare two variants measured side by side in one run (interleaved, medians).",
        "",
        f"Machine: {machine}.",
        "",
        "| figure | value | unit | goal | status | measured at | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        value = f["value"]
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        status = _met(f.get("goal", ""), float(value))
        lines.append(
            f"| `{f['name']}` | {shown} | {f['unit']} | {f.get('goal') or '—'} | {status} "
            f"| {f['measured_at']} | {f.get('note', '')} |"
        )
    notes = ROOT / "bench" / "NOTES.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    REPORT.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", choices=AREAS, help="run only these areas")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    previous = {f["name"]: f for f in json.loads(RESULTS.read_text())} if RESULTS.exists() else {}
    figures = dict(previous)
    for area in args.only or AREAS:
        module = _load(area)
        if module is None:
            print(f"bench: no bench/bench_{area}.py, skipped", file=sys.stderr)
            continue
        started = time.perf_counter()
        print(f"bench: {area} ...", file=sys.stderr, flush=True)
        measured_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for figure in module.run():
            figure.setdefault("goal", "")
            figure["measured_at"] = measured_at
            figures[figure["name"]] = figure
            print(
                f"  {figure['name']} = {figure['value']} {figure['unit']} (goal {figure['goal']})",
                file=sys.stderr,
            )
        print(f"bench: {area} took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    # Re-read before writing: another area may have finished meanwhile (benchmarks of areas can run separately).
    latest = {f["name"]: f for f in json.loads(RESULTS.read_text())} if RESULTS.exists() else {}
    fresh = {name: f for name, f in figures.items() if previous.get(name) is not f}
    figures = {**latest, **fresh}
    ordered = sorted(figures.values(), key=lambda f: f["name"])
    # The note travels with its figure, so a partial run (`--only`) keeps the notes of the areas it did not run.
    keys = ("name", "value", "unit", "goal", "measured_at", "note")
    RESULTS.write_text(json.dumps([{k: f[k] for k in keys if f.get(k) is not None} for f in ordered], indent=2) + "\n")
    write_report(ordered, _machine())
    print(f"bench: wrote {RESULTS.relative_to(ROOT)} and {REPORT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
