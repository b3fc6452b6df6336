"""`likeness eval`: DreamBooth's Table 1 on the toy world, through the trainer and inference services.

By default a short evaluation (one subject, LoRA with and without prior preservation); `--full` runs every
subject with LoRA and full fine-tuning, each with and without prior preservation. Without `--address` both
services are started in this process on a free port, with private storage; with it, an existing server is
used (its catalog must offer the toy base model).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from likeness.errors import InvalidArgument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure subject fidelity, prompt fidelity and language drift on the toy world",
        description="Train evaluation subjects through the trainer service, generate through the inference "
        "service, and report DreamBooth's measures (see docs/personalization.md).",
    )
    parser.add_argument("--full", action="store_true", help="all subjects, LoRA and full, with and without prior")
    parser.add_argument("--subjects", default="", help="comma-separated subject names (default: per mode)")
    parser.add_argument(
        "--variants", default="", help="comma-separated variants among lora+prior, lora, full+prior, full"
    )
    parser.add_argument("--address", default="", help="use the server at this address instead of starting one")
    parser.add_argument("--out", type=Path, default=None, help="folder for report.json and sample grids")
    parser.add_argument("--lora-steps", type=int, default=None, help="LoRA training steps")
    parser.add_argument("--full-steps", type=int, default=None, help="full fine-tuning steps")
    parser.add_argument("--seeds", type=int, default=None, help="pictures per prompt")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from likeness.world.evaluation import VARIANTS
    from likeness.world.runner import EvalPlan, quick_plan, run_plan
    from likeness.world.subjects import SUBJECTS_BY_NAME

    plan = EvalPlan.full() if args.full else quick_plan()
    if args.subjects:
        unknown = [name for name in args.subjects.split(",") if name not in SUBJECTS_BY_NAME]
        if unknown:
            raise InvalidArgument(
                f"unknown subjects {unknown}; subjects are {', '.join(SUBJECTS_BY_NAME)}", field="--subjects"
            )
        plan = plan.with_subjects([SUBJECTS_BY_NAME[name] for name in args.subjects.split(",")])
    if args.variants:
        known = {variant.name: variant for variant in VARIANTS}
        unknown = [name for name in args.variants.split(",") if name not in known]
        if unknown:
            raise InvalidArgument(f"unknown variants {unknown}; variants are {', '.join(known)}", field="--variants")
        plan = plan.with_variants([known[name] for name in args.variants.split(",")])
    plan = plan.with_overrides(lora_steps=args.lora_steps, full_steps=args.full_steps, seeds_per_prompt=args.seeds)

    with tempfile.TemporaryDirectory(prefix="likeness-eval-") as work_dir:
        report = run_plan(plan, address=args.address or None, work_dir=Path(work_dir), progress=print)
    if args.out is not None:
        from likeness.world.runner import write_report

        written = write_report(report, args.out)
        print(f"wrote {', '.join(str(path) for path in written)}")
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    return 0


def print_report(report) -> None:
    from likeness.cli.common import print_table

    rows = []
    for variant, row in report.by_variant().items():
        rows.append(
            [
                variant,
                f"{row['subject_fidelity']:.3f}",
                f"{row['subject_fidelity_ceiling']:.3f}",
                f"{row['identification']:.0%}",
                f"{row['prompt_fidelity']:.0%}",
                f"{row['class_fidelity']:.0%}",
                f"{row['identifier_vs_class_gap']:+.3f}",
                f"{row['class_identified_as_subject']:.0%}",
                f"{row['drift']:+.3f}",
                f"{row['same_seed_change']:.3f}",
                f"{row['train_seconds']:.0f}",
            ]
        )
    print_table(
        rows,
        [
            "variant",
            "subject_fid",
            "ceiling",
            "identified",
            "prompt_fid",
            "class_ok",
            "id-class_gap",
            "class->subject",
            "drift",
            "seed_change",
            "train_s",
        ],
    )
