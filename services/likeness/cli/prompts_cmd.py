"""`likeness prompts search|show|record|delete|templates|import`: discover prompts in the gallery and reuse them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from likeness.cli.common import add_address_argument, connect, print_table
from likeness.gallery.importer import ImportFormat
from likeness.server.settings import add_arguments, load_settings
from likeness_client.v1 import types_pb2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("prompts", help="search the prompt gallery, record prompts, list templates")
    commands = parser.add_subparsers(dest="prompts_command", metavar="ACTION", required=True)

    search = commands.add_parser("search", help="search prompts, best matches first")
    search.add_argument("query", nargs="?", default="", help="free text (empty lists the most used)")
    search.add_argument("--tag", action="append", default=[], help="only prompts with this tag (repeatable)")
    search.add_argument("--base-model", default="", help="only prompts used with this base model")
    search.add_argument("--limit", type=int, default=10, help="results to show (1-100)")
    search.set_defaults(func=run_search)

    show = commands.add_parser("show", help="show one prompt with its parameters as JSON")
    show.add_argument("prompt_id")
    show.set_defaults(func=run_show)

    record = commands.add_parser("record", help="record a prompt and its parameters")
    record.add_argument("prompt")
    record.add_argument("--negative", default="", help="negative prompt")
    record.add_argument("--steps", type=int, default=None)
    record.add_argument("--guidance", type=float, default=None)
    record.add_argument("--seed", type=int, default=None)
    record.add_argument("--tag", action="append", default=[])
    record.add_argument("--base-model", default="")
    record.set_defaults(func=run_record)

    delete = commands.add_parser("delete", help="delete one of your prompts with its image")
    delete.add_argument("prompt_id")
    delete.set_defaults(func=run_delete)

    templates = commands.add_parser("templates", help="list prompt templates with a {subject} placeholder")
    templates.add_argument("--category", default="", help="only this category (portrait, pet, product, ...)")
    templates.set_defaults(func=run_templates)
    for sub in (search, show, record, delete, templates):
        add_address_argument(sub)

    importer = commands.add_parser(
        "import",
        help="import a prompt collection (CSV, JSON Lines, Parquet) into the gallery database",
        description="Import prompts straight into the control-plane database (--database-url), as an operator. "
        "Rows are validated like RecordPrompt; bad rows are reported with their line and skipped. "
        "Importing the same file again adds nothing.",
    )
    importer.add_argument("file", type=Path, help="a .csv, .jsonl or .parquet file")
    importer.add_argument("--format", choices=[f.value for f in ImportFormat], help="default: from the extension")
    importer.add_argument("--tenant", default="default", help="tenant that owns the imported prompts")
    importer.add_argument("--shared", action="store_true", help="make them visible to every tenant")
    importer.add_argument("--errors", type=Path, help="write every rejected row's line and reason to this file")
    importer.add_argument("--batch-size", type=int, default=20_000, help="rows per transaction")
    importer.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_arguments(importer)
    importer.set_defaults(func=run_import)


def run_search(args: argparse.Namespace) -> int:
    with connect(args) as client:
        response = client.search_prompts(args.query, tags=args.tag, base_model=args.base_model, page_size=args.limit)
    rows = [[r.prompt.prompt_id, f"{r.score:.2f}", ",".join(r.prompt.tags), r.prompt.prompt] for r in response.results]
    print_table(rows, ["id", "score", "tags", "prompt"])
    return 0


def run_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        record = client.get_prompt(args.prompt_id)
    print(json.dumps(MessageToDict(record), indent=2))
    return 0


def run_record(args: argparse.Namespace) -> int:
    parameters = types_pb2.GenerationParameters(negative_prompt=args.negative)
    if args.steps is not None:
        parameters.num_inference_steps = args.steps
    if args.guidance is not None:
        parameters.guidance_scale = args.guidance
    if args.seed is not None:
        parameters.seed = args.seed
    with connect(args) as client:
        response = client.record_prompt(args.prompt, parameters=parameters, tags=args.tag, base_model=args.base_model)
    state = "already recorded" if response.existing else "recorded"
    print(f"{state}: {response.prompt.prompt_id} (used {response.prompt.use_count}x)")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        response = client.delete_prompt(args.prompt_id)
    print(f"deleted {response.prompt_id} ({response.files_removed} files)")
    return 0


def run_templates(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.list_templates(args.category)
    print_table([[t.template_id, t.category, t.template] for t in found], ["id", "category", "template"])
    return 0


def run_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from likeness.controlplane.database import Database
    from likeness.controlplane.migrate import migrate
    from likeness.gallery.importer import import_file
    from likeness.gallery.store import PromptStore
    from likeness.storage.factory import open_storage

    if not args.file.is_file():
        print(f"error: {args.file} is not a file", file=sys.stderr)
        return 2
    settings = load_settings(args)
    database = Database(settings.resolved_database_url)
    bar = tqdm(unit=" rows", disable=args.no_progress, file=sys.stderr, desc=args.file.name)

    def progress(rows: int) -> None:
        bar.update(rows - bar.n)

    try:
        migrate(database)
        store = PromptStore(database, open_storage(settings.storage_url, cache_dir=settings.cache_path / "storage"))
        report = import_file(
            store,
            args.file,
            tenant=args.tenant,
            shared=args.shared,
            file_format=ImportFormat(args.format) if args.format else None,
            batch_size=args.batch_size,
            progress=progress,
        )
    finally:
        bar.close()
        database.dispose()
    print(
        f"{report.rows} rows: {report.imported} imported, {report.already_present} already present, "
        f"{report.error_count} rejected"
        + (f", {report.schedulers_dropped} without a scheduler Likeness serves" if report.schedulers_dropped else "")
    )
    for error in report.errors[:20]:
        print(f"  {error}", file=sys.stderr)
    if report.error_count > 20 and not args.errors:
        print(f"  ... {report.error_count - 20} more; pass --errors FILE to keep them all", file=sys.stderr)
    if args.errors:
        args.errors.write_text("".join(f"{error}\n" for error in report.errors))
    return 0 if report.error_count == 0 else 1
