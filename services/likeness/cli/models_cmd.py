"""`likeness models create-tiny|list`: make tiny test base models and show the base model catalog."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from likeness.errors import AlreadyExists

# Kept in sync with likeness.models (tiny.TINY_ARCHS, catalog.BASE_MODELS_ENV / DEFAULT_CATALOG_SPEC); repeated
# here so building the parser does not import torch and diffusers.
TINY_ARCH_CHOICES = ("sd15", "sdxl")
BASE_MODELS_ENV = "LIKENESS_BASE_MODELS"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="create tiny test models, list base models",
        description="Base models: create tiny random pipelines for tests and demos, list the catalog.",
    )
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create-tiny",
        help="write a tiny random SD 1.x or SDXL pipeline (diffusers format, safetensors)",
        description="Write a tiny, seeded, randomly initialised pipeline (native size 64 px) to DIR.",
    )
    create.add_argument("--arch", choices=TINY_ARCH_CHOICES, required=True, help="architecture to build")
    create.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")
    create.add_argument("directory", type=Path, metavar="DIR", help="new or empty output folder")
    create.set_defaults(func=run)

    listing = actions.add_parser(
        "list",
        help="list the base model catalog",
        description=f"Print one 'ID<TAB>SOURCE' line per base model of the catalog (${BASE_MODELS_ENV}).",
    )
    listing.add_argument(
        "--base-models",
        default=None,
        metavar="SPEC",
        help=f"catalog spec, e.g. 'tiny-sd15=builtin:sd15,sd15=/models/sd15' (default: ${BASE_MODELS_ENV} "
        "or the tiny builtins)",
    )
    listing.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.models_command == "create-tiny":
        return _create_tiny(args.arch, args.seed, args.directory)
    return _list_catalog(args.base_models)


def _create_tiny(arch: str, seed: int, directory: Path) -> int:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise AlreadyExists(f"{directory} already exists and is not an empty folder; choose a new one")
    from likeness.models.tiny import save_tiny_pipeline

    path = save_tiny_pipeline(arch, directory, seed=seed)
    print(f"wrote tiny {arch} pipeline (seed {seed}, 64 px) to {path}")
    return 0


def _list_catalog(spec: str | None) -> int:
    from likeness.models.catalog import DEFAULT_CATALOG_SPEC, parse_catalog_spec

    chosen = spec if spec is not None else os.environ.get(BASE_MODELS_ENV) or DEFAULT_CATALOG_SPEC
    for entry in parse_catalog_spec(chosen):
        # A builtin's architecture is implied by its name; print only options the spec needs.
        arch = None if entry.builtin else entry.arch
        options = "".join(f"|{name}={value}" for name, value in (("config", entry.config_dir), ("arch", arch)) if value)
        print(f"{entry.id}\t{entry.source}{options}")
    return 0
