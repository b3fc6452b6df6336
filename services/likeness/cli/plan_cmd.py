"""`likeness plan`: the trainer's memory plan for a model, method and resolution on GPUs of 16 to 80 GiB."""

from __future__ import annotations

import argparse
from pathlib import Path

# likeness.models.standard.STANDARD_NAMES; repeated so building the parser does not import torch.
STANDARD_CHOICES = ("sd15", "sd2-base", "sd2-v", "sdxl-base")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="estimate a training job's device memory and the savers it needs on 16-80 GiB GPUs",
        description=(
            "Print the trainer's memory plan (docs/trainer.md, 'Memory plan') for a training job on CUDA devices of "
            "16, 24, 40 and 80 GiB: which memory savers the automatic plan turns on and the memory it then needs. "
            "Reads only configs: no weights are loaded."
        ),
    )
    parser.add_argument(
        "model",
        help=f"a standard architecture ({', '.join(STANDARD_CHOICES)}) or a diffusers folder",
    )
    parser.add_argument("--method", choices=("lora", "full"), default="lora", help="training method (default lora)")
    parser.add_argument("--resolution", type=int, default=0, help="training resolution (default the model's)")
    parser.add_argument("--batch", type=int, default=1, help="photos per step (default 1)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--prior", action="store_true", help="with prior preservation (class images)")
    parser.add_argument(
        "--precision", choices=("bf16", "fp16", "no"), default="bf16", help="mixed precision (default bf16)"
    )
    parser.add_argument(
        "--gpu-gib", type=int, action="append", help="device size(s) in GiB (default 16, 24, 40 and 80)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from likeness.errors import InvalidArgument
    from likeness.models.standard import CONFIGS_DIR, standard_resolution
    from likeness.trainer.config import LoraSettings, PriorSettings, TrainingConfig
    from likeness.trainer.training.memory import DEVICE_SIZES_GIB, GIB, ModelShape, plans_by_device_size

    folder = CONFIGS_DIR / args.model if args.model in STANDARD_CHOICES else Path(args.model).expanduser()
    if not (folder / "unet" / "config.json").is_file():
        raise InvalidArgument(f"{args.model} is neither a standard architecture nor a diffusers folder", field="model")
    resolution = args.resolution or (standard_resolution(args.model) if args.model in STANDARD_CHOICES else 512)
    config = TrainingConfig(
        base_model=str(folder),
        identifier="ohwx",
        class_noun="person",
        method=args.method,
        train_batch_size=args.batch,
        lora=LoraSettings(rank=args.rank),
        prior=PriorSettings(enabled=args.prior),
    )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}[args.precision]
    shape = ModelShape.of_folder(folder)
    sizes = tuple(args.gpu_gib or DEVICE_SIZES_GIB)
    print(
        f"{args.model}: {args.method} at {resolution} px, batch {args.batch}"
        f"{' with prior preservation' if args.prior else ''}, {args.precision}"
    )
    print("GPU\tfits\testimate GiB\tsavers")
    for size, plan in zip(
        sizes, plans_by_device_size(shape, config, dtype=dtype, resolution=resolution, sizes_gib=sizes), strict=True
    ):
        print(f"{size} GiB\t{'yes' if plan.fits else 'NO'}\t{plan.estimate.total / GIB:.1f}\t{plan.options.describe()}")
    return 0
