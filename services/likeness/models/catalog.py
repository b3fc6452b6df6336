"""The catalog of base models a deployment offers, by id.

Built from a spec string (env `LIKENESS_BASE_MODELS`), a comma-separated list of `ID=SOURCE[|OPTION=VALUE...]`:

    tiny-sd15=builtin:sd15,sd15=/models/sd15,sdxl=/models/sdxl.safetensors|config=/models/sdxl-diffusers

SOURCE is `builtin:NAME` (a model Likeness creates itself, written once into the cache directory), `file:PATH`
or a plain PATH (a diffusers folder or a single `.safetensors` file). Options: `config=DIR`, a diffusers folder
completing a single file (without it, a full-size SD 1.x / 2.x / XL file loads with the configs shipped in the
package); `arch=sd15|sd2|sdxl` to skip detection; `variant=fp16`; `prediction_type=epsilon|v_prediction`, which
picks SD 2.x's 512-base or 768-v config for a single file (guessed from the file name when unset) and overrides the
scheduler's of any model.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from likeness.errors import FailedPrecondition, InvalidArgument, NotFound
from likeness.models.arch import TINY_FORMAT_VERSION, TINY_RESOLUTION_LIMIT, ArchInfo, arch_info, check_arch
from likeness.models.cache import likeness_cache_dir
from likeness.models.inspect import check_fits, inspect_model
from likeness.models.loading import (
    check_safe_weights_path,
    detect_arch,
    load_base_pipeline,
    native_resolution,
    single_file_standard,
    weights_variant,
)
from likeness.models.standard import check_prediction_type, standard_config_dir
from likeness.threads import run_in_short_lived_thread

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

BASE_MODELS_ENV = "LIKENESS_BASE_MODELS"
DEFAULT_CATALOG_SPEC = "toy-sd15=builtin:toy,tiny-sd15=builtin:sd15,tiny-sdxl=builtin:sdxl"
BUILTIN_SCHEME = "builtin:"
FILE_SCHEME = "file:"
SPEC_FIELD = "base_models"
MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ENTRY_OPTIONS = ("config", "arch", "variant", "prediction_type")
# Temp folders older than this were left by a process that died while materialising a builtin model.
STALE_TEMP_SECONDS = 3600


@dataclass(frozen=True)
class BuiltinModel:
    """A base model Likeness can create itself. `write(directory)` writes a diffusers folder into `directory`."""

    name: str
    arch: str
    # Part of the cache folder name: bump it when `write` would produce different weights.
    version: int
    write: Callable[[Path], Any]


_BUILTINS: dict[str, BuiltinModel] = {}
_BUILTINS_LOCK = threading.Lock()


def register_builtin(model: BuiltinModel) -> None:
    """Make `builtin:<model.name>` usable in catalog specs (replaces a builtin of the same name)."""
    check_arch(model.arch)
    with _BUILTINS_LOCK:
        _BUILTINS[model.name] = model


#: Built-ins defined outside this package: name -> the module that registers it when imported. Imported the first
#: time a catalog names the built-in, so loading the catalog (every service does) never imports them.
BUILTIN_PROVIDERS = {"toy": "likeness.world.base_model"}


def builtin_names() -> list[str]:
    return sorted(set(_BUILTINS) | set(BUILTIN_PROVIDERS))


def find_builtin(name: str) -> BuiltinModel | None:
    """The built-in called `name`, importing its provider on first use; None when there is none."""
    with _BUILTINS_LOCK:
        found = _BUILTINS.get(name)
    if found is None and name in BUILTIN_PROVIDERS:
        importlib.import_module(BUILTIN_PROVIDERS[name])  # the provider registers itself
        with _BUILTINS_LOCK:
            found = _BUILTINS.get(name)
    return found


def _write_tiny(arch: str, directory: Path) -> Path:
    # Imported here: building models needs diffusers, parsing and listing the catalog does not.
    from likeness.models.tiny import save_tiny_pipeline

    return save_tiny_pipeline(arch, directory, seed=0)


for _arch in ("sd15", "sdxl"):
    register_builtin(
        BuiltinModel(
            name=_arch,
            arch=_arch,
            version=TINY_FORMAT_VERSION,
            write=functools.partial(_write_tiny, _arch),
        )
    )


@dataclass(frozen=True)
class CatalogEntry:
    """One entry of the spec as written, before anything is read from disk.

    `arch` is the `arch=` option, or a builtin's architecture; None when only the files can tell.
    """

    id: str
    source: str
    config_dir: str | None = None
    arch: str | None = None
    variant: str | None = None
    prediction_type: str | None = None

    @property
    def builtin(self) -> str | None:
        return self.source[len(BUILTIN_SCHEME) :] if self.source.startswith(BUILTIN_SCHEME) else None


@dataclass(frozen=True)
class BaseModelSpec:
    """A resolved base model: `source` exists locally and can be given to `load_base_pipeline`."""

    id: str
    source: Path
    arch: str
    # The native image size (width = height) the model was trained at.
    resolution: int
    is_tiny: bool
    # The diffusers folder completing a single-file `source` (the entry's config=, else the shipped standard
    # configs materialised in the cache); None for diffusers folders.
    config_dir: Path | None = None
    # The weights variant of a diffusers folder ("fp16"); None for the plain weights.
    variant: str | None = None
    # The scheduler objective to load with ("epsilon" | "v_prediction"); None: the model's own config.
    prediction_type: str | None = None

    @property
    def info(self) -> ArchInfo:
        """The architecture's facts, with this model's own native size as the default (e.g. 512 px SD 2 base,
        32 px toy model) so requests that leave width/height unset get the size the model was trained at."""
        info = arch_info(self.arch, tiny=self.is_tiny)
        if info.min_resolution <= self.resolution <= info.max_resolution:
            info = replace(info, default_resolution=self.resolution)
        return info


def parse_catalog_spec(spec: str) -> list[CatalogEntry]:
    """Parse `ID=SOURCE[|config=DIR][|arch=ARCH][|variant=fp16][|prediction_type=v_prediction],...`; raises
    `InvalidArgument` naming the bad entry."""
    entries: list[CatalogEntry] = []
    seen: set[str] = set()
    for raw_entry in spec.split(","):
        text = raw_entry.strip()
        if not text:
            continue
        model_id, separator, rest = text.partition("=")
        model_id = model_id.strip()
        if not separator or not rest.strip():
            raise InvalidArgument(f"catalog entry {text!r} must look like ID=SOURCE", field=SPEC_FIELD)
        if not MODEL_ID_PATTERN.match(model_id):
            raise InvalidArgument(
                f"base model id {model_id!r} may use only letters, digits, '.', '_' and '-'", field=SPEC_FIELD
            )
        if model_id in seen:
            raise InvalidArgument(f"base model id {model_id!r} appears twice", field=SPEC_FIELD)
        seen.add(model_id)
        source, *raw_options = (part.strip() for part in rest.split("|"))
        options: dict[str, str] = {}
        for option in raw_options:
            key, has_value, value = option.partition("=")
            if key not in ENTRY_OPTIONS or not has_value or not value:
                raise InvalidArgument(
                    f"catalog entry {model_id!r}: unknown option {option!r}; options are "
                    + ", ".join(f"{name}=..." for name in ENTRY_OPTIONS),
                    field=SPEC_FIELD,
                )
            options[key] = value
        if source.startswith(FILE_SCHEME):
            source = source[len(FILE_SCHEME) :]
        arch = options.get("arch")
        if arch is not None:
            check_arch(arch)
        check_prediction_type(options.get("prediction_type"), field=SPEC_FIELD)
        if source.startswith(BUILTIN_SCHEME):
            builtin = find_builtin(source[len(BUILTIN_SCHEME) :])
            if builtin is None:
                raise InvalidArgument(
                    f"catalog entry {model_id!r}: unknown {source!r}; builtins are "
                    + ", ".join(BUILTIN_SCHEME + name for name in builtin_names()),
                    field=SPEC_FIELD,
                )
            if arch not in (None, builtin.arch):
                raise InvalidArgument(f"catalog entry {model_id!r}: {source} is {builtin.arch}", field=SPEC_FIELD)
            # A builtin's architecture is known without materialising it.
            arch = builtin.arch
        entries.append(
            CatalogEntry(
                model_id, source, options.get("config"), arch, options.get("variant"), options.get("prediction_type")
            )
        )
    return entries


class BaseModelCatalog:
    """Base model ids -> local sources; builtin models are materialised into `cache_dir` on first use.

    Safe to share between threads, and between processes sharing `cache_dir`: a builtin is written into a
    private temp folder and renamed into place, so readers never see a half-written model.
    """

    def __init__(self, spec: str = DEFAULT_CATALOG_SPEC, cache_dir: str | Path | None = None) -> None:
        self._entries = {entry.id: entry for entry in parse_catalog_spec(spec)}
        self.cache_dir = Path(cache_dir) if cache_dir is not None else likeness_cache_dir() / "base-models"
        self._resolved: dict[str, BaseModelSpec] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, cache_dir: str | Path | None = None) -> BaseModelCatalog:
        """The catalog named by `$LIKENESS_BASE_MODELS`, or the default tiny builtins when it is unset."""
        return cls(os.environ.get(BASE_MODELS_ENV) or DEFAULT_CATALOG_SPEC, cache_dir)

    def ids(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[CatalogEntry]:
        return list(self._entries.values())

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._entries

    def resolve(self, model_id: str) -> BaseModelSpec:
        """The local source, architecture and resolution of `model_id` (materialising a builtin once)."""
        entry = self._entries.get(model_id)
        if entry is None:
            raise NotFound(
                f"unknown base model {model_id!r}; known base models: {', '.join(self._entries) or '(none)'}",
                field="base_model",
            )
        with self._lock:
            spec = self._resolved.get(model_id)
            if spec is None:
                spec = self._resolve_entry(entry)
                self._resolved[model_id] = spec
        return spec

    def load(
        self, model_id: str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
        """Load `model_id` as a diffusers pipeline (StableDiffusionPipeline or StableDiffusionXLPipeline).
        FailedPrecondition naming the model when its weights alone exceed the device's free memory."""
        import torch

        spec = self.resolve(model_id)
        report = inspect_model(spec.source, config_dir=spec.config_dir, variant=spec.variant)  # headers only
        check_fits(report, bytes_per_parameter=(dtype or torch.float32).itemsize, device=device)
        return load_base_pipeline(
            spec.source,
            arch=spec.arch,
            config_dir=spec.config_dir,
            torch_dtype=dtype,
            device=device,
            variant=spec.variant,
            prediction_type=spec.prediction_type,
        )

    def _resolve_entry(self, entry: CatalogEntry) -> BaseModelSpec:
        builtin_name = entry.builtin
        if builtin_name is not None:
            builtin = find_builtin(builtin_name)
            assert builtin is not None, builtin_name  # checked when the catalog was parsed
            folder = self._materialise(builtin)
            resolution = native_resolution(folder) or arch_info(builtin.arch).default_resolution
            return BaseModelSpec(
                entry.id,
                folder,
                builtin.arch,
                resolution,
                is_tiny=resolution < TINY_RESOLUTION_LIMIT,
                prediction_type=entry.prediction_type,
            )
        source = Path(entry.source).expanduser()
        if not source.exists():
            raise NotFound(f"base model {entry.id!r} points to {source}, which does not exist", field="base_model")
        check_safe_weights_path(source, field="base_model")
        config_dir = Path(entry.config_dir).expanduser() if entry.config_dir else None
        if config_dir is not None and not config_dir.is_dir():
            raise NotFound(f"config folder {config_dir} of base model {entry.id!r} does not exist", field="base_model")
        arch = entry.arch or detect_arch(source, config_dir=config_dir)
        prediction_type = entry.prediction_type
        if source.is_file() and config_dir is None:
            # A full-size standard single file: the shipped configs complete it (checked against its shapes).
            choice = single_file_standard(source, arch=arch, prediction_type=prediction_type)
            config_dir, prediction_type = standard_config_dir(choice.name), choice.prediction_type
        resolution = native_resolution(source, config_dir=config_dir) or arch_info(arch).default_resolution
        if entry.variant and source.is_file():
            raise InvalidArgument(
                f"base model {entry.id!r}: variant= applies to diffusers folders; {source} is a single file",
                field="base_model",
            )
        return BaseModelSpec(
            entry.id,
            source,
            arch,
            resolution,
            is_tiny=resolution < TINY_RESOLUTION_LIMIT,
            config_dir=config_dir if source.is_file() else None,
            variant=weights_variant(source, entry.variant) if source.is_dir() else None,
            prediction_type=prediction_type,
        )

    def _materialise(self, builtin: BuiltinModel) -> Path:
        final = self.cache_dir / f"builtin-{builtin.name}-v{builtin.version}"
        if (final / "model_index.json").is_file():
            return final
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temp_folders(final.name)
        temp = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=f".{final.name}.tmp-"))
        try:
            # Building a model runs torch ops; on a thread that ends, so no idle OpenMP pool outlives it.
            run_in_short_lived_thread(builtin.write, temp, name="likeness-materialise")
            try:
                os.rename(temp, final)
            except OSError:
                # Another process renamed its copy first; the two are identical, keep theirs.
                if not (final / "model_index.json").is_file():
                    raise FailedPrecondition(
                        f"{final} exists but holds no complete model; remove it so it can be rebuilt"
                    ) from None
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        return final

    def _remove_stale_temp_folders(self, name: str) -> None:
        cutoff = time.time() - STALE_TEMP_SECONDS
        for candidate in self.cache_dir.glob(f".{name}.tmp-*"):
            try:
                if candidate.stat().st_mtime < cutoff:
                    shutil.rmtree(candidate, ignore_errors=True)
            except OSError:
                continue  # removed by another process meanwhile
