"""Import of existing prompt collections (CSV, JSON Lines, Parquet) into the gallery, streaming and idempotent.

Columns are matched by the names public collections use: DiffusionDB's metadata (`prompt`, `seed`, `step`,
`cfg`, `sampler` as its integer code, `width`, `height`) and plain `prompt,negative_prompt,steps,...` files
(see COLUMN_ALIASES). Each row is validated by the same rules as RecordPrompt; a bad row is reported with its
line and field and the rest is imported. Rows go in by batches of one transaction each, as new recipes only:
importing a file twice adds nothing and counts no uses.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from likeness.api import generation
from likeness.enums import ValueEnum
from likeness.errors import InvalidArgument, LikenessError
from likeness.gallery.store import ImportRows, PromptDraft, PromptStore, import_rows
from likeness.storage.layout import validate_tenant

#: Our field -> the column names it is read from, first match wins (lower-cased).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "text", "caption"),
    "negative_prompt": ("negative_prompt", "negative", "negative prompt"),
    "base_model": ("base_model", "model"),
    "tags": ("tags", "tag"),
    "steps": ("steps", "step", "num_inference_steps"),
    "guidance": ("guidance", "cfg", "cfg_scale", "guidance_scale"),
    "seed": ("seed",),
    "width": ("width",),
    "height": ("height",),
    "scheduler": ("scheduler", "sampler"),
}
_PARAM_FIELDS = ("steps", "guidance", "seed", "width", "height")
#: DiffusionDB's integer sampler codes (its metadata documentation).
DIFFUSIONDB_SAMPLERS = {
    1: "ddim",
    2: "plms",
    3: "k_euler",
    4: "k_euler_ancestral",
    5: "k_heun",
    6: "k_dpm_2",
    7: "k_dpm_2_ancestral",
    8: "k_lms",
    9: "others",
}
#: Sampler names of other tools -> the schedulers Likeness serves. Others are imported without a scheduler.
SAMPLER_NAMES = {
    "ddim": "ddim",
    "ddpm": "ddpm",
    "euler": "euler",
    "k_euler": "euler",
    "euler_a": "euler_ancestral",
    "euler_ancestral": "euler_ancestral",
    "k_euler_ancestral": "euler_ancestral",
    "dpm++ 2m": "dpm_solver_multistep",
    "dpmpp_2m": "dpm_solver_multistep",
    "dpm_solver_multistep": "dpm_solver_multistep",
    "unipc": "uni_pc",
    "uni_pc": "uni_pc",
}
MAX_KEPT_ERRORS = 1000


class ImportFormat(ValueEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"

    @classmethod
    def for_path(cls, path: Path) -> ImportFormat:
        suffix = path.suffix.lower().lstrip(".")
        known = {"csv": cls.CSV, "jsonl": cls.JSONL, "ndjson": cls.JSONL, "parquet": cls.PARQUET, "pq": cls.PARQUET}
        if suffix not in known:
            raise InvalidArgument(
                f"cannot tell the format of {path.name!r} from its extension; pass --format csv, jsonl or parquet",
                field="format",
            )
        return known[suffix]


@dataclass(frozen=True)
class RowError:
    """A row that was not imported: its line (CSV and JSON Lines) or row number (Parquet), field and reason."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    already_present: int = 0
    schedulers_dropped: int = 0  # rows whose sampler Likeness does not serve; imported without a scheduler
    error_count: int = 0
    errors: list[RowError] = field(default_factory=list)  # the first MAX_KEPT_ERRORS

    def add_error(self, error: RowError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(error)


def read_rows(path: Path, file_format: ImportFormat) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(line, row) for every row of the file, streaming; a row that cannot be parsed comes as a RowError."""
    if file_format is ImportFormat.CSV:
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                yield reader.line_num, {str(key).strip().lower(): value for key, value in row.items() if key}
    elif file_format is ImportFormat.JSONL:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield line_number, RowError(line_number, "row", f"is not valid JSON ({exc.msg})")
                    continue
                if not isinstance(row, dict):
                    yield line_number, RowError(line_number, "row", "must be a JSON object")
                    continue
                yield line_number, {str(key).lower(): value for key, value in row.items()}
    else:
        try:
            import pyarrow.parquet as parquet
        except ImportError:
            raise InvalidArgument(
                "reading Parquet needs pyarrow: pip install 'likeness[gallery]'", field="format"
            ) from None
        number = 0
        for batch in parquet.ParquetFile(path).iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                number += 1
                yield number, {str(key).lower(): value for key, value in row.items()}


def _pick(row: dict[str, Any], name: str) -> Any:
    for alias in COLUMN_ALIASES[name]:
        value = row.get(alias)
        if value is not None and value != "":
            return value
    return None


def _number(value: Any, name: str) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise InvalidArgument(
                f"{value!r} is not a number", field=generation.field_path(generation.FIELDS_BY_KEY[name])
            ) from None
        return int(number) if number.is_integer() else number
    if isinstance(value, float) and math.isnan(value):
        return None  # an empty cell of a numeric Parquet or pandas column
    return value


def _scheduler(value: Any) -> tuple[str | None, bool]:
    """The scheduler name Likeness serves, and whether a given sampler had to be dropped."""
    if value is None:
        return None, False
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = DIFFUSIONDB_SAMPLERS.get(int(value), "")
    name = SAMPLER_NAMES.get(str(value).strip().lower())
    return name, name is None


def _tags(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [part for part in (piece.strip() for piece in value.replace(";", ",").split(",")) if part]
    return list(value)


def draft_from_row(row: dict[str, Any]) -> tuple[PromptDraft, bool]:
    """A validated draft of one row, and whether its sampler was dropped; InvalidArgument names the field."""
    params: dict[str, Any] = {}
    for name in _PARAM_FIELDS:
        number = _number(_pick(row, name), name)
        if number is not None:
            params[name] = number
    scheduler, dropped = _scheduler(_pick(row, "scheduler"))
    if scheduler:
        params["scheduler"] = scheduler
    prompt = _pick(row, "prompt")
    if prompt is None:
        raise InvalidArgument("is missing (a column named prompt, text or caption)", field="prompt")
    draft = PromptDraft.validate(
        str(prompt),
        negative_prompt=str(_pick(row, "negative_prompt") or ""),
        base_model=str(_pick(row, "base_model") or ""),
        params=params,
        tags=_tags(_pick(row, "tags")),
    )
    return draft, dropped


@dataclass
class PreparedBatch:
    """What the reading process hands the writing one: rows ready to insert and the batch's report."""

    rows: ImportRows
    report: ImportReport


def prepare_batches(
    path: Path, file_format: ImportFormat, tenant: str, shared: bool, batch_size: int
) -> Iterator[PreparedBatch]:
    """Read, validate and turn rows into database rows, `batch_size` valid rows at a time."""
    report = ImportReport()
    drafts: list[PromptDraft] = []

    def cut() -> PreparedBatch:
        batch = PreparedBatch(import_rows(tenant, drafts, shared=shared, created_at=time.time()), report)
        drafts.clear()
        return batch

    for line, row in read_rows(path, file_format):
        report.rows += 1
        if isinstance(row, RowError):
            report.add_error(row)
            continue
        try:
            draft, dropped = draft_from_row(row)
        except LikenessError as exc:
            report.add_error(RowError(line, exc.field or "row", exc.reason))
            continue
        report.schedulers_dropped += dropped
        drafts.append(draft)
        if len(drafts) >= batch_size:
            yield cut()
            report = ImportReport()
    yield cut()


def _produce(path: Path, file_format: ImportFormat, tenant: str, shared: bool, batch_size: int, queue: Any) -> None:
    """The reading process: batches into `queue`, then None (or the error that stopped it)."""
    try:
        for batch in prepare_batches(path, file_format, tenant, shared, batch_size):
            queue.put(batch)
        queue.put(None)
    except BaseException as exc:  # handed to the parent, which raises it; a child must never die silently
        queue.put(exc if isinstance(exc, LikenessError) else InvalidArgument(f"cannot read the file: {exc}"))


def import_file(
    store: PromptStore,
    path: Path,
    *,
    tenant: str,
    shared: bool = False,
    file_format: ImportFormat | None = None,
    batch_size: int = 20_000,
    progress: Callable[[int], None] | None = None,
    parallel: bool = True,
) -> ImportReport:
    """Import every valid row of `path`; `progress(rows)` is called after each batch with the rows read.

    With `parallel`, a second process reads and validates the next batch while this one writes the last:
    reading and writing each take about half the time of a row.
    """
    validate_tenant(tenant)
    file_format = file_format or ImportFormat.for_path(path)
    if not 1 <= batch_size <= 100_000:
        raise InvalidArgument("must be between 1 and 100000", field="batch_size")
    total = ImportReport()

    def write(batch: PreparedBatch) -> None:
        new = store.insert_import_rows(batch.rows)
        total.rows += batch.report.rows
        total.imported += new
        total.already_present += len(batch.rows.prompts) - new
        total.schedulers_dropped += batch.report.schedulers_dropped
        for error in batch.report.errors:
            total.add_error(error)
        total.error_count += batch.report.error_count - len(batch.report.errors)
        if progress is not None:
            progress(total.rows)

    # fork, not spawn: a spawned child re-imports the caller's main module, which breaks scripts that call
    # this without a __main__ guard. The child runs only the reading code and ends with the import.
    if not parallel or "fork" not in multiprocessing.get_all_start_methods():
        for batch in prepare_batches(path, file_format, tenant, shared, batch_size):
            write(batch)
        return total
    context = multiprocessing.get_context("fork")
    queue = context.Queue(maxsize=4)
    reader = context.Process(
        target=_produce, args=(path, file_format, tenant, shared, batch_size, queue), name="likeness-import-read"
    )
    reader.start()
    try:
        while True:
            item = queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            write(item)
    finally:
        reader.join(timeout=5)
        if reader.is_alive():
            reader.terminate()
    return total
