"""Subject model discovery: manifests found in shared storage, listings, and forgetting deleted subjects.

Subject models live in shared storage (`tenants/{tenant}/models/{model_id}/manifest.json`): a listing or a
request for an id not seen before reads storage, so models published after start-up are found without a restart.
The index holds one `SubjectEntry` per subject this replica knows; the subject cache (`subject_cache`) loads
them and, on eviction, puts a fresh entry in the place of a loaded one. `lock` guards the entries and the cache's
bookkeeping alike and is never held during I/O.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from diffusers import DiffusionPipeline

from likeness.errors import FailedPrecondition, InvalidArgument, NotFound
from likeness.inference.loading import FAILED, LOADED, NOT_LOADED
from likeness.inference.lora_layers import LoraLayers
from likeness.storage.base import Storage
from likeness.storage.layout import model_manifest_key, models_prefix, validate_resource_id
from likeness.storage.manifest import SubjectModelManifest, parse_rfc3339

log = logging.getLogger(__name__)


# eq=False: entries are compared and hashed by identity (a load in flight belongs to one entry, not to its key).
@dataclass(eq=False)
class SubjectEntry:
    """One subject model's state on this server. A new entry replaces an evicted one (see module doc)."""

    tenant: str
    model_id: str
    manifest: SubjectModelManifest | None
    state: str = NOT_LOADED
    failure_reason: str = ""
    failed_at: float = 0.0
    memory_bytes: int = 0
    size_bytes: int = 0
    load_seconds: float = 0.0
    # A LoRA subject's or style's layers on the device (routed per sample by the base model's router).
    lora: LoraLayers | None = None
    pipeline: DiffusionPipeline | None = None
    pins: int = 0
    # Evicted or unloaded while pinned: free the memory when the last pin goes.
    doomed: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.model_id)

    @property
    def method(self) -> str:
        return self.manifest.method if self.manifest else ""


@dataclass(frozen=True)
class SubjectStatus:
    """A subject model as listings report it."""

    model_id: str
    manifest: SubjectModelManifest | None
    state: str
    failure_reason: str
    memory_bytes: int
    size_bytes: int


class SubjectIndex:
    """The subject models this replica knows, discovered from storage (see module doc)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.lock = threading.Lock()
        self._subjects: dict[tuple[str, str], SubjectEntry] = {}
        self._manifest_failures: dict[tuple[str, str], str] = {}
        #: Under `lock`: ids of `tenant`'s loaded subjects, least recently used first (set by the subject cache).
        self.loaded_ids_locked: Callable[[str], list[str]] = lambda tenant: []

    def manifest(self, tenant: str, model_id: str, *, field: str = "subject_model_id") -> SubjectModelManifest:
        """The manifest of a published subject model, read from storage the first time it is asked for.

        NotFound when no such model is published; FailedPrecondition when its manifest is corrupt. Errors name
        `field`, the request field that carried the id (`model_id` for the Get/Load/Unload RPCs).
        """
        validate_resource_id(model_id, field=field)
        with self.lock:
            entry = self._subjects.get((tenant, model_id))
            if entry is not None and entry.manifest is not None:
                return entry.manifest
        key = model_manifest_key(tenant, model_id)
        try:
            data = self.storage.read_bytes(key)
        except NotFound:
            raise NotFound(
                f"subject model {model_id!r} does not exist; ListSubjectModels shows the published ones",
                field=field,
            ) from None
        try:
            manifest = SubjectModelManifest.from_json(data, source=key)
            if manifest.model_id != model_id or manifest.tenant != tenant:
                raise FailedPrecondition(
                    f"{key} is corrupt: it describes model {manifest.model_id!r} of tenant {manifest.tenant!r}"
                )
        except FailedPrecondition as exc:
            with self.lock:
                self._manifest_failures[(tenant, model_id)] = exc.message
            raise
        with self.lock:
            self._manifest_failures.pop((tenant, model_id), None)
            entry = self._subjects.get((tenant, model_id))
            if entry is None:
                entry = SubjectEntry(tenant, model_id, manifest)
                self._subjects[entry.key] = entry
            elif entry.manifest is None:
                entry.manifest = manifest
            assert entry.manifest is not None  # set above when it was missing
            return entry.manifest

    def entry(self, tenant: str, model_id: str, *, field: str = "subject_model_id") -> SubjectEntry:
        """The current entry of a published subject (reading its manifest first if needed)."""
        self.manifest(tenant, model_id, field=field)
        with self.lock:
            return self._subjects[(tenant, model_id)]

    def current_locked(self, key: tuple[str, str]) -> SubjectEntry:
        """Under `lock`: the entry new requests for `key` get."""
        return self._subjects[key]

    def replace_locked(self, entry: SubjectEntry) -> SubjectEntry:
        """Under `lock`: put a fresh, unloaded entry in the place of `entry` for new requests; returns it."""
        fresh = SubjectEntry(entry.tenant, entry.model_id, entry.manifest)
        self._subjects[entry.key] = fresh
        return fresh

    def forget_locked(self, key: tuple[str, str]) -> SubjectEntry | None:
        """Under `lock`: drop a subject's entry and manifest failure; returns the entry it had, if any."""
        self._manifest_failures.pop(key, None)
        return self._subjects.pop(key, None)

    def list_subjects(self, tenant: str, *, base_model: str = "", loaded_only: bool = False) -> list[SubjectStatus]:
        """Published subject models of `tenant` with their state, newest first; corrupt ones as FAILED."""
        statuses: dict[str, SubjectStatus] = {}
        if not loaded_only:
            for model_id in self.storage.list_dirs(models_prefix(tenant)):
                try:
                    # A corrupt manifest is not skipped: it is reported below as FAILED with its reason.
                    with contextlib.suppress(FailedPrecondition):
                        self.manifest(tenant, model_id)
                except (NotFound, InvalidArgument):
                    continue  # not published yet (no manifest), or a folder that is not a model
                statuses[model_id] = self.subject_status(tenant, model_id, read_storage=False)
        with self.lock:
            loaded_ids = self.loaded_ids_locked(tenant)
        for model_id in loaded_ids:
            statuses.setdefault(model_id, self.subject_status(tenant, model_id, read_storage=False))
        result = [
            status
            for status in statuses.values()
            if (not base_model or (status.manifest is not None and status.manifest.base_model == base_model))
            and (not loaded_only or status.state == LOADED)
        ]
        result.sort(key=lambda s: (s.manifest is not None, _created_key(s)), reverse=True)
        return result

    def subject_status(self, tenant: str, model_id: str, *, read_storage: bool = True) -> SubjectStatus:
        """One subject's status; NotFound when it is not published (and not loaded)."""
        if read_storage:
            # A corrupt manifest is reported as FAILED below.
            with contextlib.suppress(FailedPrecondition):
                self.manifest(tenant, model_id, field="model_id")
        with self.lock:
            failure = self._manifest_failures.get((tenant, model_id))
            entry = self._subjects.get((tenant, model_id))
            if entry is None:
                if failure is None:
                    raise NotFound(f"subject model {model_id!r} does not exist", field="model_id")
                return SubjectStatus(model_id, None, FAILED, failure, 0, 0)
            return status_of(entry)

    def sweep_deleted(self, forget: Callable[[str, str], object]) -> list[tuple[str, str]]:
        """Forget (with `forget(tenant, model_id)`) the subjects whose manifest left storage, deleted through
        another replica; returns them.

        Servers run this every `subject_sweep_seconds`, the bound on how long a deleted subject stays usable on
        a replica that did not delete it. One existence check per subject this replica knows."""
        with self.lock:
            known = [key for key, entry in self._subjects.items() if entry.manifest is not None]
        gone = [key for key in known if not self.storage.exists(model_manifest_key(*key))]
        for tenant, model_id in gone:
            forget(tenant, model_id)
            log.info("deleted subject forgotten", extra={"tenant": tenant, "model_id": model_id})
        return gone


def status_of(entry: SubjectEntry) -> SubjectStatus:
    return SubjectStatus(
        entry.model_id, entry.manifest, entry.state, entry.failure_reason, entry.memory_bytes, entry.size_bytes
    )


def _created_key(status: SubjectStatus) -> float:
    if status.manifest is None:
        return 0.0
    try:
        return parse_rfc3339(status.manifest.created_at).timestamp()
    except InvalidArgument:
        return 0.0
