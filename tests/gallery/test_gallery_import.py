"""`likeness prompts import`: CSV with DiffusionDB's columns, JSON Lines, Parquet; bad rows reported by line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from likeness.cli.main import main
from likeness.controlplane.database import Database
from likeness.gallery.store import PromptStore, Scope, SearchFilters
from likeness.storage.local import LocalStorage

DIFFUSIONDB_ROWS = [
    {
        "prompt": "a castle in the clouds, matte painting",
        "seed": 1,
        "step": 50,
        "cfg": 7.0,
        "sampler": 8,
        "width": 512,
        "height": 768,
    },
    {
        "prompt": "a corgi astronaut, digital art",
        "seed": 2,
        "step": 30,
        "cfg": 7.5,
        "sampler": 4,
        "width": 512,
        "height": 512,
    },
]


def run_import(tmp_path: Path, path: Path, *extra: str) -> int:
    return main(
        [
            "prompts",
            "import",
            str(path),
            "--no-progress",
            "--database-url",
            f"sqlite:///{tmp_path}/g.db",
            "--storage-url",
            str(tmp_path / "storage"),
            *extra,
        ]
    )


def store(tmp_path: Path) -> PromptStore:
    return PromptStore(Database(f"sqlite:///{tmp_path}/g.db"), LocalStorage(tmp_path / "storage"))


def test_csv_with_diffusiondb_columns_reports_bad_rows_and_is_idempotent(tmp_path, capsys):
    path = tmp_path / "prompts.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(DIFFUSIONDB_ROWS[0]))
        writer.writeheader()
        writer.writerows(DIFFUSIONDB_ROWS)
        writer.writerow({"prompt": "", "seed": 3})  # line 4: no prompt
        writer.writerow({"prompt": "steps are words", "step": "many"})  # line 5
        writer.writerow({"prompt": "bell \x07 here"})  # line 6: control character
    assert run_import(tmp_path, path, "--shared", "--tenant", "public") == 1
    out = capsys.readouterr()
    assert "5 rows: 2 imported, 0 already present, 3 rejected, 1 without a scheduler" in out.out
    assert (
        "line 4: prompt" in out.err
        and "line 5: parameters.num_inference_steps" in out.err
        and "line 6: prompt" in out.err
    )
    assert run_import(tmp_path, path, "--shared", "--tenant", "public") == 1
    assert "2 already present" in capsys.readouterr().out
    page = store(tmp_path).search("acme", "corgi astronaut", filters=SearchFilters(scope=Scope.SHARED))
    (hit,) = page.results
    assert hit.record.params == {
        "guidance": 7.5,
        "height": 512,
        "scheduler": "euler_ancestral",
        "seed": 2,
        "steps": 30,
        "width": 512,
    }
    castle = store(tmp_path).search("acme", "castle clouds").results[0].record
    assert "scheduler" not in castle.params  # k_lms is not served: imported without a scheduler


def test_jsonl_and_parquet(tmp_path, capsys):
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(
        json.dumps({"prompt": "a lighthouse at night", "negative_prompt": "blurry", "steps": 20, "tags": ["sea"]})
        + "\n{not json\n"
        + json.dumps(["a list"])
        + "\n"
    )
    assert run_import(tmp_path, jsonl, "--tenant", "acme") == 1
    err = capsys.readouterr().err
    assert "line 2: row: is not valid JSON" in err and "line 3: row: must be a JSON object" in err
    parquet = tmp_path / "prompts.parquet"
    pq.write_table(pa.Table.from_pylist(DIFFUSIONDB_ROWS), parquet)
    assert run_import(tmp_path, parquet, "--tenant", "acme") == 0
    found = store(tmp_path)
    (hit,) = found.search("acme", "lighthouse", filters=SearchFilters(tags=["sea"])).results
    assert hit.record.negative_prompt == "blurry" and hit.record.params == {"steps": 20}
    assert len(found.search("acme", "corgi").results) == 1
    assert found.search("globex", "lighthouse").results == []  # imported privately for acme
