"""The short DreamBooth evaluation, through the real trainer and inference gRPC services.

One subject trained twice with LoRA (with and without prior preservation), then generated: the directions
DreamBooth reports must hold on the toy base model.
"""

from __future__ import annotations

import pytest

from likeness.world.runner import quick_plan, run_plan, write_report

pytestmark = pytest.mark.slow


def test_short_eval_shows_the_dreambooth_effects(tmp_path) -> None:
    plan = quick_plan()
    report = run_plan(plan, work_dir=tmp_path / "work")
    table = report.by_variant()
    with_prior, without_prior = table["lora+prior"], table["lora"]

    # With prior preservation the identifier prompt renders the subject and the class prompt does not.
    assert with_prior["identifier_vs_class_gap"] > 0
    assert with_prior["class_identified_as_subject"] < without_prior["class_identified_as_subject"]
    # Prior preservation keeps the class prompt from drifting towards the subject (language drift).
    assert with_prior["drift"] < without_prior["drift"]
    # ... and its same-seed pictures closer to the base model's.
    assert with_prior["same_seed_change"] < without_prior["same_seed_change"]
    for row in (with_prior, without_prior):
        # The trainer's personalization score: training moved identifier pictures towards the photos.
        assert row["personalization_after"] > row["personalization_before"]

    written = write_report(report, tmp_path / "report")
    assert [path.name for path in written] == ["report.json", f"{plan.subjects[0].name}.png"]


def test_eval_command_names_the_valid_subjects_and_variants(capsys) -> None:
    from likeness.cli.main import main

    assert main(["eval", "--subjects", "purple-unicorn"]) == 2
    assert "checkered-toy" in capsys.readouterr().err
    assert main(["eval", "--variants", "lora+magic"]) == 2
    assert "full+prior" in capsys.readouterr().err
