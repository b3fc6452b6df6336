"""The model repository on tiny models: hot-loading, LRU eviction, single-flight loads, discovery, switching."""

from __future__ import annotations

import threading

import pytest
import torch
from inference_helpers import make_repository

from likeness.errors import FailedPrecondition, NotFound
from likeness.inference.lora_routing import SampleLoras
from likeness.inference.repository import FAILED, LOADED, NOT_LOADED
from likeness.inference.testing import publish_corrupt_lora_subject, publish_full_subject, publish_lora_subject
from likeness.storage.layout import DEFAULT_TENANT, model_manifest_key

T = DEFAULT_TENANT
# A rank-4 LoRA of the tiny SD 1.x UNet holds 15,360 float32 numbers.
LORA_BYTES = 61_440


def latents_of(repository, entry, scale: float = 1.0) -> torch.Tensor:
    base = repository.base("tiny-sd15")
    loras = ((entry.lora.layers, scale),) if entry is not None and entry.lora is not None else ()
    with base.lock, base.router.route([SampleLoras(loras)], dtype=torch.float32):
        pipeline = repository.activate(base, entry)
        # Small and without classifier-free guidance: only the adapters' effect matters here.
        return pipeline(
            "a photo of sks dog",
            num_inference_steps=2,
            guidance_scale=1.0,
            width=32,
            height=32,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        ).images


def test_lru_eviction_under_a_small_budget(storage, catalog) -> None:
    repository = make_repository(storage, catalog, budget_bytes=2 * LORA_BYTES + 1000)
    a, b, c = (publish_lora_subject(storage, seed=i).model_id for i in range(3))
    for model_id in (a, b):
        assert repository.load_subject(T, model_id).memory_bytes == LORA_BYTES
    with repository.acquire(T, a):  # a is now the most recently used
        pass
    repository.load_subject(T, c)
    assert [s.model_id for s in repository.loaded_subjects()] == [c, a]
    assert repository.subject_status(T, b).state == NOT_LOADED
    assert repository.stats.evictions == 1 and repository.used_bytes == 2 * LORA_BYTES
    evicted = repository.index.current_locked((T, b))
    assert evicted.lora is None and all(repository.index.current_locked((T, m)).lora for m in (a, c))
    # b comes back on demand and pushes out the least recently used, a.
    with repository.acquire(T, b) as lease:
        assert lease.entry.state == LOADED
    assert [s.model_id for s in repository.loaded_subjects()] == [b, c]
    assert repository.stats.evictions == 2


def test_concurrent_first_requests_load_a_subject_once(storage, catalog) -> None:
    repository = make_repository(storage, catalog)
    model_id = publish_lora_subject(storage).model_id
    repository.base("tiny-sd15")
    barrier = threading.Barrier(6)
    entries, errors = [], []

    def first_request() -> None:
        barrier.wait()
        try:
            repository.prefetch(T, model_id)
            with repository.acquire(T, model_id) as lease:
                entries.append(lease.entry)
        except Exception as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=first_request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert repository.stats.loads == 1 and len({id(entry) for entry in entries}) == 1
    assert entries[0].lora is not None and entries[0].memory_bytes == LORA_BYTES


def test_subjects_published_after_start_are_found(storage, catalog) -> None:
    repository = make_repository(storage, catalog)
    assert repository.list_subjects(T) == []
    with pytest.raises(NotFound):
        repository.manifest(T, "model-not-yet")
    older = publish_lora_subject(storage)
    newer = publish_full_subject(storage)
    assert [s.model_id for s in repository.list_subjects(T)] == [newer.model_id, older.model_id]
    assert [s.model_id for s in repository.list_subjects(T, base_model="tiny-sdxl")] == []
    assert repository.load_subject(T, older.model_id).state == LOADED
    assert [s.model_id for s in repository.list_subjects(T, loaded_only=True)] == [older.model_id]


def test_corrupt_subjects_fail_with_a_reason_and_others_keep_serving(storage, catalog) -> None:
    repository = make_repository(storage, catalog)
    broken = publish_corrupt_lora_subject(storage).model_id
    good = publish_lora_subject(storage).model_id
    storage.write_bytes("tenants/default/models/model-bad-manifest/manifest.json", b"{not json")
    # LoRA weights of another architecture: published for the SDXL base although made for SD 1.x.
    mismatched = publish_lora_subject(storage, base_model="tiny-sdxl", arch="sdxl")
    storage.write_bytes(
        f"tenants/default/models/{mismatched.model_id}/pytorch_lora_weights.safetensors",
        storage.read_bytes(f"tenants/default/models/{good}/pytorch_lora_weights.safetensors"),
    )

    with pytest.raises(FailedPrecondition, match="not a safetensors LoRA"):
        repository.load_subject(T, broken)
    with pytest.raises(FailedPrecondition, match=r"attn2\.to_k does not match the base model"):
        repository.load_subject(T, mismatched.model_id)
    with pytest.raises(FailedPrecondition, match="not valid JSON"):
        repository.manifest(T, "model-bad-manifest")

    statuses = {s.model_id: s for s in repository.list_subjects(T)}
    assert statuses[broken].state == FAILED and "truncated" in statuses[broken].failure_reason
    assert statuses["model-bad-manifest"].state == FAILED and statuses["model-bad-manifest"].manifest is None
    # Requests fail fast with the recorded reason, and every other subject still works.
    with pytest.raises(FailedPrecondition, match="truncated"), repository.acquire(T, broken):
        pass
    with repository.acquire(T, good) as lease:
        assert lease.entry.state == LOADED
    assert not torch.equal(latents_of(repository, lease.entry), latents_of(repository, None))


def test_switching_subjects_never_reloads_or_copies_the_base(storage, catalog) -> None:
    repository = make_repository(storage, catalog)
    a, b = (publish_lora_subject(storage, seed=i).model_id for i in (1, 2))
    base = repository.base("tiny-sd15")
    pipeline = base.pipeline
    # Attaching LoRA layers renames the wrapped weights (to_k.weight -> to_k.base_layer.weight) but must not move
    # or copy them.
    weight_pointers = {p.data_ptr() for name, p in pipeline.unet.named_parameters() if "lora" not in name}
    vae, text_encoder = pipeline.vae, pipeline.text_encoder
    plain = latents_of(repository, None)
    with repository.acquire(T, a) as lease_a, repository.acquire(T, b) as lease_b:
        first_a = latents_of(repository, lease_a.entry)
        first_b = latents_of(repository, lease_b.entry)
        half_a = latents_of(repository, lease_a.entry, scale=0.5)
        again_a = latents_of(repository, lease_a.entry)
        again_plain = latents_of(repository, None)
    assert not torch.equal(first_a, plain) and not torch.equal(first_a, first_b) and not torch.equal(half_a, first_a)
    assert torch.equal(again_a, first_a) and torch.equal(again_plain, plain)
    assert repository.base("tiny-sd15").pipeline is pipeline and pipeline.vae is vae
    assert pipeline.text_encoder is text_encoder
    current = {p.data_ptr() for name, p in pipeline.unet.named_parameters() if "lora" not in name}
    assert current == weight_pointers


def test_full_fine_tunes_share_the_base_vae_and_text_encoder(storage, catalog) -> None:
    repository = make_repository(storage, catalog)
    lora = publish_lora_subject(storage).model_id
    full = publish_full_subject(storage).model_id
    base = repository.base("tiny-sd15")
    with repository.acquire(T, lora) as lora_lease, repository.acquire(T, full) as full_lease:
        entry = full_lease.entry
        assert entry.pipeline.vae is base.pipeline.vae
        assert entry.pipeline.text_encoder is base.pipeline.text_encoder
        assert entry.pipeline.tokenizer is base.pipeline.tokenizer
        assert entry.pipeline.unet is not base.pipeline.unet
        assert entry.memory_bytes == sum(p.numel() * 4 for p in entry.pipeline.unet.parameters()) + sum(
            b.numel() * b.element_size() for b in entry.pipeline.unet.buffers()
        )
        full_latents = latents_of(repository, entry)
        latents_of(repository, lora_lease.entry)  # LoRA active on the base in between
        assert torch.equal(latents_of(repository, entry), full_latents)
    assert not torch.equal(full_latents, latents_of(repository, None))


def test_full_fine_tunes_with_their_own_text_encoders(storage, catalog) -> None:
    repository = make_repository(storage, catalog)
    model_id = publish_full_subject(storage, text_encoders=True).model_id
    base = repository.base("tiny-sd15")
    with repository.acquire(T, model_id) as lease:
        pipeline = lease.entry.pipeline
        assert pipeline.text_encoder is not base.pipeline.text_encoder and pipeline.vae is base.pipeline.vae
        own_encoder = latents_of(repository, lease.entry)
    unet_only = publish_full_subject(storage).model_id  # same UNet weights (same seed), the base's text encoder
    with repository.acquire(T, unet_only) as lease:
        assert not torch.equal(latents_of(repository, lease.entry), own_encoder)


def test_unloading_a_subject_in_use_waits_for_its_batch(storage, catalog) -> None:
    repository = make_repository(storage, catalog)
    model_id = publish_lora_subject(storage).model_id
    repository.base("tiny-sd15")
    with repository.acquire(T, model_id) as lease:
        status = repository.unload_subject(T, model_id)
        assert status.state == NOT_LOADED and repository.loaded_subjects() == []
        # The running batch keeps its LoRA layers until it releases the subject.
        assert lease.entry.lora is not None
        assert not torch.equal(latents_of(repository, lease.entry), latents_of(repository, None))
    assert lease.entry.lora is None and repository.used_bytes == 0
    with pytest.raises(NotFound):
        repository.unload_subject(T, "model-unknown")


def test_a_subject_larger_than_the_budget_is_refused(storage, catalog) -> None:
    repository = make_repository(storage, catalog, budget_bytes=LORA_BYTES // 2)
    model_id = publish_lora_subject(storage).model_id
    with pytest.raises(Exception, match="more than the whole subject cache budget"):
        repository.load_subject(T, model_id)
    assert repository.subject_status(T, model_id).state == FAILED


def test_manifest_for_another_tenant_is_corrupt(storage, catalog) -> None:
    repository = make_repository(storage, catalog)
    manifest = publish_lora_subject(storage, tenant="other")
    storage.write_bytes(model_manifest_key(T, manifest.model_id), manifest.to_json().encode())
    with pytest.raises(FailedPrecondition, match="tenant 'other'"):
        repository.manifest(T, manifest.model_id)


def test_models_load_on_threads_that_end(storage, catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads must not leave a long-lived thread with its own OpenMP pool beside the inference worker's
    (see likeness.threads.run_in_short_lived_thread): each load runs on a thread that is gone afterwards."""
    repository = make_repository(storage, catalog)
    model_id = publish_lora_subject(storage).model_id
    loading_threads: list[threading.Thread] = []
    for name in ("_load_base", "_load_subject"):
        original = getattr(repository, name)

        def recording(*args, _original=original):
            loading_threads.append(threading.current_thread())
            return _original(*args)

        monkeypatch.setattr(repository, name, recording)
    repository.base("tiny-sd15")
    repository.load_subject(T, model_id)
    assert len(loading_threads) == 2
    assert threading.current_thread() not in loading_threads
    assert not any(thread.is_alive() for thread in loading_threads)
