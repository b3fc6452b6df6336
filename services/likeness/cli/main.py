"""Entry point of the `likeness` command: one subcommand per step of the workflow.

Each subcommand lives in its own module exposing `register(subparsers)`; a module whose optional dependencies are
missing is skipped rather than breaking the whole command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from likeness import __version__
from likeness.errors import LikenessError

SUBCOMMAND_MODULES = (
    "likeness.cli.serve_cmd",
    "likeness.cli.db_cmd",
    "likeness.cli.keys_cmd",
    "likeness.cli.erase_cmd",
    "likeness.cli.studio_cmd",
    "likeness.cli.quotas_cmd",
    "likeness.cli.models_cmd",
    "likeness.cli.prepare_cmd",
    "likeness.cli.train_cmd",
    "likeness.cli.plan_cmd",
    "likeness.cli.generate_cmd",
    "likeness.cli.subjects_cmd",
    "likeness.cli.prompts_cmd",
    "likeness.cli.eval_cmd",
    "likeness.cli.demo_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="likeness",
        description="Personalized text-to-image generation: prepare photos, train a subject, generate it anywhere.",
    )
    parser.add_argument("--version", action="version", version=f"likeness {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("likeness.cli."):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except LikenessError as exc:
        print(f"likeness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("likeness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
