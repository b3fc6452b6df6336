"""`likeness prepare PHOTOS_DIR`: upload photos to the trainer, get a clean dataset and its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from likeness.cli.common import add_address_argument, connect, photo_files, print_table
from likeness_client.v1 import trainer_service_pb2 as trainer_pb

SUBJECT_TYPES = {
    "auto": trainer_pb.SUBJECT_TYPE_UNSPECIFIED,
    "face": trainer_pb.SUBJECT_TYPE_FACE,
    "object": trainer_pb.SUBJECT_TYPE_OBJECT,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="prepare a training set from a folder of photos",
        description="Validate, orient, crop and resize photos into a dataset in shared storage. Prints the dataset "
        "id to train on and what happened to each photo.",
    )
    parser.add_argument("photos", help="folder of photos (JPEG, PNG, WebP, ...)")
    parser.add_argument("--base-model", default="", help="base model the set is for (decides the resolution)")
    parser.add_argument("--resolution", type=int, default=0, help="square size in pixels (default: the model's)")
    parser.add_argument("--subject-type", choices=SUBJECT_TYPES, default="auto", help="how to crop")
    parser.add_argument("--face-margin", type=float, default=None, help="margin around a face, fraction of its size")
    parser.add_argument("--name", default="", help="display name of the dataset")
    parser.add_argument("--out", default="", help="folder to save the contact sheet in")
    add_address_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    photos = photo_files(args.photos)
    options = trainer_pb.DatasetOptions(
        resolution=args.resolution,
        subject_type=SUBJECT_TYPES[args.subject_type],
        base_model=args.base_model,
        display_name=args.name or Path(args.photos).name,
    )
    if args.face_margin is not None:
        options.face_margin = args.face_margin
    with connect(args) as client:
        response = client.prepare_dataset(photos, options)
    dataset = response.dataset
    rows = [
        [
            r.file_name,
            "kept" if r.kept else "rejected",
            f"{r.original_width}x{r.original_height}",
            r.crop_method or "-",
            r.reason or "",
        ]
        for r in dataset.reports
    ]
    print_table(rows, ["photo", "outcome", "size", "crop", "reason"])
    print(f"\ndataset {dataset.dataset_id}: {dataset.image_count} images at {dataset.resolution} px")
    if args.out and response.contact_sheet.data:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        sheet = out / f"{dataset.dataset_id}-contact-sheet.jpg"
        sheet.write_bytes(response.contact_sheet.data)
        print(f"contact sheet: {sheet}")
    print(f"train on it: likeness train --dataset {dataset.dataset_id} --class-noun NOUN")
    return 0
