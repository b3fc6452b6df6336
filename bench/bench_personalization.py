"""Personalization figures: DreamBooth's Table 1 on the toy world, through the trainer and inference services.

Runs the full evaluation (`likeness eval --full`: every subject, LoRA and full fine-tuning, with and without
prior preservation) and reports the headline figures: subject fidelity of LoRA with prior preservation against
its real-vs-real ceiling, prompt fidelity, language drift with and without prior preservation, the gap between
identifier and class prompts, and the trainer's personalization score before and after training.
`LIKENESS_BENCH_QUICK=1` runs the short CI evaluation instead (one subject, LoRA only).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from likeness.world.runner import EvalPlan, quick_plan, run_plan, write_report  # noqa: E402

OUT = ROOT / "var" / "eval"


def _figure(name: str, value: float, unit: str, goal: str = "", note: str = "") -> dict:
    return {"name": name, "value": round(float(value), 4), "unit": unit, "goal": goal, "note": note}


def run() -> list[dict]:
    quick = os.environ.get("LIKENESS_BENCH_QUICK") == "1"
    plan = quick_plan() if quick else EvalPlan.full()
    with tempfile.TemporaryDirectory(prefix="likeness-bench-eval-") as work_dir:
        report = run_plan(plan, work_dir=Path(work_dir), progress=lambda line: print(line, file=sys.stderr))
    write_report(report, OUT)
    table = report.by_variant()
    lora_prior, lora = table["lora+prior"], table["lora"]
    with_prior = [row["drift"] for name, row in table.items() if name.endswith("+prior")]
    without_prior = [row["drift"] for name, row in table.items() if not name.endswith("+prior")]
    scope = f"{len(plan.subjects)} subjects, {', '.join(table)}"
    return [
        _figure(
            "personalization.subject_fidelity",
            lora_prior["subject_fidelity"],
            "cosine",
            note=f"LoRA + prior, judge embedding vs the subject's photos; {scope}",
        ),
        _figure(
            "personalization.subject_fidelity_ceiling",
            lora_prior["subject_fidelity_ceiling"],
            "cosine",
            note="real photos vs further real photos of the same subject",
        ),
        _figure(
            "personalization.prompt_fidelity",
            lora_prior["prompt_fidelity"],
            "fraction",
            goal=">= 0.5",
            note="LoRA + prior: the judge sees the requested context or colour",
        ),
        _figure(
            "personalization.drift_with_prior",
            float(np.mean(with_prior)),
            "cosine",
            note="below drift_without_prior; PRES shift: similarity of 'a photo of <class>' pictures to the subject, tuned minus base; "
            "mean over methods",
        ),
        _figure(
            "personalization.drift_without_prior",
            float(np.mean(without_prior)),
            "cosine",
            note="as drift_with_prior, trained without prior preservation",
        ),
        _figure(
            "personalization.identifier_vs_class_gap",
            lora_prior["identifier_vs_class_gap"],
            "cosine",
            goal="> 0",
            note="subject fidelity of 'a photo of ohwx <class>' minus 'a photo of <class>' (LoRA + prior)",
        ),
        _figure(
            "trainer.personalization_score_before",
            lora["personalization_before"],
            "cosine",
            note="base model, identifier prompt: best judge cosine with a VAE round trip of a training photo",
        ),
        _figure(
            "trainer.personalization_score_after",
            lora_prior["personalization_after"],
            "cosine",
            note="after LoRA + prior training, same seeds; should exceed the before figure",
        ),
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure)
