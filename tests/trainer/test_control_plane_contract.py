"""The control-plane contract, run against SQLite and a real PostgreSQL alike: migrations, jobs, idempotency,
capacity, the claim order, leases and fencing, gap-free events, cancellation and watching."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from likeness.controlplane.database import Database
from likeness.controlplane.migrate import current_revision, head_revision, migrate
from likeness.controlplane.schema import include_in_schema_comparison, job_events, job_leases, metadata
from likeness.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from likeness.trainer.config import TrainingConfig
from likeness.trainer.leases import LeaseQueue
from likeness.trainer.states import JobEventType, JobState, StopRequest
from likeness.trainer.store import STOP_CHANNEL, WORK_CHANNEL, JobStore, LeaseLost
from likeness.trainer.watch import EventFollower

SPEC = {"base_model": "tiny-sd15", "class_noun": "dog", "dataset_id": "ds-1", "hyperparameters": {"seed": 1}}


def config() -> TrainingConfig:
    return TrainingConfig.from_spec(SPEC, identifier="ohwx")


@pytest.fixture
def store(database) -> JobStore:
    return JobStore(database)


def test_migrations_are_idempotent_and_a_newer_schema_refuses_to_start(database):
    assert current_revision(database) == head_revision()
    assert migrate(database) == head_revision()  # a second replica starting finds nothing to do
    with database.transaction() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d'"))
    with pytest.raises(FailedPrecondition, match="newer than this build"):
        migrate(database)


def test_the_migrated_schema_is_the_schema_the_code_declares(database):
    # A change to likeness/controlplane/schema.py without a new migration revision fails here.
    with database.transaction() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": include_in_schema_comparison})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_unreachable_database_names_the_host_and_never_the_password():
    db = Database("postgresql://likeness:s3cret-pw@127.0.0.1:1/likeness")
    with pytest.raises(Unavailable) as caught:
        migrate(db)
    assert "127.0.0.1:1" in caught.value.message and "s3cret-pw" not in caught.value.message
    with pytest.raises(InvalidArgument, match="database_url"):
        Database("mysql://x@y/z")


def test_create_idempotency_capacity_listing_and_cancel_of_queued_jobs(store):
    first, existing = store.create("default", config(), capacity=2, idempotency_key="key-1")
    assert not existing and first.state == JobState.QUEUED and first.last_sequence == 1
    again, existing = store.create("default", config(), capacity=2, idempotency_key="key-1")
    assert existing and again.job_id == first.job_id
    other_tenant, existing = store.create("acme", config(), capacity=3, idempotency_key="key-1")
    assert not existing and other_tenant.job_id != first.job_id  # keys are per tenant
    with pytest.raises(ResourceExhausted, match="queue is full"):
        store.create("default", config(), capacity=2)
    second, _ = store.create("default", config(), capacity=3, priority=5)
    assert store.queue_positions([first, second]) == {second.job_id: 1, first.job_id: 2}  # one queue, all tenants

    cancelled = store.request_cancel("default", first.job_id)
    assert cancelled.state == JobState.CANCELLED and cancelled.end_time is not None
    events = store.events_after(first.job_id, 0)
    assert [(e["sequence"], e["state"]) for e in events] == [(1, "QUEUED"), (2, "CANCELLED")]
    with pytest.raises(NotFound):
        store.get("acme", first.job_id)  # another tenant's job does not exist for it
    page, token = store.list("default", page_size=1)
    assert [r.job_id for r in page] == [second.job_id] and token
    rest, last = store.list("default", page_size=1, page_token=token)
    assert [r.job_id for r in rest] == [first.job_id] and not last
    with pytest.raises(InvalidArgument, match="page_token"):
        store.list("default", [JobState.CANCELLED], page_size=1, page_token=token)  # token of another filter
    assert [r.job_id for r in store.list("default", [JobState.CANCELLED])[0]] == [first.job_id]


def test_two_replicas_creating_with_the_same_key_at_the_same_instant_make_one_job(database):
    stores = [JobStore(Database(database.url)) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def create(store: JobStore):
        barrier.wait()
        return store.create("default", config(), capacity=100, idempotency_key="same-key")

    with concurrent.futures.ThreadPoolExecutor(len(stores)) as pool:
        results = list(pool.map(create, stores))
    assert len({record.job_id for record, _ in results}) == 1
    assert sorted(existing for _, existing in results) == [False, True, True, True]
    for store in stores:
        store.database.dispose()


def test_claims_take_priority_then_the_least_served_tenant_then_the_oldest(store, database):
    queue = LeaseQueue(database, lease_seconds=30)
    a1 = store.create("alpha", config(), capacity=10)[0]
    a2 = store.create("alpha", config(), capacity=10)[0]
    b1 = store.create("beta", config(), capacity=10)[0]
    urgent = store.create("beta", config(), capacity=10, priority=10)[0]
    order = [queue.claim(f"w{i}").job_id for i in range(4)]
    # Priority first; then alpha (nothing running) before beta (its urgent job runs); then one running each: the
    # tie goes to the oldest.
    assert order == [urgent.job_id, a1.job_id, a2.job_id, b1.job_id]
    assert queue.claim("w9") is None


def test_fair_share_prefers_a_tenant_with_nothing_running(store, database):
    queue = LeaseQueue(database, lease_seconds=30)
    hog = [store.create("hog", config(), capacity=10)[0] for _ in range(3)]
    small = store.create("small", config(), capacity=10)[0]
    assert queue.claim("w1").job_id == hog[0].job_id
    assert queue.claim("w2").job_id == small.job_id  # older hog jobs wait: hog already has one running


def test_concurrent_claims_lease_each_job_to_exactly_one_worker(database, store):
    jobs = {store.create("default", config(), capacity=50)[0].job_id for _ in range(12)}
    queues = [LeaseQueue(Database(database.url), lease_seconds=30) for _ in range(4)]
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def drain(index: int) -> None:
        while (lease := queues[index].claim(f"worker-{index}")) is not None:
            with lock:
                claimed.append((lease.job_id, lease.owner))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(drain, range(4)))
    assert sorted(job for job, _ in claimed) == sorted(jobs)
    for queue in queues:
        queue.database.dispose()


def test_an_expired_lease_moves_to_another_worker_and_fences_the_first(store, database):
    queue = LeaseQueue(database, lease_seconds=0.6)
    job = store.create("default", config(), capacity=5)[0]
    first = queue.claim("worker-a")
    assert first.fence == 1 and queue.heartbeat(first) is None
    queue.record_progress(first, {"step": 3, "loss": float("nan")})
    assert queue.claim("worker-b") is None  # held and heartbeating
    time.sleep(0.8)
    second = queue.claim("worker-b")
    assert second is not None and second.job_id == job.job_id and second.fence == 2 and second.resume_count == 1
    for late_write in (
        lambda: queue.heartbeat(first),
        lambda: queue.record_progress(first, {"step": 4}),
        lambda: queue.finish(first, JobState.SUCCEEDED),
    ):
        with pytest.raises(LeaseLost):
            late_write()
    queue.finish(second, JobState.FAILED, "boom")
    record = store.get("default", job.job_id)
    assert record.state == JobState.FAILED and record.error == "boom" and record.resume_count == 1
    assert record.progress == {"step": 3, "loss": None}  # NaN is stored as null
    events = store.events_after(job.job_id, 0)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    running = [e for e in events if e["type"] == "state_changed" and e["state"] == "RUNNING"]
    assert "resuming on worker-b" in running[1]["message"]
    with database.transaction() as connection:
        leases = connection.execute(sa.select(job_leases).order_by(job_leases.c.fence)).all()
        fences = [
            row.fence for row in connection.execute(sa.select(job_events.c.fence).order_by(job_events.c.sequence))
        ]
    assert [(row.worker_id, row.outcome) for row in leases] == [("worker-a", "expired"), ("worker-b", "failed")]
    assert leases[0].released_at <= leases[1].acquired_at  # never held by two at once
    assert fences == sorted(fences)  # nothing of the first worker was written after the second took over


def test_cancel_reaches_the_owning_worker_through_its_heartbeat(store, database):
    queue = LeaseQueue(database, lease_seconds=30)
    job = store.create("default", config(), capacity=5)[0]
    lease = queue.claim("worker-a")
    asked = store.request_cancel("default", job.job_id)
    assert asked.state == JobState.RUNNING and asked.stop_request == "cancel"
    assert queue.heartbeat(lease) == StopRequest.CANCEL
    queue.finish(lease, JobState.CANCELLED, "cancelled by a caller")
    assert store.get("default", job.job_id).state == JobState.CANCELLED


def test_a_preempted_job_goes_back_to_the_queue_and_resumes(store, database):
    queue = LeaseQueue(database, lease_seconds=30)
    job = store.create("default", config(), capacity=5)[0]
    lease = queue.claim("worker-a")
    queue.requeue(lease, "preempted")
    assert store.get("default", job.job_id).state == JobState.QUEUED
    again = queue.claim("worker-b")
    assert again.job_id == job.job_id and again.resume_count == 1


def test_succeeded_job_records_its_subject_model(store, database):
    queue = LeaseQueue(database, lease_seconds=30)
    job = store.create("default", config(), capacity=5)[0]
    lease = queue.claim("worker-a")
    model = {
        "model_id": job.model_id, "tenant": "default", "base_model": "tiny-sd15", "identifier": "ohwx",
        "class_noun": "dog", "method": "lora", "size_bytes": 1234,
    }  # fmt: skip
    queue.finish(lease, JobState.SUCCEEDED, subject_model=model)
    assert store.get_subject_model("default", job.model_id)["size_bytes"] == 1234
    kinds = [e["type"] for e in store.events_after(job.job_id, 0)]
    assert kinds[-2:] == [JobEventType.SUCCEEDED.value, JobEventType.STATE_CHANGED.value]


def test_watch_replays_then_follows_events_written_by_another_replica(store, database):
    job = store.create("default", config(), capacity=5)[0]
    writer = LeaseQueue(Database(database.url), lease_seconds=30)

    async def scenario():
        follower = EventFollower(JobStore(Database(database.url)), poll_seconds=0.05)
        await follower.start()
        seen = []

        async def consume():
            async for event in follower.watch(job.job_id, 0, ended=False):
                seen.append(event)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        lease = await asyncio.to_thread(writer.claim, "worker-a")
        for step in (1, 2, 3):
            await asyncio.to_thread(writer.record_progress, lease, {"step": step})
        await asyncio.to_thread(writer.finish, lease, JobState.FAILED, "stop")
        await asyncio.wait_for(task, 10)
        await follower.stop()
        return seen

    seen = asyncio.run(scenario())
    assert [e["sequence"] for e in seen] == list(range(1, 7))
    assert [e.get("step") for e in seen if e["type"] == "progress"] == [1, 2, 3]
    assert seen[-1]["state"] == "FAILED"
    writer.database.dispose()


def test_postgresql_announces_new_jobs_and_stop_requests_to_listening_workers(postgres_url):
    database = Database(postgres_url)
    migrate(database)
    store, queue = JobStore(database), LeaseQueue(database, lease_seconds=30)
    heard: list[tuple[str, str]] = []
    stop = threading.Event()
    listener = threading.Thread(
        target=database.listen, args=([WORK_CHANNEL, STOP_CHANNEL], lambda c, p: heard.append((c, p)), stop)
    )
    listener.start()
    try:
        time.sleep(0.5)  # LISTEN is in place
        job = store.create("default", config(), capacity=5)[0]
        deadline = time.monotonic() + 5
        while (WORK_CHANNEL, "") not in heard and time.monotonic() < deadline:
            time.sleep(0.02)
        queue.claim("worker-a")
        store.request_cancel("default", job.job_id)
        while (STOP_CHANNEL, job.job_id) not in heard and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        listener.join(5)
        database.dispose()
    assert (WORK_CHANNEL, "") in heard and (STOP_CHANNEL, job.job_id) in heard
