"""`likeness models create-tiny|list|import`: make tiny test base models, show the catalog, check a model for it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from likeness.errors import AlreadyExists

# Kept in sync with likeness.models (tiny.TINY_ARCHS, catalog.BASE_MODELS_ENV / DEFAULT_CATALOG_SPEC); repeated
# here so building the parser does not import torch and diffusers.
TINY_ARCH_CHOICES = ("sd15", "sdxl")
BASE_MODELS_ENV = "LIKENESS_BASE_MODELS"
PREDICTION_TYPE_CHOICES = ("epsilon", "v_prediction")  # likeness.models.standard.PREDICTION_TYPES


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

    importing = actions.add_parser(
        "import",
        help="check a downloaded model and print its catalog entry",
        description="Check a diffusers folder or single .safetensors checkpoint (pickle weights, truncated or "
        "damaged files, the architecture, the weights variant) from the files' headers, without loading weights; "
        f"report its architecture, precision, size and native resolution, and print the entry to add to "
        f"${BASE_MODELS_ENV}.",
    )
    importing.add_argument("path", type=Path, metavar="PATH", help="a diffusers folder or a .safetensors file")
    importing.add_argument("--id", dest="model_id", default="", help="catalog id (default: the folder or file name)")
    importing.add_argument(
        "--config", type=Path, default=None, help="for a single file: the diffusers folder of its configs"
    )
    importing.add_argument("--variant", default=None, help="the weights variant to load (e.g. fp16); default: detected")
    importing.add_argument(
        "--prediction-type",
        choices=PREDICTION_TYPE_CHOICES,
        default=None,
        help="the model's training objective. For an SD 2.x single file it picks the 768-v (v_prediction) or "
        "512-base (epsilon) configs; default: guessed from the file name ('768', '-v' or 'v-pred': v_prediction; "
        "'512' or 'base': epsilon; otherwise v_prediction). For any other model it overrides the scheduler's",
    )
    importing.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.models_command == "create-tiny":
        return _create_tiny(args.arch, args.seed, args.directory)
    if args.models_command == "import":
        return _import(args.path, args.model_id, args.config, args.variant, args.prediction_type)
    return _list_catalog(args.base_models)


def _import(path: Path, model_id: str, config: Path | None, variant: str | None, prediction_type: str | None) -> int:
    import re

    from likeness.models.inspect import inspect_model

    report = inspect_model(path, config_dir=config, variant=variant, prediction_type=prediction_type)
    name = model_id or re.sub(r"[^A-Za-z0-9._-]+", "-", report.path.stem if report.path.is_file() else report.path.name)
    entry = report.catalog_entry(name)
    print(f"architecture  {report.arch}")
    print(f"precision     {report.precision}{f' (variant {report.variant})' if report.variant else ''}")
    print(f"weights       {report.size_bytes / 2**30:.2f} GiB, {report.parameters / 1e6:.0f} M parameters")
    print(f"resolution    {report.resolution or 'unknown'} px (native)")
    how = {
        "explicit": "as given",
        "config": "from its scheduler config",
        "name": "guessed from the file name; override with --prediction-type",
        "default": "SD 2.x default, the file name does not tell; override with --prediction-type",
    }[report.prediction_reason]
    print(f"prediction    {report.prediction_type or 'unknown'} ({how})")
    if report.standard_config:
        print(f"configs       the {report.standard_config} configs shipped with Likeness (or give --config DIR)")
    print(f"catalog entry {entry}")
    current = os.environ.get(BASE_MODELS_ENV, "")
    print(f"{BASE_MODELS_ENV}={current + ',' if current else ''}{entry}")
    return 0


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
        pairs = (("config", entry.config_dir), ("arch", arch), ("prediction_type", entry.prediction_type))
        options = "".join(f"|{name}={value}" for name, value in pairs if value)
        print(f"{entry.id}\t{entry.source}{options}")
    return 0
