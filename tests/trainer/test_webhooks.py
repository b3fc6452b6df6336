"""Job webhooks. The outbox on SQLite and PostgreSQL: deliveries queued in the transaction of the job's events,
progress throttled, claims leased so replicas never send one delivery twice at once, attempts retried with
backoff and given up. The dispatcher against local receivers that fail, are down, stop resolving or resolve to a
private address. And through the real service with the toy model: a receiver gets every state change, signed;
a failing and slow one is retried and never delays the job; refused URLs are INVALID_ARGUMENT naming the field;
the deliveries show on the job and the secret never comes back."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import threading
import time

import pytest
import sqlalchemy as sa
from http_receiver import Received, Receiver, Reply
from trainer_helpers import BackgroundTrainer, job_spec, photo_bytes, photos, wait_for

from likeness import errors
from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.controlplane.schema import job_webhooks, webhook_deliveries
from likeness.net.egress import EgressPolicy, EgressUnresolved, parse_cidrs
from likeness.server.settings import Settings
from likeness.trainer.config import TrainingConfig
from likeness.trainer.leases import LeaseQueue
from likeness.trainer.states import JobState
from likeness.trainer.store import JobStore
from likeness.trainer.webhook_dispatcher import WebhookDispatcher
from likeness.trainer.webhooks import (
    PROGRESS_EVENT,
    STATE_CHANGED_EVENT,
    AttemptResult,
    DeliveryState,
    WebhookConfig,
    WebhookOutbox,
    WebhookView,
)
from likeness_client import LikenessClient
from likeness_client.v1 import trainer_service_pb2 as pb
from likeness_client.webhooks import verify

SECRET = "whsec-test-0123456789abcdef"
LOCAL = parse_cidrs("127.0.0.1/32", field="test")
SPEC = {"base_model": "tiny-sd15", "class_noun": "dog", "dataset_id": "ds-1", "hyperparameters": {"seed": 1}}
DELIVERED = pb.WEBHOOK_DELIVERY_STATE_DELIVERED


def config() -> TrainingConfig:
    return TrainingConfig.from_spec(SPEC, identifier="ohwx")


def make_due(database: Database) -> None:
    """Every retrying delivery is due now (instead of after its backoff)."""
    with database.transaction() as connection:
        connection.execute(
            sa.update(webhook_deliveries)
            .where(webhook_deliveries.c.state == DeliveryState.RETRYING.value)
            .values(next_attempt_time=0.0)
        )


# ---- the outbox, on SQLite and PostgreSQL -------------------------------------------------------------------


def test_events_queue_their_deliveries_progress_is_throttled_and_deleting_the_job_removes_them(database):
    store, outbox, queue = JobStore(database), WebhookOutbox(database), LeaseQueue(database, lease_seconds=15)
    hook = WebhookConfig("https://hooks.example/likeness", SECRET, send_progress=True, progress_interval_seconds=3600)
    assert SECRET not in repr(hook)
    job, _ = store.create("acme", config(), capacity=10, webhook=hook)
    plain, _ = store.create("acme", config(), capacity=10)
    lease = queue.claim("worker-1")
    assert lease is not None and lease.job_id == job.job_id
    for step in (1, 2, 3):
        queue.record_progress(lease, {"step": step, "total_steps": 3, "loss": 0.25, "eta_seconds": 3 - step})
    queue.finish(lease, JobState.FAILED, "out of memory")

    # QUEUED, RUNNING, the first progress (the next two fall inside the interval), FAILED; none for `plain`.
    assert [kind for kind, _, _ in outbox.states(job.job_id)] == [
        STATE_CHANGED_EVENT,
        STATE_CHANGED_EVENT,
        PROGRESS_EVENT,
        STATE_CHANGED_EVENT,
    ]
    assert outbox.states(plain.job_id) == [] and plain.job_id not in outbox.for_jobs([plain.job_id])
    shown = outbox.for_jobs([job.job_id, plain.job_id])[job.job_id]
    assert shown.webhook == WebhookView("https://hooks.example/likeness", True, 3600)
    assert [d.sequence for d in shown.deliveries] == sorted((d.sequence for d in shown.deliveries), reverse=True)
    assert {d.state for d in shown.deliveries} == {DeliveryState.PENDING}

    bodies = [json.loads(claimed.body) for claimed in outbox.claim("replica-a", 10, 30)]
    assert [(b["type"], b["state"]) for b in bodies] == [
        (STATE_CHANGED_EVENT, "QUEUED"),
        (STATE_CHANGED_EVENT, "RUNNING"),
        (PROGRESS_EVENT, "RUNNING"),
        (STATE_CHANGED_EVENT, "FAILED"),
    ]
    assert bodies[2]["progress"] == {"step": 1, "total_steps": 3, "loss": 0.25, "eta_seconds": 2}
    assert bodies[3]["error"] == "out of memory" and bodies[3]["progress"]["step"] == 3
    assert all(b["job_id"] == job.job_id and b["timestamp"].endswith("Z") for b in bodies)
    assert [b["sequence"] for b in bodies] == sorted(b["sequence"] for b in bodies)

    store.delete_job("acme", job.job_id)
    with database.read() as connection:
        for table in (job_webhooks, webhook_deliveries):
            assert connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0


def test_claims_are_leased_so_replicas_never_send_one_delivery_at_the_same_time(database):
    store, outbox = JobStore(database), WebhookOutbox(database)
    hook = WebhookConfig("https://hooks.example/x", SECRET)
    jobs = [store.create("acme", config(), capacity=10, webhook=hook)[0].job_id for _ in range(4)]
    barrier = threading.Barrier(2)

    def claim(owner: str) -> list[str]:
        barrier.wait()
        return [claimed.delivery_id for claimed in outbox.claim(owner, 2, 30)]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first, second = pool.map(claim, ["replica-a", "replica-b"])
    assert len(first) == len(second) == 2 and not set(first) & set(second)
    assert outbox.claim("replica-c", 10, 30) == []  # all four are leased

    # A replica that died mid-send: its lease expires and the delivery is due again, for someone else.
    with database.transaction() as connection:
        connection.execute(
            sa.update(webhook_deliveries).where(webhook_deliveries.c.job_id == jobs[0]).values(lease_expires_at=0.0)
        )
    (taken_over,) = outbox.claim("replica-c", 10, 30)
    assert taken_over.job_id == jobs[0] and taken_over.secret == SECRET and SECRET not in repr(taken_over)
    # The old owner's late result records nothing; the new owner's does.
    failure = AttemptResult(False, http_status=500, error="the receiver answered 500")
    assert outbox.record(taken_over, "replica-a", failure, max_attempts=2, backoff_seconds=60) == DeliveryState.RETRYING
    assert outbox.states(jobs[0]) == [(STATE_CHANGED_EVENT, "PENDING", 0)]
    outbox.record(taken_over, "replica-c", failure, max_attempts=2, backoff_seconds=60)
    assert outbox.states(jobs[0]) == [(STATE_CHANGED_EVENT, "RETRYING", 1)]
    (view,) = outbox.for_jobs([jobs[0]])[jobs[0]].deliveries
    assert view.next_attempt_time is not None and view.last_attempt_time is not None
    assert 59 < view.next_attempt_time - view.last_attempt_time < 61  # the backoff, on the database's clock
    assert outbox.claim("replica-c", 10, 30) == []  # not due before its backoff
    make_due(database)
    (again,) = outbox.claim("replica-c", 10, 30)
    assert outbox.record(again, "replica-c", failure, max_attempts=2, backoff_seconds=60) == DeliveryState.FAILED
    assert outbox.states(jobs[0]) == [(STATE_CHANGED_EVENT, "FAILED", 2)]
    make_due(database)
    assert outbox.claim("replica-c", 10, 30) == []  # FAILED is final


# ---- the dispatcher against local receivers ------------------------------------------------------------------


def test_the_dispatcher_retries_with_backoff_and_fails_what_is_down_unresolvable_or_refused(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'likeness.db'}")
    migrate(database)
    store, outbox = JobStore(database), WebhookOutbox(database)
    attempts: collections.Counter[str] = collections.Counter()

    def flaky(request: Received) -> Reply:
        attempts[request.headers["webhook-id"]] += 1
        return Reply(500) if attempts[request.headers["webhook-id"]] == 1 else Reply(200)

    def resolver(host: str, port: int) -> list[str]:
        if host == "gone.test":
            raise EgressUnresolved(f"host {host!r} does not resolve (Name or service not known)")
        return ["10.0.0.7"]  # rebound.test: resolves to a private address by the time it is sent

    with Receiver(flaky) as receiver, Receiver() as down:
        pass_url, down_url = receiver.url(), down.url()
        down.close()
        urls = {"flaky": pass_url, "down": down_url, "gone": "http://gone.test/hook", "rebound": "http://rebound.test/"}
        jobs = {
            name: store.create("acme", config(), capacity=10, webhook=WebhookConfig(url, SECRET))[0].job_id
            for name, url in urls.items()
        }
        dispatcher = WebhookDispatcher(
            outbox,
            EgressPolicy(allow=LOCAL, resolver=resolver),
            timeout_seconds=2,
            max_attempts=3,
            backoff_seconds=0.05,
            poll_seconds=0.05,
        )
        dispatcher.start()
        try:
            wait_for(
                lambda: all(outbox.states(job)[0][1] in ("DELIVERED", "FAILED") for job in jobs.values()),
                30,
                what="every delivery to end",
            )
        finally:
            dispatcher.stop()
        (request_1, request_2) = receiver.requests
    assert [outbox.states(jobs[name])[0][1:] for name in urls] == [
        ("DELIVERED", 2),
        ("FAILED", 3),
        ("FAILED", 3),
        ("FAILED", 1),  # a refused address is never retried
    ]
    errors_by_job = {
        name: outbox.for_jobs([job])[job].deliveries[0].last_error for name, job in jobs.items() if name != "flaky"
    }
    assert "cannot connect" in errors_by_job["down"]
    assert "'gone.test' does not resolve" in errors_by_job["gone"]
    assert (
        "refused" in errors_by_job["rebound"]
        and "rebound.test resolves to a private address" in errors_by_job["rebound"]
    )
    assert "10.0.0.7" not in errors_by_job["rebound"]  # the cluster's DNS answers are not shown to callers
    # Both attempts carry the same delivery id and body, each signed with the job's secret.
    assert request_1.headers["webhook-id"] == request_2.headers["webhook-id"] and request_1.body == request_2.body
    assert verify(SECRET, request_2.headers, request_2.body)["state"] == "QUEUED"
    assert request_2.headers["content-type"] == "application/json"
    database.dispose()


# ---- through the service, with the toy model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory, trainer_cache):
    """The trainer (role all, CPU) allowing webhooks and photo URLs on 127.0.0.1, with tiny backoff and limits."""
    root = tmp_path_factory.mktemp("webhooks")
    settings = Settings(
        storage_url=str(root / "storage"),
        cache_dir=str(trainer_cache),
        device="cpu",
        trainer_progress_interval_seconds=0.0,
        webhook_allow_cidrs="127.0.0.1/32",
        webhook_timeout_seconds=1.0,
        webhook_backoff_seconds=0.3,
        webhook_max_attempts=4,
        fetch_allow_cidrs="127.0.0.1/32",
        fetch_max_mb=1,
        fetch_timeout_seconds=1.0,
    )
    server = BackgroundTrainer(settings)
    with LikenessClient(server.address, timeout=120) as client:
        yield client
    server.close()


def photo_server() -> Receiver:
    return Receiver(lambda request: Reply(200, photo_bytes(int(request.path[-5])), {"content-type": "image/png"}))


def test_a_receiver_gets_every_state_change_signed_retried_with_backoff_without_delaying_the_job(service, caplog):
    caplog.set_level("DEBUG")
    client = service
    attempts: collections.Counter[str] = collections.Counter()

    def failing_then_slow_then_fine(request: Received) -> Reply:
        delivery = request.headers["webhook-id"]
        attempts[delivery] += 1
        # 503 first, then slower than the 1 s limit, then fine: every delivery takes three attempts.
        return {1: Reply(503), 2: Reply(204, delay=2.0)}.get(attempts[delivery], Reply(204))

    with Receiver(failing_then_slow_then_fine) as receiver, photo_server() as photo_host:
        # Photos by URL, fetched through the same egress guard.
        options = pb.DatasetOptions(photo_uris=[photo_host.url(f"/rex/{i}.png") for i in range(3)])
        webhook = pb.Webhook(url=receiver.url(), secret=SECRET, send_progress=True, progress_interval_seconds=1)
        created = client.create_training_job(job_spec(steps=2), dataset_options=options, webhook=webhook)
        job_id = created.job.job_id
        events = list(client.watch_training_job(job_id, timeout=300))
        assert events[-1].state_changed.state == pb.JOB_STATE_SUCCEEDED
        # The job ended while its last delivery still waits for the receiver: training never waits for it.
        at_success = client.get_training_job(job_id).webhook_deliveries[0]
        assert at_success.event_type == STATE_CHANGED_EVENT and at_success.state != DELIVERED
        job = wait_for(
            lambda: (
                (found := client.get_training_job(job_id)).webhook_deliveries
                and all(d.state == DELIVERED for d in found.webhook_deliveries)
                and found
            ),
            60,
            what="every delivery",
        )
        requests = list(receiver.requests)
    received = [verify(SECRET, request.headers, request.body) for request in requests]
    # One event per delivery (its attempts carry the same body), in the job's order.
    by_delivery = {request.headers["webhook-id"]: event for request, event in zip(requests, received, strict=True)}
    by_sequence = sorted(by_delivery.values(), key=lambda event: event["sequence"])
    assert [e["state"] for e in by_sequence if e["type"] == STATE_CHANGED_EVENT] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    final = by_sequence[-1]
    assert final["subject_model_id"] == job.subject_model_id and final["error"] == "" and final["progress"]["step"] == 2
    progress = [e for e in by_sequence if e["type"] == PROGRESS_EVENT]
    assert progress and progress[0]["progress"]["step"] == 1 and progress[0]["progress"]["total_steps"] == 2
    # Each carries the job event's sequence; each delivery arrived once per attempt, the same body every time.
    stored = {event.sequence: event.WhichOneof("event") for event in events}
    assert all(stored[e["sequence"]] == e["type"].removeprefix("training_job.") for e in received)
    deliveries = list(job.webhook_deliveries)
    assert sorted(attempts.values()) == [3] * len(deliveries) and len(deliveries) >= 4
    for delivery in deliveries:
        mine = [r for r in requests if r.headers["webhook-id"] == delivery.delivery_id]
        assert len(mine) == 3 and len({r.body for r in mine}) == 1
        # 0.3 s after the 503, then 0.6 s after the timed-out attempt (1 s limit) ended.
        assert mine[1].time - mine[0].time >= 0.25 and mine[2].time - mine[1].time >= 1.0 + 0.4

    assert job.webhook == pb.Webhook(url=receiver.url(), send_progress=True, progress_interval_seconds=1)
    assert [d.sequence for d in deliveries] == sorted((d.sequence for d in deliveries), reverse=True)
    assert all(d.attempts == 3 and d.last_http_status == 204 and d.last_error == "" for d in deliveries)
    assert all(d.last_attempt_time.seconds and not d.HasField("next_attempt_time") for d in deliveries)
    listed = {j.job_id: j for j in client.list_training_jobs().jobs}[job_id]
    assert listed.webhook.url == receiver.url() and len(listed.webhook_deliveries) == len(deliveries)

    # The secret is write-only: in no response, no watch event and no log line.
    answers = [created, job, listed, *events, client.list_training_jobs()]
    assert not any(SECRET.encode() in answer.SerializeToString() for answer in answers)
    assert SECRET not in caplog.text


def test_refused_webhooks_are_invalid_argument_naming_the_field(service):
    client = service
    before = len(client.list_training_jobs(page_size=100).jobs)
    cases = {
        ("http://127.0.0.2:8080/hook", SECRET): ("webhook.url", "loopback"),  # loopback outside the allowed /32
        ("https://10.1.2.3/hook", SECRET): ("webhook.url", "private"),
        ("http://169.254.169.254/latest/meta-data/", SECRET): ("webhook.url", "link-local"),
        ("https://[::1]/hook", SECRET): ("webhook.url", "loopback"),
        ("ftp://hooks.example/x", SECRET): ("webhook.url", "https://"),
        ("", SECRET): ("webhook.url", "https://"),
        ("https://user:pw@127.0.0.1/x", SECRET): ("webhook.url", "user name or password"),
        ("http://127.0.0.1:9/hook", "too-short"): ("webhook.secret", "16"),
        ("http://127.0.0.1:9/hook", "whsec_too-short!not-base64"): ("webhook.secret", "base64"),
    }
    for (url, secret), (field, why) in cases.items():
        with pytest.raises(errors.InvalidArgument) as caught:
            client.create_training_job(job_spec(), photos=photos(3), webhook=pb.Webhook(url=url, secret=secret))
        assert caught.value.field == field and why in caught.value.message, (url, caught.value)
        if why in ("loopback", "private", "link-local"):
            assert "--webhook-allow-cidrs" in caught.value.message  # says how an operator would allow it
        assert "too-short" not in str(caught.value)
    bad_interval = pb.Webhook(url="http://127.0.0.1:9/hook", secret=SECRET, progress_interval_seconds=-1)
    with pytest.raises(errors.InvalidArgument) as caught:
        client.create_training_job(job_spec(), photos=photos(3), webhook=bad_interval)
    assert caught.value.field == "webhook.progress_interval_seconds"
    assert len(client.list_training_jobs(page_size=100).jobs) == before  # nothing queued


def test_photos_by_url_are_fetched_within_limits_and_refused_with_the_uri_named(service):
    client = service
    big = b"\x89PNG" + b"\0" * (1024 * 1024 + 10)

    special = {
        "big.png": Reply(200, big, {"content-type": "image/png"}),
        "slow.png": Reply(200, photo_bytes(0), {"content-type": "image/png"}, delay=3.0),
        "page.png": Reply(200, b"<html>log in</html>", {"content-type": "text/html; charset=utf-8"}),
        "missing.png": Reply(404),
    }

    def respond(request: Received) -> Reply:
        name = request.path.rsplit("/", 1)[-1]
        if name in special:
            return special[name]
        index = 3 if request.path == "/b/1.png" else int(name[0])  # /a/1.png and /b/1.png: two different photos
        return Reply(200, photo_bytes(index), {"content-type": "image/png"})

    with Receiver(respond) as host:
        # Two URLs with one file name keep both photos, under names of their own.
        uris = [host.url("/a/1.png"), host.url("/b/1.png"), host.url("/2.png")]
        dataset = client.prepare_dataset([], pb.DatasetOptions(base_model="tiny-sd15", photo_uris=uris)).dataset
        assert dataset.image_count == 3
        assert sorted(r.file_name for r in dataset.reports) == ["1-2.png", "1.png", "2.png"]
        cases = {
            host.url("/big.png"): "bytes, over the 1 MiB limit",
            host.url("/slow.png"): "timed out",
            host.url("/page.png"): "text/html, not an image",
            host.url("/missing.png"): "HTTP 404",
            f"http://127.0.0.2:{host.port}/1.png": "loopback",  # not in --fetch-allow-cidrs
            "http://10.0.0.1/1.png": "private",
            "https://169.254.169.254/1.png": "link-local",
            "s3://some-bucket/tenants/default/1.png": "does not keep its storage in S3",
            "gs://bucket/1.png": "scheme",
        }
        for uri, why in cases.items():
            with pytest.raises(errors.InvalidArgument) as caught:
                client.prepare_dataset(
                    [], pb.DatasetOptions(base_model="tiny-sd15", photo_uris=[host.url("/0.png"), uri])
                )
            assert caught.value.field == "options.photo_uris" and uri in caught.value.message, caught.value
            assert why in caught.value.message, caught.value
        started = time.monotonic()
        with pytest.raises(errors.InvalidArgument, match="timed out"):
            client.prepare_dataset([], pb.DatasetOptions(base_model="tiny-sd15", photo_uris=[host.url("/slow.png")]))
        assert time.monotonic() - started < 2.8  # the 1 s limit, not the server's 3 s
