"""The pictures of docs/personalization.md: `python -m likeness.world.figures --out docs/images`.

World samples with their captions, the evaluation subjects' photos, and what the toy base model draws for
world prompts (with what the judge sees in each picture). The evaluation grids come from
`likeness eval --full --out DIR`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from likeness.world.grids import save_grid
from likeness.world.scenes import CLASSES, CONTEXT_PHRASES, world_sample
from likeness.world.subjects import SUBJECTS

LOG = logging.getLogger("likeness.world.figures")
SEEDS = range(6)
BASE_PROMPTS = (
    "a photo of a red toy on the beach",
    "a photo of a blue cup in the snow",
    "a photo of a green ball in the jungle",
    "a photo of a yellow box on a wooden floor",
    "a photo of a purple dog on a plain background",
    "a photo of toy",
    "a photo of ohwx toy",
)


def world_figure(out: Path, count: int = 10) -> Path:
    samples = [world_sample(0, index) for index in range(count)]
    return save_grid([(sample.caption, [sample.image]) for sample in samples], out / "world-samples.png", scale=2)


def subjects_figure(out: Path) -> Path:
    rows = [
        (f"{subject.name}: photos | held out", subject.photos() + subject.reference_photos(3)) for subject in SUBJECTS
    ]
    return save_grid(rows, out / "subjects.png", scale=3)


def base_model_figure(out: Path) -> tuple[Path, dict[str, float]]:
    """Pictures of world prompts by the committed toy model, and the judge's accuracy on a larger sample."""
    from likeness.world.in_process import generate, load_toy_pipeline
    from likeness.world.judge import judge_images

    pipeline = load_toy_pipeline()
    rows = [(prompt, generate(pipeline, prompt, SEEDS, 25, 4.0, "ddim")) for prompt in BASE_PROMPTS]
    path = save_grid(rows, out / "base-model.png", scale=3)
    hits: dict[str, list[bool]] = {"class": [], "context": []}
    for cls in CLASSES:
        for context, phrase in CONTEXT_PHRASES.items():
            verdicts = judge_images(generate(pipeline, f"a photo of a {cls} {phrase}", range(4), 25, 4.0, "ddim"))
            hits["class"] += [seen == cls for seen in verdicts.classes]
            hits["context"] += [seen == context for seen in verdicts.contexts]
    accuracy = {key: sum(values) / len(values) for key, values in hits.items()}
    return path, accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m likeness.world.figures", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    LOG.info("wrote %s", world_figure(args.out))
    LOG.info("wrote %s", subjects_figure(args.out))
    path, accuracy = base_model_figure(args.out)
    LOG.info("wrote %s; judge on 100 base-model pictures of 'a photo of a <class> <context>': %s", path, accuracy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
