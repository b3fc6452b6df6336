"""Job records across restarts, without running any worker: recovery order, idempotency, events."""

from __future__ import annotations

import pytest
from trainer_helpers import photos

from likeness.dataset.options import PhotoInput, PrepareOptions
from likeness.errors import ResourceExhausted
from likeness.models.catalog import BaseModelCatalog
from likeness.storage.local import LocalStorage
from likeness.trainer.jobs import CANCELLED, QUEUED, RUNNING, DeviceSlot, JobManager, WorkerOptions

SPEC = {"base_model": "tiny-sd15", "class_noun": "dog", "hyperparameters": {"max_train_steps": 5}}


def manager(tmp_path, trainer_cache, capacity: int = 4) -> JobManager:
    """A manager whose runners are never started: jobs stay where the test puts them."""
    storage = LocalStorage(tmp_path / "storage")
    catalog = BaseModelCatalog(cache_dir=trainer_cache / "base-models")
    worker = WorkerOptions(str(tmp_path / "storage"), "", str(trainer_cache / "base-models"))
    return JobManager(storage, catalog, worker, slots=[DeviceSlot("cpu", "cpu")], queue_capacity=capacity)


def test_restart_requeues_running_jobs_first_then_queued_ones_in_creation_order(tmp_path, trainer_cache):
    first = manager(tmp_path, trainer_cache, capacity=3)
    inputs = [PhotoInput(name, data) for name, data in photos(3)]
    options = PrepareOptions(resolution=64, min_side=64)
    jobs = [
        first.create_job("default", SPEC, idempotency_key=f"key-{i}", photos=inputs, dataset_options=options)[0]
        for i in range(3)
    ]
    with pytest.raises(ResourceExhausted):
        first.create_job("default", SPEC, photos=inputs, dataset_options=options)
    assert [first.queue_position(job) for job in jobs] == [1, 2, 3]
    cancelled = first.cancel_job("default", jobs[0].job_id)
    assert cancelled.state == CANCELLED and first.queue_position(jobs[1]) == 1
    # As if the trainer died while training the last job.
    jobs[2].state, jobs[2].start_time = RUNNING, jobs[2].create_time
    first.storage.write_json(f"tenants/default/jobs/{jobs[2].job_id}/job.json", jobs[2].to_dict())

    second = manager(tmp_path, trainer_cache)
    second.recover()
    restored = [second.get_job("default", job.job_id) for job in jobs]
    assert [job.state for job in restored] == [CANCELLED, QUEUED, RUNNING]
    assert second.queued_job_ids() == [jobs[2].job_id, jobs[1].job_id]
    again, existing = second.create_job("default", SPEC, idempotency_key="key-1")
    assert existing and again.job_id == jobs[1].job_id
    events = second.events.replay("default", jobs[0].job_id, 0)
    assert [(e["sequence"], e["state"]) for e in events] == [(1, QUEUED), (2, CANCELLED)]
    assert second.last_sequence(restored[0]) == 2
    page, token = second.list_jobs("default", page_size=2)
    assert [job.job_id for job in page] == [jobs[2].job_id, jobs[1].job_id] and token
