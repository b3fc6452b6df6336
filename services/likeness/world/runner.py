"""Running an evaluation plan through the services, and writing its report and sample grids."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from likeness.world.evaluation import VARIANTS, EvalReport, EvalSettings, SubjectResult, Variant, evaluate
from likeness.world.grids import save_grid
from likeness.world.subjects import DEMO_SUBJECT, SUBJECTS, Subject

REPORT_NAME = "report.json"
# The short evaluation asserts directions only: the bare-subject prompt and the class prompt suffice.
QUICK_PROMPTS = (("a photo of {subject}", None, None), ("a {subject} in the snow", "snow", None))


@dataclass(frozen=True)
class EvalPlan:
    subjects: tuple[Subject, ...]
    variants: tuple[Variant, ...]
    settings: EvalSettings

    @classmethod
    def full(cls) -> EvalPlan:
        return cls(SUBJECTS, VARIANTS, EvalSettings())

    def with_subjects(self, subjects: Sequence[Subject]) -> EvalPlan:
        return replace(self, subjects=tuple(subjects))

    def with_variants(self, variants: Sequence[Variant]) -> EvalPlan:
        return replace(self, variants=tuple(variants))

    def with_overrides(self, **values: Any) -> EvalPlan:
        """Replaces settings whose value is not None."""
        changes = {key: value for key, value in values.items() if value is not None}
        return replace(self, settings=replace(self.settings, **changes)) if changes else self


def quick_plan() -> EvalPlan:
    """One subject, LoRA with and without prior preservation, short training: the CI evaluation."""
    settings = EvalSettings(
        seeds_per_prompt=4, drift_seeds=6, inference_steps=20, num_class_images=16, prompts=QUICK_PROMPTS
    )
    return EvalPlan((DEMO_SUBJECT,), (Variant("lora", True), Variant("lora", False)), settings)


def run_plan(
    plan: EvalPlan,
    *,
    address: str | None = None,
    work_dir: Path,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Evaluates `plan` through the server at `address`, or through services started here (state in `work_dir`)."""
    from likeness.world.service_backend import ServiceBackend, eval_server_settings, local_services
    from likeness_client import LikenessClient

    def on_result(result: SubjectResult) -> None:
        if progress is not None:
            progress(
                f"{result.subject} {result.variant}: subject fidelity {result.subject_fidelity:.3f} "
                f"(ceiling {result.subject_fidelity_ceiling:.3f}), prompt fidelity {result.prompt_fidelity:.0%}, "
                f"drift {result.drift:+.3f}, trained in {result.train_seconds:.0f}s"
            )

    def run_with(server_address: str) -> EvalReport:
        with LikenessClient(server_address, timeout=120.0) as client:
            client.wait_until_serving(timeout=120.0)
            return evaluate(ServiceBackend(client), plan.subjects, plan.variants, plan.settings, on_result=on_result)

    if address:
        return run_with(address)
    with local_services(eval_server_settings(work_dir)) as local_address:
        return run_with(local_address)


def write_report(report: EvalReport, out: str | Path) -> list[Path]:
    """`report.json` plus one grid per subject: its photos, then each variant's pictures per prompt."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / REPORT_NAME]
    written[0].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    from likeness.world.subjects import SUBJECTS_BY_NAME

    for subject_name in dict.fromkeys(result.subject for result in report.results):
        subject = SUBJECTS_BY_NAME[subject_name]
        rows: list[tuple[str, list]] = [("training photos", subject.photos())]
        identifier_key = f"a photo of {report.settings.identifier} {subject.class_noun}"
        for key in (identifier_key, f"a photo of {subject.class_noun}"):
            if key in report.base_samples:
                rows.append((f"base: {key}", report.base_samples[key]))
        for result in report.results:
            if result.subject != subject_name:
                continue
            for prompt, pictures in result.samples.items():
                rows.append((f"{result.variant}: {prompt}", pictures))
        written.append(save_grid(rows, out / f"{subject_name}.png"))
    return written
