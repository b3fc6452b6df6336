"""Erasure residue: fingerprints of everything derived from one subject's photos, and a scan of shared storage,
the control-plane database and local disk caches for any byte-identical copy or any of its ids afterwards.
Used by tests/e2e/test_erasure.py and bench/bench_security.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from likeness.storage.base import Storage
from likeness.storage.layout import dataset_prefix, job_prefix, model_prefix, tenant_prefix


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class SubjectFingerprint:
    """Content hashes of a subject's files (photos, crops, checkpoints, weights, exports, validation and gallery
    images) and the ids that name its resources."""

    hashes: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    files: int = 0
    #: Files whose content also exists outside the subject (an identical marker file, say): not evidence.
    shared_content: int = 0


def subject_keys(
    storage: Storage,
    tenant: str,
    dataset_ids: Iterable[str],
    job_ids: Iterable[str],
    model_ids: Iterable[str],
    prompt_ids: Iterable[str],
) -> list[str]:
    """Every storage key of the subject: its dataset, jobs and models, and its gallery entries' images."""
    keys: list[str] = []
    for prefix in (
        *(dataset_prefix(tenant, i) for i in dataset_ids),
        *(job_prefix(tenant, i) for i in job_ids),
        *(model_prefix(tenant, i) for i in model_ids),
    ):
        keys.extend(storage.list(prefix))
    prompts = set(prompt_ids)
    for key in storage.list(f"{tenant_prefix(tenant)}/gallery"):
        if Path(key).stem in prompts:
            keys.append(key)
    return keys


def fingerprint(
    storage: Storage,
    tenant: str,
    *,
    dataset_ids: Iterable[str],
    job_ids: Iterable[str],
    model_ids: Iterable[str],
    prompt_ids: Iterable[str] = (),
    uploaded: Iterable[bytes] = (),
) -> SubjectFingerprint:
    """Hash every file of the subject (and the photos as uploaded) before it is erased."""
    ids = {*dataset_ids, *job_ids, *model_ids, *prompt_ids}
    keys = subject_keys(storage, tenant, dataset_ids, job_ids, model_ids, prompt_ids)
    contents = storage.read_many(keys)
    hashes = {sha256(data) for data in contents.values()} | {sha256(data) for data in uploaded}
    own = set(keys)
    elsewhere = {sha256(storage.read_bytes(key)) for key in storage.list("") if key not in own}
    result = SubjectFingerprint(hashes - elsewhere, ids, files=len(keys))
    result.shared_content = len(hashes & elsewhere)
    return result


def residue(subject: SubjectFingerprint, storage: Storage, database_url: str, local_dirs: Iterable[Path]) -> list[str]:
    """Every place a copy of the subject's content, or one of its ids, is still found: storage keys, database
    rows (any table, the engines' own index tables too), files under `local_dirs`. The erasure record
    (`erasures`) holds the ids by design and is left out of the id check."""
    found: list[str] = []
    for key in storage.list(""):
        if sha256(storage.read_bytes(key)) in subject.hashes:
            found.append(f"storage {key}")
        elif any(i in key for i in subject.ids):
            found.append(f"storage key naming the subject: {key}")
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            for table in sa.inspect(connection).get_table_names():
                rows = connection.execute(sa.text(f'SELECT * FROM "{table}"')).all()
                for row in rows:
                    for value in row:
                        if isinstance(value, bytes | memoryview):
                            if sha256(bytes(value)) in subject.hashes:
                                found.append(f"database {table}: a copy of a subject file")
                        elif table != "erasures" and isinstance(value, str) and any(i in value for i in subject.ids):
                            found.append(f"database {table}: a row naming the subject")
    finally:
        engine.dispose()
    for root in local_dirs:
        for path in Path(root).rglob("*"):
            if path.is_file() and sha256(path.read_bytes()) in subject.hashes:
                found.append(f"disk {path}")
    return sorted(set(found))


def still_present(subject: SubjectFingerprint, storage: Storage) -> int:
    """How many of the subject's hashes storage still holds (an untouched subject: all of them)."""
    held = {sha256(storage.read_bytes(key)) for key in storage.list("")}
    return len(subject.hashes & held)
