"""`likeness demo`: the whole workflow end to end on the embedded defaults, through the real services.

Starts the trainer, inference and gallery services in this process, then, as a client would: prepares a dataset
from sample photos, trains a LoRA subject with a live progress bar, finds prompts in the gallery, generates the
subject in several contexts (and the plain class for comparison), and writes everything to the output folder.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from PIL import Image

from likeness.cli.train_cmd import follow
from likeness.server.embedded import EmbeddedServer
from likeness.server.settings import Settings
from likeness_client import GeneratedImage, LikenessClient
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import types_pb2

DEMO_PROMPTS = (
    "a photo of {subject}",
    "a {subject} on the beach",
    "a {subject} in the snow",
    "a {subject} in the jungle",
)
#: The photos are drawn at the toy model's native 32 px; they are enlarged like camera photos so the dataset
#: preparation step has real work to do (crop and resize back down).
PHOTO_SIZE = 256


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole workflow end to end on the embedded defaults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="out", help="folder for photos, images and contact sheets")
    parser.add_argument("--storage-url", default="var/storage", help="shared storage of the embedded services")
    parser.add_argument("--cache-dir", default="var/cache", help="model cache of the embedded services")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's recipe)")
    parser.add_argument("--images-per-prompt", type=int, default=2, help="images generated per prompt")
    parser.set_defaults(func=run)


def _enlarge(png: bytes) -> bytes:
    image = Image.open(io.BytesIO(png)).convert("RGB").resize((PHOTO_SIZE, PHOTO_SIZE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _save(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _grid(rows: list[tuple[str, list[bytes]]], cell: int = 128) -> Image.Image:
    """A labelled grid: one row per prompt, its images side by side, enlarged for viewing."""
    from PIL import ImageDraw

    columns = max(len(images) for _, images in rows)
    label_height = 18
    sheet = Image.new("RGB", (columns * cell, len(rows) * (cell + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (label, images) in enumerate(rows):
        top = row * (cell + label_height)
        draw.text((4, top + 3), label, fill="black")
        for column, data in enumerate(images):
            image = Image.open(io.BytesIO(data)).convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(image, (column * cell, top + label_height))
    return sheet


def _generate(client: LikenessClient, prompt: str, count: int, **request) -> list[bytes]:
    images = []
    for event in client.generate_images(prompt=prompt, num_images=count, **request):
        if isinstance(event, GeneratedImage):
            images.append(event.data)
    return images


def run(args: argparse.Namespace) -> int:
    from likeness.world.subjects import DEMO_SUBJECT, DEMO_TRAINING, demo_subject_photos

    recipe = DEMO_TRAINING
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(storage_url=args.storage_url, cache_dir=args.cache_dir, log_level="WARNING")
    started = time.monotonic()
    print("starting the trainer, inference and gallery services ...", flush=True)
    with (
        EmbeddedServer(settings, ["trainer", "inference", "gallery"]) as server,
        LikenessClient(server.address) as client,
    ):
        print(f"services up on {server.address}")

        # 1. Photos -> dataset.
        photos = [(name.replace(".png", ".jpg"), _enlarge(data)) for name, data in demo_subject_photos()]
        for name, data in photos:
            _save(out / "photos" / name, data)
        print(f"\n1. preparing {len(photos)} photos of a {DEMO_SUBJECT.class_noun} ({out / 'photos'})")
        prepared = client.prepare_dataset(
            photos,
            trainer_pb.DatasetOptions(
                base_model=recipe.base_model,
                resolution=recipe.resolution,
                subject_type=trainer_pb.SUBJECT_TYPE_OBJECT,
                display_name="demo",
            ),
        )
        dataset = prepared.dataset
        for report in dataset.reports:
            outcome = f"kept, {report.crop_method} crop" if report.kept else f"rejected: {report.reason}"
            print(f"   {report.file_name}: {report.original_width}x{report.original_height}, {outcome}")
        _save(out / "dataset-contact-sheet.jpg", prepared.contact_sheet.data)
        print(f"   dataset {dataset.dataset_id}: {dataset.image_count} images at {dataset.resolution} px")

        # 2. Train.
        spec = trainer_pb.TrainingJobSpec(
            base_model=recipe.base_model,
            identifier=recipe.identifier,
            class_noun=recipe.class_noun,
            method=types_pb2.TRAINING_METHOD_LORA,
            dataset_id=dataset.dataset_id,
            hyperparameters=trainer_pb.Hyperparameters(
                max_train_steps=args.steps or recipe.max_train_steps,
                learning_rate=recipe.learning_rate,
                train_batch_size=recipe.train_batch_size,
                resolution=recipe.resolution,
                seed=0,
            ),
            lora=trainer_pb.LoraConfig(rank=recipe.lora_rank),
            prior_preservation=trainer_pb.PriorPreservation(
                enabled=recipe.prior_preservation, num_class_images=recipe.num_class_images
            ),
            display_name="demo",
        )
        job = client.create_training_job(spec).job
        subject = f"{recipe.identifier} {recipe.class_noun}"
        print(f"\n2. training '{subject}' on {recipe.base_model} (job {job.job_id})")
        if follow(client, job.job_id) != 0:
            print("likeness: demo training failed; see the job above", file=sys.stderr)
            return 1
        model_id = client.get_training_job(job.job_id).subject_model_id

        # 3. Prompts from the gallery.
        print("\n3. prompt ideas from the gallery:")
        for hit in client.search_prompts("beach snow jungle", page_size=3).results:
            print(f"   {hit.prompt.prompt}")

        # 4. Generate.
        print(f"\n4. generating with subject model {model_id}")
        parameters = types_pb2.GenerationParameters(
            num_inference_steps=recipe.num_inference_steps,
            guidance_scale=recipe.guidance_scale,
            seed=1,
            width=recipe.resolution,
            height=recipe.resolution,
        )
        rows = []
        for prompt in DEMO_PROMPTS:
            # Recorded in the gallery as they are generated: each image with its thumbnail and exact recipe.
            images = _generate(
                client,
                prompt,
                args.images_per_prompt,
                subject_model_id=model_id,
                parameters=parameters,
                record_in_gallery=True,
                gallery_tags=["demo"],
            )
            stem = prompt.replace("{subject}", "subject").replace(" ", "-")
            for index, data in enumerate(images):
                print(f"   {_save(out / 'generated' / f'{stem}-{index}.png', data)}")
            rows.append((prompt.replace("{subject}", subject), images))
        class_prompt = f"a photo of {recipe.class_noun}"
        baseline = _generate(
            client, class_prompt, args.images_per_prompt, base_model=recipe.base_model, parameters=parameters
        )
        rows.append((f"{class_prompt} (base model, for comparison)", baseline))
        recorded = client.search_prompts(tags=["demo"], subject_model_id=model_id, page_size=100).results
        with_images = sum(1 for hit in recorded if hit.prompt.thumbnail_webp)
        print(f"   recorded in the gallery: {len(recorded)} entries, {with_images} with thumbnails (tag 'demo')")
        _grid(rows).save(out / "contact-sheet.png")
        photo_row = [("training photos", [data for _, data in photos])]
        _grid(photo_row).save(out / "training-photos.png")

    print(f"\ndone in {time.monotonic() - started:.0f} s. Images and contact sheets are in {out}/:")
    for name in ("contact-sheet.png", "training-photos.png", "dataset-contact-sheet.jpg"):
        print(f"   {out / name}")
    print(
        "\nSee the subject, the job and the gallery in Likeness Studio (docs/studio.md):\n"
        f"   likeness serve all --studio --storage-url {args.storage_url} --cache-dir {args.cache_dir}\n"
        f"   then open http://127.0.0.1:{settings.studio_port}/"
    )
    return 0
