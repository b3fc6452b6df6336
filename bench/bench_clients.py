"""The Python client package: what installing it costs, and what its asyncio client buys.

* `clients.python_client_install_mb`: a fresh virtual environment, `pip install ./clients/python` (grpcio and
  protobuf from the index), then the size on disk of site-packages less what a bare venv already holds (pip).
  The note lists the distributions installed, so a dependency that pulls torch would show at once.
* `clients.async_concurrency_ratio`: 100 concurrent GenerateImages calls (toy-sd15, 2 steps, 32 px) against a
  `likeness serve inference` process, made once from one `AsyncLikenessClient` with asyncio.gather and once from
  100 threads sharing one `LikenessClient`; wall time of the threads over wall time of asyncio (above 1: asyncio
  is faster). The two runs alternate, three pairs, median. The server batches compatible requests either way, so
  the figure is about the client side: one event loop against a hundred threads on two cores.

Run: `python bench/bench_clients.py` (prints the figures) or import `run()`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from likeness_client import AsyncLikenessClient, LikenessClient  # noqa: E402
from likeness_client.v1 import types_pb2  # noqa: E402

CONCURRENT_CALLS = 100
PAIRS = 3
PARAMETERS = types_pb2.GenerationParameters(num_inference_steps=2, width=32, height=32, seed=1)


def _log(message: str) -> None:
    print(f"  clients: {message}", file=sys.stderr, flush=True)


def _tree_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def install_size() -> dict:
    """Installs the client package into a fresh venv and measures what it added."""
    with tempfile.TemporaryDirectory(prefix="likeness-client-venv-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        site = Path(
            subprocess.run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        bare = _tree_bytes(site)
        # From a copy, as pip builds in the source folder and would leave build/ in the checkout.
        source = shutil.copytree(
            ROOT / "clients" / "python", Path(tmp) / "src", ignore=shutil.ignore_patterns("build", "*.egg-info")
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)], check=True
        )
        installed = json.loads(
            subprocess.run(
                [str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        added = _tree_bytes(site) - bare
    names = sorted(
        f"{item['name']} {item['version']}" for item in installed if item["name"] not in ("pip", "setuptools")
    )
    return {
        "name": "clients.python_client_install_mb",
        "value": round(added / 2**20, 1),
        "unit": "MB",
        "goal": "< 30",
        "note": "fresh venv, `pip install ./clients/python`: " + ", ".join(names),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_inference(root: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [
        sys.executable, "-m", "likeness.cli.main", "serve", "inference", "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(_free_port()), "--storage-url", str(root / "storage"), "--cache-dir", str(root / "cache"),
        "--log-level", "WARNING", "--inference-queue-capacity", str(2 * CONCURRENT_CALLS),
    ]  # fmt: skip
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server writes to it until it stops
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    address = f"127.0.0.1:{port}"
    with LikenessClient(address) as client:
        client.wait_until_serving(timeout=180)
    return process, address


def _with_threads(address: str) -> float:
    with LikenessClient(address) as client, ThreadPoolExecutor(CONCURRENT_CALLS) as pool:
        started = time.perf_counter()
        results = list(
            pool.map(
                lambda i: client.generate(base_model="toy-sd15", prompt=f"a lighthouse {i}", parameters=PARAMETERS),
                range(CONCURRENT_CALLS),
            )
        )
        elapsed = time.perf_counter() - started
    assert all(len(result.images) == 1 for result in results)
    return elapsed


def _with_asyncio(address: str) -> float:
    async def calls() -> float:
        async with AsyncLikenessClient(address) as client:
            started = time.perf_counter()
            results = await asyncio.gather(
                *(
                    client.generate(base_model="toy-sd15", prompt=f"a lighthouse {i}", parameters=PARAMETERS)
                    for i in range(CONCURRENT_CALLS)
                )
            )
            elapsed = time.perf_counter() - started
        assert all(len(result.images) == 1 for result in results)
        return elapsed

    return asyncio.run(calls())


def concurrency_ratio() -> dict:
    root = Path(tempfile.mkdtemp(prefix="likeness-client-bench-"))
    process, address = _start_inference(root)
    try:
        _with_asyncio(address)  # warm-up: the base model's first batch, the channel
        _with_threads(address)
        ratios, asyncio_times, thread_times = [], [], []
        for _ in range(PAIRS):
            asyncio_seconds = _with_asyncio(address)
            thread_seconds = _with_threads(address)
            asyncio_times.append(asyncio_seconds)
            thread_times.append(thread_seconds)
            ratios.append(thread_seconds / asyncio_seconds)
            _log(f"asyncio {asyncio_seconds:.2f} s, threads {thread_seconds:.2f} s")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    return {
        "name": "clients.async_concurrency_ratio",
        "value": round(statistics.median(ratios), 2),
        "unit": "x",
        "goal": "report",
        "note": (
            f"{CONCURRENT_CALLS} concurrent generate calls (toy-sd15, 2 steps, 32 px) to a serve-inference process: "
            f"median wall time {statistics.median(thread_times):.2f} s from 100 threads over "
            f"{statistics.median(asyncio_times):.2f} s from one asyncio client ({PAIRS} alternated pairs)"
        ),
    }


def run() -> list[dict]:
    _log("installing the client into a fresh venv")
    figures = [install_size()]
    _log("100 concurrent generations, asyncio vs threads")
    figures.append(concurrency_ratio())
    return figures


if __name__ == "__main__":
    for figure in run():
        print(json.dumps(figure))
