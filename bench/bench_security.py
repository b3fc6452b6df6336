"""Security figures: tenant isolation over every RPC, and the cost of TLS plus an API key on a generation.

* `security.cross_tenant_pairs_tried` / `security.cross_tenant_leaks`: the probe of tests/cross_tenant.py (every
  RPC from the service descriptors, tenant B's key with tenant A's ids) against the three services embedded with
  API keys, tenant A holding a dataset, a trained job, its subject model and a gallery entry with an image.
* `security.auth_overhead_ratio`: two `likeness serve inference` processes, one plaintext without
  authentication, one with TLS and `--auth api-key`; the same 64 px 20-step generation alternates between them
  (warm-up first), and the figure is the median of per-pair ratios (TLS + key over plaintext).

* `security.erasure_residue_files`: the scenario of tests/erasure_scenario.py (two replicas on one database and
  a moto_server S3 bucket, two subjects of one tenant trained with prior preservation, checkpoints and
  validation images, generations recorded from both replicas), then EraseSubject on one; after the stated
  replica bound, the places (storage keys, database rows, files in either replica's disk cache) still holding a
  byte-identical copy of one of its files or one of its ids. The other subject must still be whole.

Run: `python bench/bench_security.py` (prints the figures) or import `run()`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_inference import _request, _ServiceProcess, _through_service  # noqa: E402
from cross_tenant import probe_every_rpc, tenant_with_everything  # noqa: E402
from erasure_scan import fingerprint, residue, still_present  # noqa: E402
from erasure_scenario import SWEEP_SECONDS, TENANT, erasure_cluster, generate, loaded, subject_photos, train  # noqa: E402
from tls_certs import make_certificates  # noqa: E402
from trainer_helpers import wait_for  # noqa: E402

from likeness.controlplane.database import Database  # noqa: E402
from likeness.controlplane.migrate import migrate  # noqa: E402
from likeness.identity.keys import ApiKeys  # noqa: E402
from likeness.server.embedded import EmbeddedServer  # noqa: E402
from likeness.server.settings import Settings  # noqa: E402
from likeness_client import LikenessClient  # noqa: E402

PAIRS = 41


def _keys(database_url: str, *tenants: str) -> list[str]:
    database = Database(database_url)
    migrate(database)
    keys = [ApiKeys(database).create(tenant)[1] for tenant in tenants]
    database.dispose()
    return keys


def cross_tenant(work: Path) -> tuple[int, int]:
    url = f"sqlite:///{work / 'tenants.db'}"
    key_a, key_b = _keys(url, "tenant-a", "tenant-b")
    settings = Settings(
        storage_url=str(work / "tenants-storage"), cache_dir=str(work / "cache"), database_url=url, auth="api-key"
    )
    with EmbeddedServer(settings, ["trainer", "inference", "gallery"]) as server:
        with LikenessClient(server.address, api_key=key_a, timeout=120) as client:
            ids = tenant_with_everything(client)
        pairs, leaks = probe_every_rpc(server.address, ids, key_a, key_b)
    return pairs, len(leaks)


def erasure_residue(work: Path) -> tuple[int, int, float]:
    """(places still holding the erased subject, files of it fingerprinted, seconds the erasure took)."""
    with erasure_cluster(work / "erasure") as cluster:
        a, b = cluster.client(cluster.a), cluster.client(cluster.b)
        erased = train(a, 0, "a photo of a dog, erased")
        kept = train(a, 10, "a photo of a dog, kept")
        prompts = [generate(a, erased["model"], record=True), generate(b, erased["model"], record=True, seed=8)]
        generate(b, kept["model"], record=False)
        files = fingerprint(
            cluster.storage,
            TENANT,
            dataset_ids=[erased["dataset"]],
            job_ids=[erased["job"]],
            model_ids=[erased["model"]],
            prompt_ids=prompts,
            uploaded=[data for _, data in subject_photos(0)],
        )
        kept_files = fingerprint(
            cluster.storage, TENANT, dataset_ids=[kept["dataset"]], job_ids=[kept["job"]], model_ids=[kept["model"]]
        )
        started = time.perf_counter()
        a.erase_subject(model_id=erased["model"])
        seconds = time.perf_counter() - started
        wait_for(lambda: erased["model"] not in loaded(b), 30, what="replica B to forget the subject")
        time.sleep(SWEEP_SECONDS * 2)
        found = residue(files, cluster.storage, cluster.database_url, cluster.local_dirs)
        if still_present(kept_files, cluster.storage) != len(kept_files.hashes):
            raise AssertionError("the erasure touched the other subject")
    return len(found), files.files, seconds


def auth_overhead(work: Path) -> float:
    certs = make_certificates(work / "certs", "bench")
    url = f"sqlite:///{work / 'auth.db'}"
    (key,) = _keys(url, "default")
    plain = _ServiceProcess(work / "storage", work / "cache-plain", work / "plain.log")
    secured = _ServiceProcess(
        work / "storage",
        work / "cache-secured",
        work / "secured.log",
        extra_args=[
            "--auth",
            "api-key",
            "--database-url",
            url,
            "--tls-cert-file",
            str(certs.cert_file),
            "--tls-key-file",
            str(certs.key_file),
        ],
        credentials=grpc.ssl_channel_credentials(root_certificates=certs.ca_file.read_bytes()),
        metadata=[("authorization", f"Bearer {key}")],
    )
    try:
        for server in (plain, secured):
            _through_service(server, _request("", 0))  # warm-up: the first generation compiles kernels
        ratios = []
        for index in range(PAIRS):
            request = _request("", index + 1)
            first, second = (plain, secured) if index % 2 == 0 else (secured, plain)
            timings = {id(first): _through_service(first, request), id(second): _through_service(second, request)}
            ratios.append(timings[id(secured)] / timings[id(plain)])
    finally:
        plain.stop()
        secured.stop()
    return statistics.median(ratios)


def run() -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="likeness-security-bench-"))
    pairs, leaks = cross_tenant(work)
    residue_files, fingerprinted, erase_seconds = erasure_residue(work)
    ratio = auth_overhead(work)
    return [
        {"name": "security.cross_tenant_pairs_tried", "value": pairs, "unit": "pairs", "goal": "",
         "note": "every RPC from the service descriptors, B's key with A's ids in every id field"},
        {"name": "security.cross_tenant_leaks", "value": leaks, "unit": "leaks", "goal": "<= 0",
         "note": "lookups not NOT_FOUND, filtered lists not empty, or responses carrying A's ids"},
        {"name": "security.erasure_residue_files", "value": residue_files, "unit": "files", "goal": "<= 0",
         "note": f"copies of the erased subject's {fingerprinted} files (by SHA-256) or rows naming it, in S3, the "
                 f"database and two replicas' disk caches, after the {SWEEP_SECONDS} s replica bound; "
                 f"EraseSubject took {erase_seconds:.2f} s"},
        {"name": "security.auth_overhead_ratio", "value": round(ratio, 3), "unit": "x", "goal": "<= 1.02",
         "note": f"TLS + API key vs plaintext without, 64 px 20-step generation, median of {PAIRS} alternated pairs"},
    ]  # fmt: skip


if __name__ == "__main__":
    for figure in run():
        print(f"{figure['name']}: {figure['value']} {figure['unit']} (goal {figure['goal'] or '-'}) {figure['note']}")
