"""Where everything lives in storage: one function per kind of object, so no caller builds keys by hand.

    tenants/{tenant}/datasets/{dataset_id}/            images/, report.json, contact_sheet.jpg, manifest.json
    tenants/{tenant}/jobs/{job_id}/job.json            the job record
    tenants/{tenant}/jobs/{job_id}/events/             event log, one {seq:012d}.json per event
    tenants/{tenant}/jobs/{job_id}/checkpoints/step-{step:08d}/
    tenants/{tenant}/jobs/{job_id}/validation/
    tenants/{tenant}/models/{model_id}/                subject model: weights, manifest.json, samples/
    tenants/{tenant}/gallery/images/{prompt_id}.{png,jpg,webp}   a gallery entry's image (metadata: the database)
    tenants/{tenant}/gallery/thumbnails/{prompt_id}.webp
    shared/class-images/{cache_key}/                   prior-preservation class images

Everything a caller creates lives under its tenant's prefix. The one exception is the class-image cache: it
holds only images the *base* model generated from a class prompt (no subject data), so tenants share it safely
and save the GPU time of generating the same "a photo of a dog" set twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time

from likeness.errors import InvalidArgument

DEFAULT_TENANT = "default"
TENANTS_PREFIX = "tenants"
SHARED_PREFIX = "shared"
MANIFEST_NAME = "manifest.json"
#: A subject model's LoRA weights in the kohya / AUTOMATIC1111 key layout, next to the diffusers weights.
KOHYA_WEIGHTS_NAME = "lora_kohya.safetensors"
#: The folder of a subject model's sample images.
SAMPLES_FOLDER = "samples"

_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_RESOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ID_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_CACHE_KEY = re.compile(r"^[0-9a-f]{64}$")
_CHECKPOINT_NAME = re.compile(r"^step-(\d{8})$")
MAX_CHECKPOINT_STEP = 10**8 - 1

# Crockford's base32 in lower case: ASCII order equals numeric order, and ids stay valid Kubernetes names.
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_ID_TIME_CHARS = 10  # 48-bit millisecond timestamp
_ID_RANDOM_CHARS = 16  # 80 random bits
_id_lock = threading.Lock()
_last_id_state: tuple[int, int] = (-1, 0)


def validate_tenant(tenant: str) -> str:
    """Return `tenant` if it is a valid tenant name (`[a-z0-9][a-z0-9-]{0,62}`), else InvalidArgument."""
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise InvalidArgument(
            f"{tenant!r} is not a valid tenant name: use 1-63 lower-case letters, digits and '-', "
            f"starting with a letter or digit (the default tenant is {DEFAULT_TENANT!r})",
            field="tenant",
        )
    return tenant


def validate_resource_id(value: str, *, field: str) -> str:
    """Return `value` if it is usable as a dataset/job/model/prompt id (1-128 of `[A-Za-z0-9._-]`)."""
    if not isinstance(value, str) or not _RESOURCE_ID.match(value) or ".." in value:
        raise InvalidArgument(
            f"{value!r} is not a valid id: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit and without '..'",
            field=field,
        )
    return value


def _encode_base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new unique id such as `job-01j9z3k8q4m2x7v5t6r3n1p0wd`: the prefix, then 26 characters that sort by
    creation time (milliseconds) and end in 80 random bits.

    Within one process ids are strictly increasing even inside one millisecond (the random part is
    incremented), so listing a folder of ids lists them in creation order.
    """
    global _last_id_state
    if not isinstance(prefix, str) or not _ID_PREFIX.match(prefix):
        raise InvalidArgument(
            f"{prefix!r} must be 1-16 lower-case letters/digits starting with a letter", field="prefix"
        )
    with _id_lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_random = _last_id_state
        if millis <= last_millis and last_random < 2**80 - 1:
            millis, random_bits = last_millis, last_random + 1
        else:
            random_bits = int.from_bytes(os.urandom(10), "big")
        _last_id_state = (millis, random_bits)
    return f"{prefix}-{_encode_base32(millis, _ID_TIME_CHARS)}{_encode_base32(random_bits, _ID_RANDOM_CHARS)}"


# ---- tenants ----------------------------------------------------------------------------------------------


def tenant_prefix(tenant: str) -> str:
    """`tenants/{tenant}`: everything the tenant owns."""
    return f"{TENANTS_PREFIX}/{validate_tenant(tenant)}"


# ---- datasets ---------------------------------------------------------------------------------------------


def datasets_prefix(tenant: str) -> str:
    """`tenants/{tenant}/datasets`: list its child folders to enumerate datasets."""
    return f"{tenant_prefix(tenant)}/datasets"


def dataset_prefix(tenant: str, dataset_id: str) -> str:
    """`tenants/{tenant}/datasets/{dataset_id}`: a published dataset folder (marker: manifest.json)."""
    return f"{datasets_prefix(tenant)}/{validate_resource_id(dataset_id, field='dataset_id')}"


def dataset_images_prefix(tenant: str, dataset_id: str) -> str:
    """`.../datasets/{dataset_id}/images`: the preprocessed training images."""
    return f"{dataset_prefix(tenant, dataset_id)}/images"


def dataset_report_key(tenant: str, dataset_id: str) -> str:
    """`.../datasets/{dataset_id}/report.json`: the dataset quality report."""
    return f"{dataset_prefix(tenant, dataset_id)}/report.json"


def dataset_contact_sheet_key(tenant: str, dataset_id: str) -> str:
    """`.../datasets/{dataset_id}/contact_sheet.jpg`: thumbnails of every image, for review."""
    return f"{dataset_prefix(tenant, dataset_id)}/contact_sheet.jpg"


def dataset_manifest_key(tenant: str, dataset_id: str) -> str:
    """`.../datasets/{dataset_id}/manifest.json`: the DatasetManifest, written last."""
    return f"{dataset_prefix(tenant, dataset_id)}/{MANIFEST_NAME}"


# ---- training jobs ----------------------------------------------------------------------------------------


def jobs_prefix(tenant: str) -> str:
    """`tenants/{tenant}/jobs`: list its child folders to enumerate jobs."""
    return f"{tenant_prefix(tenant)}/jobs"


def job_prefix(tenant: str, job_id: str) -> str:
    """`tenants/{tenant}/jobs/{job_id}`: everything one training job writes."""
    return f"{jobs_prefix(tenant)}/{validate_resource_id(job_id, field='job_id')}"


def job_record_key(tenant: str, job_id: str) -> str:
    """`.../jobs/{job_id}/job.json`: the job record (spec and current state)."""
    return f"{job_prefix(tenant, job_id)}/job.json"


def job_events_prefix(tenant: str, job_id: str) -> str:
    """`.../jobs/{job_id}/events`: the job's append-only event log (Storage.append_event/read_events)."""
    return f"{job_prefix(tenant, job_id)}/events"


def job_checkpoints_prefix(tenant: str, job_id: str) -> str:
    """`.../jobs/{job_id}/checkpoints`: list its child folders to find checkpoints."""
    return f"{job_prefix(tenant, job_id)}/checkpoints"


def checkpoint_prefix(tenant: str, job_id: str, step: int) -> str:
    """`.../jobs/{job_id}/checkpoints/step-{step:08d}`: one published checkpoint; names sort by step."""
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_CHECKPOINT_STEP:
        raise InvalidArgument(f"must be an integer in [0, {MAX_CHECKPOINT_STEP}], got {step!r}", field="step")
    return f"{job_checkpoints_prefix(tenant, job_id)}/step-{step:08d}"


def parse_checkpoint_step(folder_name: str) -> int | None:
    """The step of a checkpoint folder name (`step-00000400` -> 400); None for any other name."""
    match = _CHECKPOINT_NAME.match(folder_name)
    return int(match.group(1)) if match else None


def job_validation_prefix(tenant: str, job_id: str) -> str:
    """`.../jobs/{job_id}/validation`: validation images and scores written during training."""
    return f"{job_prefix(tenant, job_id)}/validation"


# ---- subject models ---------------------------------------------------------------------------------------


def models_prefix(tenant: str) -> str:
    """`tenants/{tenant}/models`: list its child folders to enumerate subject models."""
    return f"{tenant_prefix(tenant)}/models"


def model_prefix(tenant: str, model_id: str) -> str:
    """`tenants/{tenant}/models/{model_id}`: a published subject model (marker: manifest.json)."""
    return f"{models_prefix(tenant)}/{validate_resource_id(model_id, field='model_id')}"


def model_manifest_key(tenant: str, model_id: str) -> str:
    """`.../models/{model_id}/manifest.json`: the SubjectModelManifest, written last."""
    return f"{model_prefix(tenant, model_id)}/{MANIFEST_NAME}"


def model_samples_prefix(tenant: str, model_id: str) -> str:
    """`.../models/{model_id}/samples`: sample images generated after training."""
    return f"{model_prefix(tenant, model_id)}/{SAMPLES_FOLDER}"


# ---- gallery ----------------------------------------------------------------------------------------------


def gallery_prompts_prefix(tenant: str) -> str:
    """`tenants/{tenant}/gallery/prompts`: one JSON record per prompt."""
    return f"{tenant_prefix(tenant)}/gallery/prompts"


def gallery_prompt_key(tenant: str, prompt_id: str) -> str:
    """`tenants/{tenant}/gallery/prompts/{prompt_id}.json` (the file gallery of earlier versions)."""
    return f"{gallery_prompts_prefix(tenant)}/{validate_resource_id(prompt_id, field='prompt_id')}.json"


def gallery_image_key(tenant: str, prompt_id: str, extension: str) -> str:
    """`tenants/{tenant}/gallery/images/{prompt_id}.{extension}`: a gallery entry's full image."""
    return f"{tenant_prefix(tenant)}/gallery/images/{validate_resource_id(prompt_id, field='prompt_id')}.{extension}"


def gallery_thumbnail_key(tenant: str, prompt_id: str) -> str:
    """`tenants/{tenant}/gallery/thumbnails/{prompt_id}.webp`: the entry's thumbnail for result grids."""
    return f"{tenant_prefix(tenant)}/gallery/thumbnails/{validate_resource_id(prompt_id, field='prompt_id')}.webp"


# ---- shared class-image cache -----------------------------------------------------------------------------


def class_image_cache_key(base_model_id: str, class_prompt: str, resolution: int, count: int) -> str:
    """sha256 (hex) of what determines a prior-preservation image set: base model, class prompt, resolution
    and image count. Any change gives a new key: a cached set is never reused for the wrong model or size."""
    if not isinstance(base_model_id, str) or not base_model_id:
        raise InvalidArgument("must be a non-empty base model id", field="base_model_id")
    if not isinstance(class_prompt, str) or not class_prompt.strip():
        raise InvalidArgument("must be a non-empty prompt such as 'a photo of a dog'", field="class_prompt")
    for field, value in (("resolution", resolution), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidArgument(f"must be a positive integer, got {value!r}", field=field)
    identity = {
        "base_model_id": base_model_id,
        "class_prompt": class_prompt,
        "resolution": resolution,
        "count": count,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def class_images_prefix(cache_key: str) -> str:
    """`shared/class-images/{cache_key}`: a published class-image set, shared across tenants (module doc)."""
    if not isinstance(cache_key, str) or not _CACHE_KEY.match(cache_key):
        raise InvalidArgument(
            f"{cache_key!r} is not a class-image cache key; compute it with class_image_cache_key()",
            field="cache_key",
        )
    return f"{SHARED_PREFIX}/class-images/{cache_key}"
