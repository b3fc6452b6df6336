"""The judge: a small CNN that looks at 32 px pictures of the synthetic world, in the role CLIP and DINO play in
the DreamBooth paper.

It has three classifier heads (object class, context, named colour) for prompt fidelity, and an instance
embedding for subject fidelity. The embedding is trained contrastively (SimCLR's NT-Xent): two pictures of the
same random object in different places and contexts should be close, pictures of different objects far apart.
Its training objects are drawn from a wider distribution than the base model's world (any colour, and the
subject-only surface patterns with random colours) but never the evaluation subjects themselves, just as DINO
never saw DreamBench's objects. Pictures are blurred and noised while it trains, so it also reads the softer
pictures a tiny diffusion model makes.

`python -m likeness.world.judge --out services/likeness/world/judge` trains it (about 5 minutes on one core);
the committed weights are loaded by `load_judge()`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from likeness.errors import FailedPrecondition
from likeness.world.scenes import (
    CLASSES,
    COLOUR_NAMES,
    CONTEXTS,
    SUBJECT_PATTERNS,
    WORLD_PATTERNS,
    ObjectLook,
    draw_scene,
    random_look,
    random_scene,
    scene_labels,
)

LOG = logging.getLogger("likeness.world.judge")
JUDGE_DIR = Path(__file__).resolve().parent / "judge"
WEIGHTS_NAME = "judge.safetensors"
RECORD_NAME = "judge.json"
EMBEDDING_DIM = 64
# Index stream of held-out pictures used to report accuracy (training draws from seed-derived streams).
VALIDATION_SEED_OFFSET = 7919


class Judge(nn.Module):
    """CNN trunk (32 -> 16 -> 8 -> 4 px) with class, context and colour heads and a unit-norm embedding."""

    def __init__(self) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(inputs, outputs, 3, padding=1),
                nn.GroupNorm(8, outputs),
                nn.SiLU(),
                nn.Conv2d(outputs, outputs, 3, padding=1),
                nn.GroupNorm(8, outputs),
                nn.SiLU(),
            )

        self.trunk = nn.Sequential(
            block(3, 32),
            nn.MaxPool2d(2),
            block(32, 64),
            nn.MaxPool2d(2),
            block(64, 96),
            nn.MaxPool2d(2),
            block(96, 128),
        )
        self.class_head = nn.Linear(128, len(CLASSES))
        self.context_head = nn.Linear(128, len(CONTEXTS))
        self.colour_head = nn.Linear(128, len(COLOUR_NAMES))
        self.projection = nn.Sequential(nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, EMBEDDING_DIM))

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """`pixels`: (N, 3, 32, 32) in [-1, 1]. Returns logits per head and the unit-norm `embedding`."""
        features = self.trunk(pixels).mean(dim=(2, 3))
        return {
            "class": self.class_head(features),
            "context": self.context_head(features),
            "colour": self.colour_head(features),
            "embedding": F.normalize(self.projection(features), dim=1),
        }


def to_pixels(images: list[Image.Image]) -> torch.Tensor:
    """PIL images -> (N, 3, 32, 32) float tensor in [-1, 1], resizing anything that is not 32 px."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if image.size != (32, 32):
            image = image.resize((32, 32), Image.Resampling.BOX)
        arrays.append(np.asarray(image, dtype=np.float32))
    return torch.from_numpy(np.stack(arrays) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


@dataclass
class JudgeConfig:
    seed: int = 0
    steps: int = 1000
    instances: int = 48
    lr: float = 2e-3
    temperature: float = 0.2
    # One thread: reproducible weights whatever the machine's core count (see likeness.world.pretrain).
    threads: int = 1
    log_every: int = 100


def _instance_look(rng: np.random.Generator) -> ObjectLook:
    """A random object from the judge's wider world: any colour half the time, any pattern."""
    look = random_look(rng, patterns=WORLD_PATTERNS + SUBJECT_PATTERNS)
    if rng.uniform() < 0.5:
        colour = tuple(int(value) for value in rng.integers(0, 256, size=3))
        return ObjectLook(look.cls, colour, "", look.pattern, look.accent, look.proportions)  # type: ignore[arg-type]
    return look


def _augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur, noise and a small brightness change: the judge must read soft, imperfect generated pictures."""
    count = pixels.shape[0]
    sigma = torch.rand(count, generator=generator) * 1.2
    kernel_x = torch.arange(-2, 3, dtype=torch.float32)
    kernels = torch.exp(-(kernel_x[None, :] ** 2) / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    blurred = torch.empty_like(pixels)
    for index in range(count):
        kernel = kernels[index]
        image = pixels[index : index + 1].transpose(0, 1)  # (3, 1, H, W): one channel at a time
        image = F.conv2d(F.pad(image, (2, 2, 0, 0), mode="replicate"), kernel.view(1, 1, 1, 5))
        image = F.conv2d(F.pad(image, (0, 0, 2, 2), mode="replicate"), kernel.view(1, 1, 5, 1))
        blurred[index] = image.transpose(0, 1)[0]
    noise = torch.randn(pixels.shape, generator=generator) * (torch.rand(count, 1, 1, 1, generator=generator) * 0.08)
    brightness = (torch.rand(count, 1, 1, 1, generator=generator) - 0.5) * 0.15
    return (blurred + noise + brightness).clamp(-1, 1)


def _training_batch(config: JudgeConfig, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`instances` random objects, each drawn twice (different place, context, size): 2 x instances pictures."""
    images: list[Image.Image] = []
    labels: dict[str, list[int]] = {"class": [], "context": [], "colour": []}
    for view in range(2):
        for instance in range(config.instances):
            look = _instance_look(np.random.default_rng([config.seed, step, instance, 1]))
            scene = random_scene(np.random.default_rng([config.seed, step, instance, 2, view]), look)
            images.append(draw_scene(scene))
            for key, value in scene_labels(scene).items():
                labels[key].append(value)
    return to_pixels(images), {key: torch.tensor(values) for key, values in labels.items()}


def _contrastive_loss(embedding: torch.Tensor, temperature: float) -> torch.Tensor:
    count = embedding.shape[0] // 2
    similarity = embedding @ embedding.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(count, 2 * count), torch.arange(0, count)])
    return F.cross_entropy(similarity, targets)


def train_judge(config: JudgeConfig) -> tuple[Judge, dict[str, object]]:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    judge = Judge()
    optimizer = torch.optim.AdamW(judge.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.steps)
    generator = torch.Generator().manual_seed(config.seed + 3)
    started = time.monotonic()
    smoothed: float | None = None
    for step in range(config.steps):
        pixels, labels = _training_batch(config, step)
        outputs = judge(_augment(pixels, generator))
        loss = (
            F.cross_entropy(outputs["class"], labels["class"])
            + F.cross_entropy(outputs["context"], labels["context"])
            + F.cross_entropy(outputs["colour"], labels["colour"], ignore_index=-1)
            + _contrastive_loss(outputs["embedding"], config.temperature)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        value = float(loss.detach())
        smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            elapsed = time.monotonic() - started
            LOG.info("judge step %d/%d loss %.3f elapsed %.0fs", step + 1, config.steps, smoothed, elapsed)
    judge.eval()
    record: dict[str, object] = {
        "config": asdict(config),
        "final_loss": smoothed,
        "seconds": round(time.monotonic() - started, 1),
        "held_out_accuracy": held_out_accuracy(judge, config.seed + VALIDATION_SEED_OFFSET),
    }
    return judge, record


@torch.no_grad()
def held_out_accuracy(judge: Judge, seed: int, count: int = 400) -> dict[str, float]:
    """Accuracy of each head on fresh pretraining-world pictures (named colours only for the colour head)."""
    from likeness.world.scenes import world_sample

    samples = [world_sample(seed, index) for index in range(count)]
    outputs = judge(to_pixels([sample.image for sample in samples]))
    result = {}
    for key in ("class", "context", "colour"):
        truth = torch.tensor([sample.labels[key] for sample in samples])
        result[key] = float((outputs[key].argmax(dim=1) == truth).float().mean())
    return result


def save_judge(judge: Judge, record: dict[str, object], directory: str | Path) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.contiguous() for key, value in judge.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME))
    (directory / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return directory


@lru_cache(maxsize=2)
def load_judge(directory: str | Path = JUDGE_DIR) -> Judge:
    """The committed judge in eval mode (cached per folder); FailedPrecondition when it was never trained."""
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FailedPrecondition(
            f"judge weights {path} are missing; train them with "
            "`python -m likeness.world.judge --out services/likeness/world/judge`"
        )
    judge = Judge()
    judge.load_state_dict(load_file(str(path)))
    return judge.eval().requires_grad_(False)


@dataclass
class Verdicts:
    """What the judge sees in a list of pictures: predicted labels and unit-norm embeddings (N x 64)."""

    classes: list[str]
    contexts: list[str]
    colours: list[str]
    embeddings: np.ndarray


@torch.no_grad()
def judge_images(images: list[Image.Image], judge: Judge | None = None) -> Verdicts:
    judge = judge or load_judge()
    outputs = judge(to_pixels(images))
    return Verdicts(
        classes=[CLASSES[index] for index in outputs["class"].argmax(dim=1).tolist()],
        contexts=[CONTEXTS[index] for index in outputs["context"].argmax(dim=1).tolist()],
        colours=[COLOUR_NAMES[index] for index in outputs["colour"].argmax(dim=1).tolist()],
        embeddings=outputs["embedding"].numpy(),
    )


def main(argv: list[str] | None = None) -> int:
    defaults = JudgeConfig()
    parser = argparse.ArgumentParser(prog="python -m likeness.world.judge", description="Train the world's judge.")
    parser.add_argument("--out", default=str(JUDGE_DIR), help="folder for judge.safetensors and judge.json")
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    config = JudgeConfig(**{name: getattr(args, name) for name in asdict(defaults)})
    judge, record = train_judge(config)
    record = {"command": "python -m likeness.world.judge " + shlex.join(argv), **record}
    save_judge(judge, record, args.out)
    LOG.info("held-out accuracy %s; wrote %s", record["held_out_accuracy"], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
