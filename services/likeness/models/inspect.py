"""What a base model on disk is, before a catalog names it: architecture, weights variant, precision, size and
native resolution, read from the files' headers (no weights are loaded), with every problem a clear error that
names the file and what to do (`likeness models import`)."""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from likeness.errors import InvalidArgument, NotFound
from likeness.models.loading import (
    SAFE_SUFFIX,
    check_safe_weights_path,
    detect_arch,
    file_variant,
    native_resolution,
    single_file_standard,
    weights_variant,
)
from likeness.models.standard import check_prediction_type, standard_resolution

#: safetensors dtype names -> what a person calls them.
_PRECISIONS = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "F64": "fp64", "F8_E4M3": "fp8", "F8_E5M2": "fp8"}


@dataclass(frozen=True)
class ModelReport:
    """A base model as `likeness models import` reports it."""

    path: Path
    arch: str
    variant: str | None
    precision: str  # the floating-point type of most of the weights: fp32, fp16, bf16 (or "mixed: ...")
    size_bytes: int  # the weights files that load (the chosen variant's)
    parameters: int
    resolution: int
    config_dir: Path | None
    # The scheduler's objective ("epsilon" | "v_prediction"); None when no config tells.
    prediction_type: str | None = None
    # How it was chosen: "explicit", "config" (the model's scheduler config), "name" (an SD 2.x file name) or
    # "default" (an SD 2.x file whose name does not tell: v_prediction).
    prediction_reason: str = "config"
    # For a single file without config_dir: the shipped standard config it loads with ("sd2-v", ...).
    standard_config: str | None = None

    def catalog_entry(self, model_id: str) -> str:
        """The entry to add to the catalog spec (LIKENESS_BASE_MODELS). An explicit or guessed prediction type is
        written out, so the catalog loads what was checked."""
        options = [f"arch={self.arch}"]
        if self.config_dir is not None:
            options.append(f"config={self.config_dir}")
        if self.variant:
            options.append(f"variant={self.variant}")
        if self.prediction_type and self.prediction_reason != "config":
            options.append(f"prediction_type={self.prediction_type}")
        return f"{model_id}={self.path}|" + "|".join(options)


def _header(path: Path) -> dict[str, dict[str, object]]:
    """A safetensors file's tensor table, checked against the file's length (a cut download fails here)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise InvalidArgument(f"{path} is empty or cut short; download it again", field="path")
        (length,) = struct.unpack("<Q", raw)
        if length > min(size - 8, 100 * 2**20):
            raise InvalidArgument(f"{path} is not a safetensors file or is cut short; download it again", field="path")
        try:
            table = json.loads(handle.read(length))
        except ValueError:
            raise InvalidArgument(f"{path} has a damaged safetensors header; download it again", field="path") from None
    tensors = {name: info for name, info in table.items() if name != "__metadata__" and isinstance(info, dict)}
    end = max((int(info["data_offsets"][1]) for info in tensors.values()), default=0)  # type: ignore[index]
    if 8 + length + end > size:
        missing = 8 + length + end - size
        raise InvalidArgument(
            f"{path} is truncated: its header describes {missing} more bytes than the file holds; download it again",
            field="path",
        )
    return tensors


def _weights_files(path: Path, variant: str | None) -> list[Path]:
    """The files that load: a single file, or each component's files of `variant` (its plain ones without it)."""
    if path.is_file():
        return [path]
    files = []
    for component in sorted(item for item in path.iterdir() if item.is_dir()):
        candidates = list(component.glob(f"*{SAFE_SUFFIX}"))
        chosen = [file for file in candidates if file_variant(file) == (variant or "")]
        if not chosen and variant:  # a component without the variant loads its plain weights
            chosen = [file for file in candidates if file_variant(file) == ""]
        files.extend(sorted(chosen))
    return files


def _scheduler_prediction_type(folder: Path) -> str | None:
    config = folder / "scheduler" / "scheduler_config.json"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("prediction_type", "epsilon")
    except (OSError, ValueError):
        return None
    return str(value)


def inspect_model(
    path: str | Path,
    *,
    config_dir: str | Path | None = None,
    variant: str | None = None,
    prediction_type: str | None = None,
) -> ModelReport:
    """Checks a diffusers folder or single .safetensors checkpoint and reports what it is. NotFound for a missing
    path; InvalidArgument naming the file for pickle weights, truncated or damaged files, an unknown architecture,
    a single file whose shapes are not its architecture's standard ones (without `config_dir`) and a variant that
    is not there. A single file without `config_dir` is reported with the shipped config it loads with
    (`loading.single_file_standard`); `prediction_type` chooses SD 2.x's 512-base or 768-v and overrides any
    scheduler's."""
    check_prediction_type(prediction_type)
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise NotFound(f"{path} does not exist", field="path")
    check_safe_weights_path(path, field="path")
    config = Path(config_dir).expanduser().resolve() if config_dir else None
    chosen_variant = weights_variant(path, variant) if path.is_dir() else None
    files = _weights_files(path, chosen_variant)
    if not files:
        raise InvalidArgument(f"{path} holds no .safetensors weights", field="path")
    dtypes: Counter[str] = Counter()
    parameters = 0
    for file in files:
        for info in _header(file).values():
            shape = info.get("shape", [])
            count = 1
            for dim in shape if isinstance(shape, list) else []:
                count *= int(dim)
            parameters += count
            dtypes[str(info.get("dtype"))] += count
    arch = detect_arch(path, config_dir=config)
    standard: str | None = None
    chosen_prediction: str | None
    if path.is_file() and config is None:
        choice = single_file_standard(path, arch=arch, prediction_type=prediction_type)
        standard, chosen_prediction, reason = choice.name, choice.prediction_type, choice.reason
    elif prediction_type is not None:
        chosen_prediction, reason = prediction_type, "explicit"
    else:
        folder = path if path.is_dir() else config
        chosen_prediction, reason = (_scheduler_prediction_type(folder) if folder else None), "config"
    floats = {name: count for name, count in dtypes.items() if name in _PRECISIONS}
    main, main_count = max(floats.items(), key=lambda item: item[1]) if floats else ("?", 0)
    precision = _PRECISIONS.get(main, main)
    if main_count < 0.99 * sum(floats.values()):
        precision = "mixed: " + ", ".join(
            f"{_PRECISIONS[name]} {count / parameters:.0%}" for name, count in floats.items()
        )
    resolution = (standard_resolution(standard) if standard else native_resolution(path, config_dir=config)) or 0
    return ModelReport(
        path=path,
        arch=arch,
        variant=chosen_variant,
        precision=precision,
        size_bytes=sum(file.stat().st_size for file in files),
        parameters=parameters,
        resolution=resolution,
        config_dir=config if path.is_file() else None,
        prediction_type=chosen_prediction,
        prediction_reason=reason,
        standard_config=standard,
    )


def available_memory_bytes(device: str | object) -> int | None:
    """Free memory where the weights would go: the GPU's free memory for a CUDA device, the system's available
    memory (MemAvailable) otherwise; None when it cannot be told."""
    import torch

    target = torch.device(device) if isinstance(device, str) else device
    if isinstance(target, torch.device) and target.type == "cuda":
        free, _ = torch.cuda.mem_get_info(target)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(report: ModelReport, *, bytes_per_parameter: int, device: str | object) -> None:
    """FailedPrecondition naming the model when its weights alone (at the precision they load in) exceed the free
    memory of the device: a clear error at load, not an out-of-memory crash halfway."""
    from likeness.errors import FailedPrecondition

    needed = report.parameters * bytes_per_parameter
    free = available_memory_bytes(device)
    if free is not None and needed > free:
        raise FailedPrecondition(
            f"base model {report.path} needs {needed / 2**30:.1f} GiB for its weights alone at "
            f"{bytes_per_parameter * 8}-bit precision, but {device} has {free / 2**30:.1f} GiB free; load it in half "
            "precision (a GPU), use a device with more memory, or free memory first"
        )
