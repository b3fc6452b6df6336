"""`likeness generate`: generate images of a subject, show progress, write them to disk and print where."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from likeness.api.generation import DEFAULT_SCHEDULER, IMAGE_FORMAT_ENUMS, SCHEDULER_ENUMS
from likeness.cli.common import add_address_argument, connect
from likeness_client import GeneratedImage
from likeness_client.v1 import inference_service_pb2 as inference_pb
from likeness_client.v1 import types_pb2

# --scheduler takes the wire names (likeness.api.generation: derived from the Scheduler enum).
SCHEDULERS = {DEFAULT_SCHEDULER: types_pb2.SCHEDULER_UNSPECIFIED, **SCHEDULER_ENUMS}
FORMATS = IMAGE_FORMAT_ENUMS
PROGRESS_WIDTH = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images of a trained subject",
        description="Generate images with a subject model (or the base model alone) and write them to a folder. "
        "'{subject}' in the prompt expands to the subject's identifier and class noun. Unset options take the "
        "base model's defaults.",
    )
    parser.add_argument("prompt", help="the prompt, e.g. 'a photo of {subject} on a beach'")
    parser.add_argument("--subject", "-s", default="", help="subject model id (empty: the base model alone)")
    parser.add_argument("--base-model", default="", help="base model id (default: the subject's, or the server's)")
    parser.add_argument("--negative-prompt", "-N", default="", help="what the images must not show")
    parser.add_argument("--num-images", "-n", type=int, default=1, help="images to generate, 1-8 (default 1)")
    parser.add_argument("--steps", type=int, help="denoising steps, 1-150")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale, 0-30")
    parser.add_argument("--width", type=int, help="image width in pixels, a multiple of 8")
    parser.add_argument("--height", type=int, help="image height in pixels, a multiple of 8")
    parser.add_argument("--seed", type=int, help="seed of the first image; image i uses seed + i (default random)")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="default", help="denoising scheduler")
    parser.add_argument("--lora-scale", type=float, help="strength of a LoRA subject, 0-2 (default 1)")
    parser.add_argument(
        "--lora",
        action="append",
        default=[],
        type=_lora_weight,
        metavar="ID[:WEIGHT]",
        help="add a style or another subject at a weight, -2 to 2 (default 1); repeat for several, at most 4",
    )
    parser.add_argument("--init-image", type=_file_bytes, help="img2img / inpainting: the image to start from")
    parser.add_argument(
        "--mask", type=Path, help="inpainting: single-channel mask of --init-image's size, white repaints"
    )
    parser.add_argument("--strength", type=float, help="with --init-image: how much to repaint, 0-1 (default 0.75)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="png", help="image encoding (default png)")
    parser.add_argument("--out", "-o", type=Path, default=Path("generated"), help="output folder (default ./generated)")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    add_address_argument(parser)
    parser.set_defaults(func=run)


def _file_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from exc


def _lora_weight(text: str) -> inference_pb.LoraWeight:
    """`ID` or `ID:WEIGHT` of --lora."""
    lora_id, _, weight = text.partition(":")
    lora = inference_pb.LoraWeight(lora_id=lora_id)
    if weight:
        try:
            lora.weight = float(weight)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: the weight after ':' must be a number") from exc
    return lora


def build_request(args: argparse.Namespace) -> inference_pb.GenerateImagesRequest:
    parameters = types_pb2.GenerationParameters(
        negative_prompt=args.negative_prompt, scheduler=cast("types_pb2.Scheduler", SCHEDULERS[args.scheduler])
    )
    optional = {
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "width": args.width,
        "height": args.height,
        "seed": args.seed,
        "lora_scale": args.lora_scale,
    }
    for name, value in optional.items():
        if value is not None:
            setattr(parameters, name, value)
    request = inference_pb.GenerateImagesRequest(
        subject_model_id=args.subject,
        base_model=args.base_model,
        prompt=args.prompt,
        parameters=parameters,
        num_images=args.num_images,
        output_format=cast("types_pb2.ImageFormat", FORMATS[args.format]),
        loras=args.lora,
    )
    if args.init_image is not None:
        request.init_image = args.init_image
    if args.mask is not None:
        request.mask_image = args.mask
    if args.strength is not None:
        request.strength = args.strength
    return request


def _show_progress(step: int, total: int) -> None:
    filled = PROGRESS_WIDTH * step // max(total, 1)
    bar = "#" * filled + "." * (PROGRESS_WIDTH - filled)
    print(f"\r[{bar}] step {step}/{total}", end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    request = build_request(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    request_id = "request"
    progress_shown = False
    with connect(args) as client:
        for event in client.generate_images(request, timeout=args.timeout):
            if isinstance(event, inference_pb.Accepted):
                request_id = event.request_id or request_id
                if not args.quiet:
                    ahead = f", {event.queue_position} ahead in the queue" if event.queue_position else ""
                    print(f"accepted: {event.effective_prompt!r}{ahead}", file=sys.stderr)
            elif isinstance(event, inference_pb.Warning):
                # Warnings come before denoising starts, so they never break a progress line.
                print(f"warning: {event.message}", file=sys.stderr)
            elif isinstance(event, inference_pb.Progress):
                if not args.quiet:
                    _show_progress(event.step, event.total_steps)
                    progress_shown = True
            elif isinstance(event, GeneratedImage):
                path = out / f"{request_id[:12]}-{event.index}-seed{event.seed}.{event.extension}"
                path.write_bytes(event.data)
                written.append(path)
            elif isinstance(event, inference_pb.Summary):
                if progress_shown:
                    print(file=sys.stderr)
                if not args.quiet:
                    print(
                        f"done in {event.total_ms / 1000:.2f} s (queue {event.queue_ms:.0f} ms, load "
                        f"{event.load_ms:.0f} ms, denoise {event.denoise_ms:.0f} ms, batch of {event.batch_size})",
                        file=sys.stderr,
                    )
    for path in written:
        print(path)
    return 0
