"""Erasure through the real services on S3 (moto_server) with two inference replicas: after EraseSubject, no
byte-identical copy of any file of the subject (photos, crops, checkpoints, weights, validation and gallery
images) is left in shared storage, the database or either replica's disk cache, neither replica holds it in
memory, and another subject of the same tenant is untouched. Then a tenant's erasure, admin only."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from likeness import errors
from likeness.cli.main import main
from likeness.controlplane.database import Database
from likeness.identity.keys import ApiKeys
from likeness_client import LikenessClient
from likeness_client.v1 import trainer_service_pb2 as trainer_pb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from erasure_scan import fingerprint, residue, still_present
from erasure_scenario import SWEEP_SECONDS, TENANT, erasure_cluster, generate, loaded, spec, subject_photos, train
from s3_server import MotoUnavailable
from trainer_helpers import photo_bytes, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        with erasure_cluster(tmp_path_factory.mktemp("erasure")) as running:
            yield running
    except MotoUnavailable as error:
        pytest.skip(str(error))


def test_erasing_a_subject_leaves_no_copy_anywhere(cluster) -> None:
    a = LikenessClient(cluster.a.address, api_key=cluster.user_key, timeout=120)
    b = LikenessClient(cluster.b.address, api_key=cluster.user_key, timeout=120)
    storage = cluster.storage
    erased = train(a, 0, "a photo of a dog, erasure only")
    kept = train(a, 10, "a photo of a dog, kept")
    prompts = [generate(a, erased["model"], record=True), generate(b, erased["model"], record=True, seed=8)]
    generate(a, kept["model"], record=True)
    generate(b, kept["model"], record=False)
    assert erased["model"] in loaded(a) and erased["model"] in loaded(b)
    # A job still running on the photos when the erasure comes: it is cancelled first.
    running = a.create_training_job(spec(erased["dataset"], "a photo of a dog, erasure only", steps=2000)).job
    erased_files = fingerprint(
        storage,
        TENANT,
        dataset_ids=[erased["dataset"]],
        job_ids=[erased["job"], running.job_id],
        model_ids=[erased["model"]],
        prompt_ids=prompts,
        uploaded=[data for _, data in subject_photos(0)],
    )
    kept_files = fingerprint(
        storage, TENANT, dataset_ids=[kept["dataset"]], job_ids=[kept["job"]], model_ids=[kept["model"]]
    )
    assert erased_files.files >= 10 and len(erased_files.hashes) >= 10, erased_files
    # The scan finds the subject before the erasure: in storage, and in both replicas' disk caches.
    before = residue(erased_files, storage, cluster.database_url, cluster.local_dirs)
    assert any(place.startswith("storage") for place in before), before
    on_disk = [place for place in before if place.startswith("disk")]
    assert any("/cache-a/" in place for place in on_disk) and any("/cache-b/" in place for place in on_disk), before
    assert any(place.startswith("database") for place in before), before
    # A generation with the subject in flight on replica B while it is erased finishes or fails cleanly.
    outcome: list[object] = []
    in_flight = threading.Thread(target=lambda: outcome.append(_generate_outcome(b, erased["model"])))
    in_flight.start()

    receipt = a.erase_subject(model_id=erased["model"])
    in_flight.join(120)

    assert receipt.tenant == TENANT
    assert list(receipt.dataset_ids) == [erased["dataset"]]
    assert set(receipt.job_ids) == {erased["job"], running.job_id}
    assert erased["model"] in receipt.model_ids
    assert list(receipt.cancelled_job_ids) == [running.job_id]
    assert receipt.gallery_entries_removed == 2
    assert receipt.class_image_sets_removed == 1
    assert receipt.files_removed >= erased_files.files
    assert receipt.replica_cache_bound.ToTimedelta().total_seconds() == SWEEP_SECONDS
    assert outcome and outcome[0] in ("OK", "NOT_FOUND", "FAILED_PRECONDITION"), outcome

    # Both replicas forget it at their next subject sweep (the receipt's replica bound): A serves the trainer too,
    # but its inference engine learns of the erasure the same way B's does, so neither is asserted before it swept.
    for name, replica in (("A", a), ("B", b)):
        wait_for(
            lambda replica=replica: erased["model"] not in loaded(replica),
            10 * SWEEP_SECONDS + 5,
            what=f"replica {name} to forget the subject",
        )
    time.sleep(SWEEP_SECONDS * 2)  # the sweep's disk cleanup runs right after it forgets the subject
    found = residue(erased_files, storage, cluster.database_url, cluster.local_dirs)
    assert found == [], found
    # The other subject of the same tenant is whole and still serves from both replicas.
    assert still_present(kept_files, storage) == len(kept_files.hashes)
    generate(b, kept["model"], record=False)
    assert a.get_dataset(kept["dataset"]).dataset_id == kept["dataset"]
    # Every id of the erased subject is gone; erasing again changes nothing.
    for client in (a, b):
        with pytest.raises(errors.NotFound):
            generate(client, erased["model"], record=False)
    with pytest.raises(errors.NotFound):
        a.get_dataset(erased["dataset"])
    with pytest.raises(errors.NotFound):
        a.get_training_job(erased["job"])
    with pytest.raises(errors.NotFound):
        a.erase_subject(dataset_id=erased["dataset"])


def _generate_outcome(client: LikenessClient, model_id: str) -> str:
    try:
        generate(client, model_id, record=False)
        return "OK"
    except errors.LikenessError as error:
        return error.code.name  # type: ignore[attr-defined]


def test_erase_subject_needs_one_id(cluster) -> None:
    with grpc.insecure_channel(cluster.a.address) as channel:
        from likeness_client.v1 import trainer_service_pb2_grpc as trainer_grpc

        stub = trainer_grpc.TrainerServiceStub(channel)
        metadata = (("authorization", f"Bearer {cluster.user_key}"),)
        with pytest.raises(grpc.RpcError) as raised:
            stub.EraseSubject(trainer_pb.EraseSubjectRequest(), metadata=metadata)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "dataset_id, job_id or model_id" in raised.value.details()


def test_erasing_a_tenant_is_for_admins_and_takes_everything(cluster, capsys) -> None:
    tenant = "gone-co"
    database = Database(cluster.database_url)
    key = ApiKeys(database).create(tenant)[1]
    database.dispose()
    client = LikenessClient(cluster.a.address, api_key=key, timeout=120)
    subject = train(client, 20, "a photo of a dog, gone-co")
    client.record_prompt("a private lighthouse", subject_model_id=subject["model"], image=photo_bytes(30, 64))
    with pytest.raises(errors.PermissionDenied, match="admin"):
        client.erase_tenant(tenant)
    address = ["--address", cluster.a.address, "--api-key", cluster.admin_key]
    assert main(["erase", "tenant", tenant, *address]) == 2  # asks for --yes first
    capsys.readouterr()
    assert main(["erase", "tenant", tenant, "--yes", *address]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["tenant"] == tenant and receipt["api_keys_removed"] == 1
    assert receipt["dataset_ids"] == [subject["dataset"]] and subject["model"] in receipt["model_ids"]
    assert receipt["gallery_entries_removed"] == 1
    admin = LikenessClient(cluster.a.address, api_key=cluster.admin_key, timeout=120)
    with admin, pytest.raises(errors.NotFound):
        admin.erase_tenant(tenant)
    assert cluster.storage.list(f"tenants/{tenant}") == []
    with pytest.raises(errors.Unauthenticated):
        client.list_training_jobs()
    engine_url = cluster.database_url
    database = Database(engine_url)
    with database.read() as connection:
        from likeness.controlplane.schema import erasures, metadata

        for table in metadata.sorted_tables:
            if "tenant" in table.c and table is not erasures:
                rows = connection.execute(table.select().where(table.c.tenant == tenant)).all()
                assert rows == [], f"{table.name} still has rows of {tenant}"
        assert connection.execute(erasures.select().where(erasures.c.tenant == tenant)).all()
    database.dispose()
