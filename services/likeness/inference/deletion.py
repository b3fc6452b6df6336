"""Deleting a subject model: what the trainer published for it, what the gallery recorded with it, and every
copy inference replicas hold."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa

from likeness.controlplane.schema import subject_models
from likeness.storage.base import Storage
from likeness.storage.layout import model_prefix

if TYPE_CHECKING:
    from likeness.inference.gallery_link import GalleryLink
    from likeness.inference.repository import ModelRepository

log = logging.getLogger(__name__)


class SubjectDeletion(NamedTuple):
    model_id: str
    files_removed: int
    gallery_entries_removed: int


def delete_subject_model(
    repository: ModelRepository, storage: Storage, gallery: GalleryLink, tenant: str, model_id: str
) -> SubjectDeletion:
    """Delete a published subject model of `tenant`. NotFound for unknown ids, other tenants' and deleted ones.

    Order: the manifest goes first (`delete_prefix` removes the marker before the files), so no replica can
    start loading a half-deleted model; then the database record and the gallery entries generated with it;
    then this replica's cached copy (a batch using it finishes first). Other replicas forget it at their next
    sweep (`sweep_subjects`).
    """
    repository.manifest(tenant, model_id, field="model_id")  # NotFound unless published and the tenant's
    removed = storage.delete_prefix(model_prefix(tenant, model_id))
    with gallery.database().transaction() as connection:
        connection.execute(
            sa.delete(subject_models).where(subject_models.c.tenant == tenant, subject_models.c.model_id == model_id)
        )
    entries = gallery.store().delete_by_subject(tenant, model_id)
    repository.forget_subject(tenant, model_id)
    log.info("subject model deleted", extra={"model_id": model_id, "files": removed, "gallery": entries.entries})
    return SubjectDeletion(model_id, removed + entries.files_removed, entries.entries)


def sweep_subjects(sweep_deleted: Callable[[], object], stop: threading.Event, interval_seconds: float) -> None:
    """Forget subjects deleted through other replicas (`sweep_deleted()`, e.g. `InferenceEngine.sweep_deleted`),
    every `interval_seconds`, until `stop` is set."""
    while not stop.wait(interval_seconds):
        try:
            sweep_deleted()
        except Exception:  # storage briefly unreachable: the next sweep tries again
            log.warning("subject sweep failed", exc_info=True)
