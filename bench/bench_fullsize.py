"""Full-size checks (issue 14): the real SD 1.5 and SDXL architectures, random weights, through the services.

For each architecture a diffusers folder with random weights is built once from the configs Likeness ships
(`likeness.models.standard`) and cached. Then, in a fresh process per architecture, as a user would:

1. an embedded trainer (the real gRPC service, its supervisor and a worker process) prepares five DreamBench photos
   at the native resolution and trains a 2-step LoRA (SD 1.5 at 512 px in fp32; SDXL at 1024 px, bf16 frozen
   weights with gradient checkpointing, which fits this 24 GiB machine); the worker's peak memory is its kernel
   high-water mark (`VmHWM`; on CUDA the peak `nvidia-smi` reports for it) and a step's time is the second step's
   (the loop's own rate between its progress reports);
2. the trainer stops, an embedded inference service loads the subject model and generates one image with 2 steps.

The trainer's memory plan (`likeness.trainer.training.memory`) estimates the same run from configs alone; the
figure `fullsize.memory_plan_error_ratio` is the worst |estimate - measured| / measured of the two runs.

Run: `python bench/bench_fullsize.py [--device cuda --precision bf16] [--only sd15] [--out FILE]` prints the
figures as JSON; `bench/run.py --only fullsize` records them; `bench/gpu_check.sh` runs it on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

DREAMBENCH_SUBJECT = Path(os.environ.get("LIKENESS_DREAMBENCH", ROOT.parent / "shared" / "datasets" / "dreambench"))
PHOTOS = 5
STEPS = 2
#: architecture -> (standard config, resolution, CPU mixed precision, gradient checkpointing)
RUNS = {
    "sd15": ("sd15", 512, "no", False),
    "sdxl": ("sdxl-base", 1024, "bf16", True),
}


def _log(message: str) -> None:
    print(f"[fullsize {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- building random full-size models ---------------------------------------------------------------------------


def model_folder(name: str) -> Path:
    from likeness.models.cache import likeness_cache_dir

    return likeness_cache_dir() / "fullsize-bench" / name


def build_model(name: str) -> Path:
    """A diffusers folder of the standard config `name` with random (default-initialised) fp16 weights."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from likeness.models.standard import standard_config_dir

    final = model_folder(name)
    if (final / "unet" / "diffusion_pytorch_model.safetensors").is_file():
        return final
    staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=final.parent if final.parent.exists() else None))
    shutil.rmtree(staging)
    shutil.copytree(standard_config_dir(name), staging)
    torch.manual_seed(0)
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        folder = staging / component
        if not folder.is_dir():
            continue
        started = time.monotonic()
        config = json.loads((folder / "config.json").read_text())
        if component == "unet":
            model = UNet2DConditionModel.from_config(config)
        elif component == "vae":
            model = AutoencoderKL.from_config(config)
        else:
            text_config = CLIPTextConfig.from_pretrained(str(folder))
            with_projection = "WithProjection" in str(config.get("architectures"))
            model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(text_config)
        model.to(torch.float16).save_pretrained(str(folder), safe_serialization=True)
        del model
        _log(f"built {name}/{component} in {time.monotonic() - started:.0f} s")
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


# ---- measuring a worker's memory ---------------------------------------------------------------------------------


class WorkerPeak:
    """Samples the trainer's worker processes (children of this process): the largest VmHWM (CPU) or the
    largest per-process GPU memory nvidia-smi reports (CUDA)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.peak_bytes = 0
        #: The peak since `start_steps` (CPU: the kernel's high-water mark, reset through clear_refs).
        self.steps_peak_bytes = 0
        self._steps = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WorkerPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()

    def start_steps(self) -> None:
        """From now on also track the training steps' own peak (the model load and set-up are behind)."""
        self.sample()
        if not self.cuda:
            for pid in self._children():
                try:
                    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
                except OSError:
                    continue
        self._steps = True

    def _children(self) -> list[int]:
        import psutil

        return [child.pid for child in psutil.Process().children(recursive=True)]

    def sample(self) -> None:
        pids = self._children()
        if self.cuda:
            out = subprocess.run(
                ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            for line in out.splitlines():
                pid, used = (part.strip() for part in line.split(","))
                if int(pid) in pids:
                    self._record(int(used) * 2**20)
            return
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self._record(int(line.split()[1]) * 1024)

    def _record(self, used: int) -> None:
        self.peak_bytes = max(self.peak_bytes, used)
        if self._steps:
            self.steps_peak_bytes = max(self.steps_peak_bytes, used)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()


# ---- one architecture, through the services ---------------------------------------------------------------------


def _photos() -> list[tuple[str, bytes]]:
    folder = DREAMBENCH_SUBJECT / "dog"
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in {".jpg", ".jpeg", ".png"})[:PHOTOS]
    return [(path.name, path.read_bytes()) for path in files]


def measure(arch: str, device: str, precision: str | None) -> dict:
    import torch

    from likeness.server.embedded import EmbeddedServer
    from likeness.server.settings import Settings
    from likeness.trainer.config import TrainingConfig
    from likeness.trainer.training.memory import ModelShape, plan_memory
    from likeness_client import LikenessClient
    from likeness_client.v1 import trainer_service_pb2 as trainer_pb
    from likeness_client.v1 import types_pb2

    standard, resolution, cpu_precision, checkpointing = RUNS[arch]
    precision = precision or cpu_precision
    folder = model_folder(standard)
    model_id = f"full-{arch}"
    work = Path(tempfile.mkdtemp(prefix=f"likeness-fullsize-{arch}-"))
    settings = Settings(
        storage_url=str(work / "storage"),
        cache_dir=str(work / "cache"),
        base_models=f"{model_id}={folder}",
        default_base_model=model_id,
        device=device,
        log_level="WARNING",
    )
    precision_pb = {"no": trainer_pb.MIXED_PRECISION_NO, "bf16": trainer_pb.MIXED_PRECISION_BF16,
                    "fp16": trainer_pb.MIXED_PRECISION_FP16}[precision]  # fmt: skip
    spec = trainer_pb.TrainingJobSpec(
        base_model=model_id,
        identifier="ohwx",
        class_noun="dog",
        method=types_pb2.TRAINING_METHOD_LORA,
        hyperparameters=trainer_pb.Hyperparameters(
            max_train_steps=STEPS,
            resolution=resolution,
            mixed_precision=precision_pb,
            gradient_checkpointing=checkpointing,
            seed=0,
        ),
        checkpointing=trainer_pb.CheckpointConfig(every_n_steps=0),
    )
    result: dict = {"arch": arch, "device": device, "precision": precision, "resolution": resolution}
    try:
        with EmbeddedServer(settings, ["trainer"]) as server, LikenessClient(server.address) as client:
            started = time.monotonic()
            dataset = client.prepare_dataset(
                _photos(),
                trainer_pb.DatasetOptions(
                    base_model=model_id, resolution=resolution, subject_type=trainer_pb.SUBJECT_TYPE_OBJECT
                ),
                timeout=600,
            ).dataset
            spec.dataset_id = dataset.dataset_id
            with WorkerPeak(device.startswith("cuda")) as peak:
                job = client.create_training_job(spec).job
                last_progress = None
                for event in client.watch_training_job(job.job_id):
                    if event.WhichOneof("event") == "progress":
                        if last_progress is None:
                            peak.start_steps()  # after step 1: step 2 runs with the set-up behind it
                        last_progress = event.progress
                        _log(f"{arch}: step {event.progress.step}/{event.progress.total_steps}")
                job = client.get_training_job(job.job_id)
            if job.state != trainer_pb.JOB_STATE_SUCCEEDED:
                raise RuntimeError(f"{arch} training ended {trainer_pb.JobState.Name(job.state)}: {job.error}")
            result["train_wall_seconds"] = time.monotonic() - started
            result["step_seconds"] = 1.0 / last_progress.steps_per_second
            result["peak_bytes"] = peak.peak_bytes
            result["steps_peak_bytes"] = peak.steps_peak_bytes
            subject = job.subject_model_id
            resolved = job.spec
        _log(f"{arch}: trained in {result['train_wall_seconds']:.0f} s; generating")
        with EmbeddedServer(settings, ["inference"]) as server, LikenessClient(server.address) as client:
            load_started = time.monotonic()
            client.load_subject_model(subject, timeout=1800)
            result["load_seconds"] = time.monotonic() - load_started
            started = time.monotonic()
            generated = client.generate(
                prompt="a photo of ohwx dog on a beach",
                subject_model_id=subject,
                parameters=types_pb2.GenerationParameters(
                    num_inference_steps=STEPS, width=resolution, height=resolution, seed=0
                ),
                timeout=3600,
            )
            result["generate_seconds"] = time.monotonic() - started
            result["images"] = len(generated.images)
        # The plan for the job as it was resolved (the same config the worker planned with).
        from likeness.trainer.servicer import spec_to_dict

        config = TrainingConfig.from_spec(spec_to_dict(resolved), identifier="ohwx")
        dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        cuda = device.startswith("cuda")
        plan = plan_memory(
            ModelShape.of_folder(folder),
            config,
            device_type="cuda" if cuda else "cpu",
            dtype=dtype,
            resolution=resolution,
            # The GPU's size, as the worker planned for; on this CPU the requested options fit as they are.
            budget_bytes=torch.cuda.get_device_properties(0).total_memory if cuda else None,
        )
        result["estimate_bytes"] = plan.estimate.total
        result["steps_estimate_bytes"] = plan.estimate.training
        result["plan"] = plan.describe()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


# ---- figures -----------------------------------------------------------------------------------------------------


def figures(results: list[dict], suffix: str) -> list[dict]:
    out: list[dict] = []
    errors = []
    for r in results:
        arch = r["arch"]
        note = f"{r['resolution']} px, {r['precision']}, {r['plan']}"
        out.append({"name": f"fullsize.{arch}_lora_step_seconds_{suffix}", "value": round(r["step_seconds"], 2),
                    "unit": "s", "goal": "report", "note": note})  # fmt: skip
        out.append({"name": f"fullsize.{arch}_lora_peak_rss_mb" if suffix == "cpu" else f"fullsize.{arch}_lora_peak_gpu_mb",
                    "value": round(r["peak_bytes"] / 2**20), "unit": "MiB", "goal": "report",
                    "note": f"whole job; plan estimate {r['estimate_bytes'] / 2**20:.0f} MiB. During step 2: "
                            f"{r['steps_peak_bytes'] / 2**20:.0f} MiB measured, "
                            f"{r['steps_estimate_bytes'] / 2**20:.0f} MiB estimated"})  # fmt: skip
        errors.append(abs(r["estimate_bytes"] - r["peak_bytes"]) / r["peak_bytes"])
        if r["steps_peak_bytes"]:
            errors.append(abs(r["steps_estimate_bytes"] - r["steps_peak_bytes"]) / r["steps_peak_bytes"])
        out.append({"name": f"fullsize.{arch}_generate_seconds_{suffix}", "value": round(r["generate_seconds"], 1),
                    "unit": "s", "goal": "report",
                    "note": f"{STEPS} steps at {r['resolution']} px; subject load {r['load_seconds']:.0f} s"})  # fmt: skip
    if errors:
        out.append({"name": "fullsize.memory_plan_error_ratio", "value": round(max(errors), 3), "unit": "ratio",
                    "goal": "<= 0.2", "note": "worst of, per architecture, the whole job and step 2: "
                    + ", ".join(f"{error:.3f}" for error in errors)})  # fmt: skip
    return out


def _in_subprocess(arch: str, device: str, precision: str | None) -> dict:
    # A process per architecture: its memory starts clean and the model it builds or loads is freed at its exit.
    for step in ("--build", "--measure"):
        command = [sys.executable, __file__, step, arch, "--device", device]
        if precision:
            command += ["--precision", precision]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(command[1:])} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(device: str = "cpu", precision: str | None = None, only: list[str] | None = None) -> list[dict]:
    results = []
    for arch in only or list(RUNS):
        _log(f"{arch}: building and measuring on {device}")
        results.append(_in_subprocess(arch, device, precision))
    return figures(results, "cpu" if device == "cpu" else "gpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("no", "bf16", "fp16"))
    parser.add_argument("--only", action="append", choices=list(RUNS))
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--build", metavar="ARCH", help=argparse.SUPPRESS)
    parser.add_argument("--measure", metavar="ARCH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.build:
        build_model(RUNS[args.build][0])
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.device, args.precision)))
        return
    figures_out = run(args.device, args.precision, args.only)
    text = json.dumps(figures_out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
