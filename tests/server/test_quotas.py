"""Per-tenant quotas: the counters on SQLite and PostgreSQL, concurrent replicas never overshooting, overrides,
and RESOURCE_EXHAUSTED with RetryInfo and QuotaFailure through the real trainer and inference services."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from likeness import errors
from likeness.api.status import STATUS_DETAILS_KEY
from likeness.cli.main import main
from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.identity.keys import ApiKeys
from likeness.identity.quotas import QuotaLimits, Quotas
from likeness.server.embedded import EmbeddedServer
from likeness.server.settings import Settings
from likeness.trainer.config import TrainingConfig
from likeness.trainer.store import JobStore
from likeness_client import LikenessClient
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import types_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from trainer_helpers import photos


def config() -> TrainingConfig:
    spec = {"base_model": "tiny-sd15", "class_noun": "dog", "dataset_id": "ds-1", "hyperparameters": {"seed": 1}}
    return TrainingConfig.from_spec(spec, identifier="ohwx")


def test_images_per_minute_hold_over_concurrent_replicas(database) -> None:
    # Four "replicas" (each its own Quotas object) race for 10 images a minute in requests of 1 image.
    replicas = [Quotas(database, QuotaLimits(images_per_minute=10)) for _ in range(4)]
    admitted, refused = [], []
    lock = threading.Lock()

    def spend(quotas: Quotas) -> None:
        for _ in range(5):
            try:
                quotas.consume_images("acme", 1)
                outcome = admitted
            except errors.ResourceExhausted as error:
                assert error.quota == "images_per_minute" and 1 <= error.retry_after <= 60
                outcome = refused
            with lock:
                outcome.append(1)

    threads = [threading.Thread(target=spend, args=(quotas,)) for quotas in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(admitted), len(refused)) == (10, 10)
    replicas[0].consume_images("other-tenant", 10)  # tenants count apart
    with pytest.raises(errors.ResourceExhausted, match="ask for fewer"):
        replicas[0].consume_images("acme", 11)


def test_job_and_model_quotas_count_in_the_creating_transaction(database) -> None:
    quotas = Quotas(database, QuotaLimits(max_active_jobs=2), cache_seconds=0)
    store = JobStore(database, quotas)
    store.create("acme", config(), capacity=100)
    store.create("acme", config(), capacity=100)
    with pytest.raises(errors.ResourceExhausted, match="2 queued or running") as raised:
        store.create("acme", config(), capacity=100)
    assert raised.value.quota == "max_active_jobs" and raised.value.retry_after > 0
    store.create("beta", config(), capacity=100)  # another tenant is not affected
    # An override raises one tenant's limit; 0 lifts it; None falls back to the default again.
    assert quotas.set_override("acme", max_active_jobs=3).max_active_jobs == 3
    store.create("acme", config(), capacity=100)
    quotas.set_override("acme", max_active_jobs=None, max_subject_models=3)
    with pytest.raises(errors.ResourceExhausted) as raised:
        store.create("acme", config(), capacity=100)  # 3 jobs in flight will publish 3 models
    assert raised.value.quota in ("max_active_jobs", "max_subject_models")
    quotas.set_override("acme", max_active_jobs=0, max_subject_models=0)
    store.create("acme", config(), capacity=100)
    assert quotas.overrides()["acme"] == QuotaLimits(0, 0, 0)
    with pytest.raises(errors.InvalidArgument):
        quotas.set_override("acme", images_per_minute=-1)


def _details(error: grpc.RpcError) -> tuple[float, str]:
    (raw,) = [value for key, value in error.trailing_metadata() if key == STATUS_DETAILS_KEY]
    status = status_pb2.Status.FromString(raw)
    retry, failure = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert any(detail.Unpack(retry) for detail in status.details)
    assert any(detail.Unpack(failure) for detail in status.details)
    return retry.retry_delay.ToNanoseconds() / 1e9, failure.violations[0].subject


def test_quotas_answer_resource_exhausted_with_retry_info(tmp_path) -> None:
    settings = Settings(
        storage_url=str(tmp_path / "storage"),
        cache_dir=str(tmp_path / "cache"),
        database_url=f"sqlite:///{tmp_path / 'likeness.db'}",
        auth="api-key",
        device="cpu",
        role="api",  # jobs stay queued: no worker trains them
        quota_active_jobs=1,
        quota_images_per_minute=2,
    )
    database = Database(settings.database_url)
    migrate(database)
    key = ApiKeys(database).create("acme")[1]
    database.dispose()
    with (
        EmbeddedServer(settings, ["trainer", "inference"]) as server,
        # The server's own answer: without the client's automatic retry, which waits out a delay of 10 s or less
        # (the per-minute window may be about to roll over) and then succeeds (test_retry_policy.py).
        LikenessClient(server.address, api_key=key, timeout=120, retries=False) as client,
    ):
        spec = trainer_pb.TrainingJobSpec(
            base_model="toy-sd15",
            class_noun="dog",
            method=types_pb2.TRAINING_METHOD_LORA,
            hyperparameters=trainer_pb.Hyperparameters(max_train_steps=2, seed=1),
        )
        client.create_training_job(spec, photos=photos(3))
        with pytest.raises(errors.ResourceExhausted, match="quota is 1") as raised:
            client.create_training_job(spec, photos=photos(3))
        assert raised.value.retry_after == 30.0
        cause = raised.value.__cause__
        assert _details(cause) == (30.0, "max_active_jobs")

        parameters = types_pb2.GenerationParameters(num_inference_steps=1, seed=1)
        client.generate(prompt="a lighthouse", parameters=parameters, num_images=2)
        with pytest.raises(errors.ResourceExhausted, match="2 images per minute") as raised:
            client.generate(prompt="a lighthouse", parameters=parameters, num_images=1)
        delay, quota = _details(raised.value.__cause__)
        assert quota == "images_per_minute" and 1 <= delay <= 60
        assert client.is_serving()  # the service keeps serving


def test_quotas_cli_sets_and_lists_overrides(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'likeness.db'}"
    assert main(["quotas", "set", "--database-url", url, "--tenant", "acme", "--active-jobs", "4"]) == 0
    assert main(["quotas", "set", "--database-url", url, "--tenant", "acme", "--images-per-minute", "60"]) == 0
    capsys.readouterr()
    assert main(["quotas", "list", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "acme" in out and "4" in out and "60" in out
    assert main(["quotas", "set", "--database-url", url, "--tenant", "acme", "--active-jobs", "-2"]) != 0
