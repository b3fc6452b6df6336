"""Benchmark of compiled serving (issue 13) on tiny SD 1.x at 64 px, eager and compiled side by side in one run.

Two in-process inference servers on real gRPC, one eager and one with `--compile-unet` (inductor, buckets 1 and 2),
serve the same LoRA subjects. `inference.compiled_speedup` is the median of back-to-back pairs (eager time over
compiled time for one image of 20 steps, each call alone on the machine). `inference.recompilations_after_warmup`
counts graph compilations after warm-up while subjects switch five times and two mixed batches run (goal 0).

Run: `python bench/bench_compiled.py` (prints JSON) or import `run()`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "inference"))

from inference_helpers import read_stream, request
from prometheus_client import REGISTRY
from test_mixed_batches import generate_together, with_loras

from likeness.inference.testing import BackgroundInferenceServer, publish_lora_subject
from likeness.models.catalog import BaseModelCatalog
from likeness.storage.local import LocalStorage
from likeness_client.v1 import inference_service_pb2 as pb

BASE = "tiny-sd15"
STEPS = 20
PAIRS = 7


def _seconds(server: BackgroundInferenceServer, subject: str, seed: int) -> float:
    started = time.perf_counter()
    stream = read_stream(server.stub.GenerateImages(request(subject=subject, seed=seed, steps=STEPS), timeout=600))
    if len(stream.images) != 1:
        raise RuntimeError("expected one image")
    return time.perf_counter() - started


def _recompilations() -> float:
    return REGISTRY.get_sample_value("likeness_inference_recompilations_total") or 0.0


def run() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="likeness-bench-compiled-") as temp:
        root = Path(temp)
        storage = LocalStorage(root / "storage")
        catalog = BaseModelCatalog(f"{BASE}=builtin:sd15", cache_dir=root / "cache")
        subjects = [publish_lora_subject(storage, seed=i, base_model=BASE).model_id for i in range(5)]
        common = {"base_models": f"{BASE}=builtin:sd15", "default_base_model": BASE, "preload_base_models": BASE}
        eager = BackgroundInferenceServer(storage, catalog, **common).start()
        started = time.perf_counter()
        compiled = BackgroundInferenceServer(
            storage, catalog, compile_unet=True, compile_buckets="1,2", compile_lora_rank=16, **common
        ).start()
        warmup_s = time.perf_counter() - started
        try:
            for server in (eager, compiled):
                for subject in subjects:
                    server.stub.LoadSubjectModel(pb.LoadSubjectModelRequest(model_id=subject))
                _seconds(server, subjects[0], 0)
            before = _recompilations()
            ratios, eager_times, compiled_times = [], [], []
            for pair in range(PAIRS):
                subject = subjects[pair % len(subjects)]  # every pair switches subject
                order = (eager, compiled) if pair % 2 == 0 else (compiled, eager)
                times = {id(server): _seconds(server, subject, pair) for server in order}
                eager_times.append(times[id(eager)])
                compiled_times.append(times[id(compiled)])
                ratios.append(times[id(eager)] / times[id(compiled)])
            for pair in range(2):
                generate_together(
                    compiled,
                    [
                        with_loras(request(subject=subjects[pair], seed=1, steps=4), (subjects[pair + 2], 0.5)),
                        request(subject=subjects[pair + 1], seed=2, steps=4),
                    ],
                )
            recompiled = _recompilations() - before
        finally:
            compiled.stop()
            eager.stop()
    return [
        {
            "name": "inference.compiled_speedup",
            "value": round(statistics.median(ratios), 3),
            "unit": "x",
            "goal": "report",
            "note": f"median of {PAIRS} back-to-back pairs, one image of {STEPS} steps at 64 px with a LoRA subject "
            f"switched every pair: eager {statistics.median(eager_times) * 1000:.0f} ms, compiled (inductor) "
            f"{statistics.median(compiled_times) * 1000:.0f} ms; start-up with warm-up of buckets 1 and 2 "
            f"{warmup_s:.0f} s",
        },
        {
            "name": "inference.recompilations_after_warmup",
            "value": recompiled,
            "unit": "count",
            "goal": "<= 0",
            "note": f"{PAIRS} subject switches and two mixed batches (subject + style, another subject) after warm-up",
        },
    ]


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
