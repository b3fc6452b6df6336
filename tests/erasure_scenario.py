"""The erasure scenario shared by tests/e2e/test_erasure.py and bench/bench_security.py: two replicas on one
database and one S3 bucket (moto_server), subjects trained with prior preservation, checkpoints and validation
images, generations recorded in the gallery from both replicas."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from s3_server import BUCKET, moto_s3

from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.identity.keys import ApiKeys, Role
from likeness.server.embedded import EmbeddedServer
from likeness.server.settings import Settings
from likeness.storage.base import Storage
from likeness.storage.factory import open_storage
from likeness_client import LikenessClient
from likeness_client.v1 import trainer_service_pb2 as trainer_pb
from likeness_client.v1 import types_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent / "trainer"))
from trainer_helpers import photo_bytes, wait_for

#: Inference replicas look for deleted subjects this often: the bound the receipt states.
SWEEP_SECONDS = 0.5
TENANT = "acme"


@dataclass
class ErasureCluster:
    """Replica A serves trainer, inference and gallery; replica B a second inference; each its own disk cache."""

    a: EmbeddedServer
    b: EmbeddedServer
    user_key: str
    admin_key: str
    storage: Storage
    database_url: str
    local_dirs: list[Path]

    def client(self, replica: EmbeddedServer, key: str | None = None) -> LikenessClient:
        return LikenessClient(replica.address, api_key=key or self.user_key, timeout=120)


@contextlib.contextmanager
def erasure_cluster(root: Path) -> Iterator[ErasureCluster]:
    """The two replicas on moto_server S3 with API keys on (MotoUnavailable if moto cannot run)."""
    root.mkdir(parents=True, exist_ok=True)
    with moto_s3(root) as endpoint:
        previous = os.environ.get("LIKENESS_S3_ENDPOINT_URL")
        os.environ["LIKENESS_S3_ENDPOINT_URL"] = endpoint
        try:
            base = Settings(
                storage_url=f"s3://{BUCKET}/erasure-{uuid.uuid4().hex[:8]}",
                database_url=f"sqlite:///{root / 'likeness.db'}",
                auth="api-key",
                auth_cache_seconds=0,
                device="cpu",
                subject_sweep_seconds=SWEEP_SECONDS,
            )
            database = Database(base.database_url)
            migrate(database)
            keys = ApiKeys(database)
            user_key = keys.create(TENANT)[1]
            admin_key = keys.create("operators", Role.ADMIN)[1]
            database.dispose()
            with (
                EmbeddedServer(
                    dataclasses.replace(base, cache_dir=str(root / "cache-a")), ["trainer", "inference", "gallery"]
                ) as a,
                EmbeddedServer(dataclasses.replace(base, cache_dir=str(root / "cache-b")), ["inference"]) as b,
            ):
                yield ErasureCluster(
                    a,
                    b,
                    user_key,
                    admin_key,
                    open_storage(base.storage_url, cache_dir=root / "scan-cache"),
                    base.database_url,
                    [root / "cache-a", root / "cache-b"],
                )
        finally:
            if previous is None:
                os.environ.pop("LIKENESS_S3_ENDPOINT_URL", None)
            else:
                os.environ["LIKENESS_S3_ENDPOINT_URL"] = previous


def subject_photos(first: int) -> list[tuple[str, bytes]]:
    """Three photos of their own (distinct bytes for each `first`)."""
    return [(f"photo-{i}.png", photo_bytes(i, 96)) for i in range(first, first + 3)]


def spec(dataset_id: str, class_prompt: str, steps: int = 2) -> trainer_pb.TrainingJobSpec:
    """A LoRA job with prior preservation (its own class-image set), a checkpoint and validation images."""
    return trainer_pb.TrainingJobSpec(
        base_model="toy-sd15",
        class_noun="dog",
        method=types_pb2.TRAINING_METHOD_LORA,
        dataset_id=dataset_id,
        hyperparameters=trainer_pb.Hyperparameters(max_train_steps=steps, seed=1),
        lora=trainer_pb.LoraConfig(rank=4),
        prior_preservation=trainer_pb.PriorPreservation(enabled=True, class_prompt=class_prompt, num_class_images=2),
        validation=trainer_pb.ValidationConfig(prompts=["a photo of {subject}"], every_n_steps=1),
        checkpointing=trainer_pb.CheckpointConfig(every_n_steps=1),
    )


def train(client: LikenessClient, first_photo: int, class_prompt: str) -> dict[str, str]:
    """A subject end to end: dataset, job, subject model; their ids."""
    dataset = client.prepare_dataset(subject_photos(first_photo), trainer_pb.DatasetOptions(base_model="toy-sd15"))
    dataset_id = dataset.dataset.dataset_id
    job = client.create_training_job(spec(dataset_id, class_prompt)).job
    done = wait_for(
        lambda: (j := client.get_training_job(job.job_id)).state == trainer_pb.JOB_STATE_SUCCEEDED and j,
        300,
        what="training",
    )
    return {"dataset": dataset_id, "job": job.job_id, "model": done.subject_model_id}


def generate(client: LikenessClient, model_id: str, *, record: bool, seed: int = 7) -> str:
    """One 2-step image with the subject; the gallery entry's id when recorded."""
    result = client.generate(
        prompt="a photo of {subject} on a beach",
        subject_model_id=model_id,
        parameters=types_pb2.GenerationParameters(num_inference_steps=2, seed=seed),
        record_in_gallery=record,
    )
    return result.images[0].gallery_prompt_id


def loaded(client: LikenessClient) -> set[str]:
    """Subject models the replica holds in memory."""
    return {subject.model.model_id for subject in client.get_server_status().loaded_subjects}
