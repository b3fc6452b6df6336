"""Prometheus metrics of the inference service (default registry, names prefixed `likeness_inference_`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)

QUEUE_WAIT_SECONDS = Histogram(
    "likeness_inference_queue_wait_seconds",
    "Time a request waited in the queue before its batch started",
    ["base_model"],
    buckets=_LATENCY_BUCKETS,
)
GENERATION_SECONDS = Histogram(
    "likeness_inference_generation_seconds",
    "Time from a request's acceptance to its last image",
    ["base_model"],
    buckets=_LATENCY_BUCKETS,
)
IMAGES = Counter("likeness_inference_images_total", "Images generated and sent", ["base_model"])
#: Every outcome of a generation request: each one's series exists from start-up, so that `rate()` sees the
#: first failures after a restart.
OUTCOMES = ("ok", "cancelled", "deadline_exceeded", "failed", "rejected")
REQUESTS = Counter(
    "likeness_inference_requests_total",
    "Generation requests by outcome (ok, cancelled, deadline_exceeded, failed, rejected)",
    ["outcome"],
)
for _outcome in OUTCOMES:
    REQUESTS.labels(_outcome)
STEPS_PER_SECOND = Histogram(
    "likeness_inference_denoising_steps_per_second",
    "Denoising steps per second of each batch (one step advances every image of the batch)",
    ["base_model"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 250),
)
BATCH_REQUESTS = Histogram(
    "likeness_inference_batch_requests", "Requests per batch", buckets=(1, 2, 3, 4, 5, 6, 7, 8, 12, 16)
)
BATCH_IMAGES = Histogram(
    "likeness_inference_batch_images",
    "Images denoised together per batch, by the number of distinct LoRAs (subjects and styles) in it",
    ["adapters"],
    buckets=(1, 2, 3, 4, 5, 6, 7, 8, 12, 16),
)
#: The `adapters` label values: 0 to 8, then "9+".
ADAPTER_LABELS = (*(str(count) for count in range(9)), "9+")


def adapter_label(count: int) -> str:
    return ADAPTER_LABELS[min(count, len(ADAPTER_LABELS) - 1)]


RECOMPILATIONS = Counter(
    "likeness_inference_recompilations_total",
    "torch.compile graph compilations of the compiled UNet after its warm-up (0 when subjects switch and mix freely)",
)
COMPILATIONS = Counter(
    "likeness_inference_compilations_total", "torch.compile graph compilations of the compiled UNet, warm-up included"
)
CACHE_HITS = Counter("likeness_inference_subject_cache_hits_total", "Batches whose subject was already loaded")
CACHE_MISSES = Counter("likeness_inference_subject_cache_misses_total", "Batches that had to wait for a subject load")
CACHE_EVICTIONS = Counter(
    "likeness_inference_subject_cache_evictions_total", "Subjects evicted (budget) or unloaded (UnloadSubjectModel)"
)
LOAD_FAILURES = Counter("likeness_inference_subject_load_failures_total", "Subject loads that failed")
LOAD_SECONDS = Histogram(
    "likeness_inference_load_seconds",
    "Seconds to load a model, by kind (base, lora, full)",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
LOADED_SUBJECTS = Gauge("likeness_inference_loaded_subjects", "Subject models in memory")
MEMORY_BYTES = Gauge(
    "likeness_inference_memory_bytes", "Bytes of model weights in memory, by kind (base, subjects)", ["kind"]
)
QUEUE_DEPTH = Gauge("likeness_inference_queue_depth", "Requests waiting for a batch")
