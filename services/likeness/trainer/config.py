"""The training configuration: a validated, JSON-serialisable description of one DreamBooth run.

`TrainingConfig.from_spec` turns the plain-dict form of a `TrainingJobSpec` (unset optional fields are None or
absent) into a config with every default filled in, raising `InvalidArgument` naming the offending field with its
API path (`spec.hyperparameters.learning_rate`). The resolved config is what the job record stores, so a resumed
or re-run job trains with exactly the same values, including the seed picked for it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from likeness.errors import InvalidArgument
from likeness.storage.layout import class_image_cache_key

METHODS = ("lora", "full")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "polynomial")
MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")
#: "auto": the memory plan adds savers until the run fits its device; "off": the hyperparameters as given.
MEMORY_PLAN_MODES = ("auto", "off")
#: "" lets the memory plan choose; "adamw_8bit" is bitsandbytes' (CUDA only).
OPTIMIZERS = ("", "adamw", "adamw_8bit", "adafactor")
MIN_MEMORY_BUDGET_MIB = 1024
MAX_MEMORY_BUDGET_MIB = 1024 * 1024
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# The text encoders' attention projections, the usual LoRA targets on CLIP.
TEXT_ENCODER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")

DEFAULT_STEPS = {"lora": 400, "full": 800}
DEFAULT_LEARNING_RATE = {"lora": 1e-4, "full": 5e-6}
MAX_STEPS = 100_000
MAX_BATCH_SIZE = 64
MAX_ACCUMULATION = 128
MAX_RANK = 256
MAX_CLASS_IMAGES = 1000
MAX_VALIDATION_PROMPTS = 8
MAX_PROMPT_CHARS = 1000
MAX_LABELS = 64
MAX_NOUN_CHARS = 64
MAX_DISPLAY_NAME_CHARS = 200
#: The most data-parallel processes (devices) one job may ask for: one node's.
MAX_PROCESSES_PER_JOB = 16
MIN_RESOLUTION = 32
MAX_RESOLUTION = 2048
MAX_VALIDATION_STEPS = 150
MAX_KEEP_CHECKPOINTS = 100
MAX_SEED = 2**63 - 1

_MODULE_NAME = re.compile(r"^[A-Za-z0-9_.]+$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
# Placeholders accepted in prompts; `{subject}` is "<identifier> <class noun>".
PROMPT_PLACEHOLDERS = ("{identifier}", "{class_noun}", "{subject}")


@dataclass
class LoraSettings:
    """LoRA adapter shape. `alpha` None means alpha = rank (a scale of 1)."""

    rank: int = 16
    alpha: float | None = None
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    dropout: float = 0.0

    @property
    def effective_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)


@dataclass
class PriorSettings:
    """Prior preservation. `class_prompt` is resolved ("a photo of <class noun>" when left empty)."""

    enabled: bool = False
    class_prompt: str = ""
    num_class_images: int = 100
    prior_loss_weight: float = 1.0
    class_dataset_id: str = ""


@dataclass
class ValidationSettings:
    """Validation renders; `prompts` are already expanded (no placeholders left)."""

    prompts: list[str] = field(default_factory=list)
    every_n_steps: int = 0
    num_inference_steps: int = 25
    seed: int = 0


@dataclass
class CheckpointSettings:
    """Resumable checkpoints every `every_n_steps` steps (0: none), the last `keep_last` kept."""

    every_n_steps: int = 100
    keep_last: int = 2


@dataclass
class TrainingConfig:
    """Everything that defines a training run, with defaults resolved (see the proto comments)."""

    base_model: str
    identifier: str
    class_noun: str
    method: str = "lora"
    dataset_id: str = ""
    instance_prompt: str = ""
    max_train_steps: int = 400
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    #: "auto": the memory plan adds savers until the run fits the device; "off": exactly as given.
    memory_plan: str = "auto"
    #: Device memory the plan fits the run into, in MiB; None: what the device has.
    memory_budget_mib: int | None = None
    #: "adamw", "adamw_8bit" (CUDA), "adafactor"; "": the memory plan's choice (AdamW unless memory is short).
    optimizer: str = ""
    seed: int = 0
    snr_gamma: float | None = None
    noise_offset: float | None = None
    random_flip: bool = False
    center_crop: bool = False
    resolution: int = 0
    train_text_encoder: bool = False
    text_encoder_learning_rate: float | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    prior: PriorSettings = field(default_factory=PriorSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    checkpointing: CheckpointSettings = field(default_factory=CheckpointSettings)
    export_kohya: bool = False
    #: Data-parallel processes (one per device); 0: the trainer's --trainer-processes-per-job.
    processes: int = 0
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        """How prompts name the subject: "<identifier> <class noun>"."""
        return f"{self.identifier} {self.class_noun}"

    @property
    def effective_text_encoder_learning_rate(self) -> float:
        return self.learning_rate if self.text_encoder_learning_rate is None else self.text_encoder_learning_rate

    def expand_prompt(self, prompt: str) -> str:
        """Replaces `{identifier}`, `{class_noun}` and `{subject}` in a prompt or caption."""
        return (
            prompt.replace("{subject}", self.subject)
            .replace("{identifier}", self.identifier)
            .replace("{class_noun}", self.class_noun)
        )

    @property
    def class_images_key(self) -> str:
        """The shared class-image cache set this run trains with ("" without prior preservation or with a class
        dataset of the caller's): recorded on the job, so erasing a subject can tell which sets only it used."""
        prior = self.prior
        if not prior.enabled or prior.class_dataset_id or not self.resolution:
            return ""
        return class_image_cache_key(self.base_model, prior.class_prompt, self.resolution, prior.num_class_images)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """Rebuilds a config stored by `to_dict` (no re-validation: it was validated when it was created)."""
        values = dict(data)
        nested = {
            "lora": LoraSettings,
            "prior": PriorSettings,
            "validation": ValidationSettings,
            "checkpointing": CheckpointSettings,
        }
        for name, settings_class in nested.items():
            values[name] = settings_class(**values.get(name, {}))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, identifier: str, seed: int | None = None) -> TrainingConfig:
        """Validates a job spec and fills in defaults.

        `spec` mirrors `TrainingJobSpec` as plain Python values: keys as in the proto, unset optional fields
        None or absent, `method` as "lora"/"full"/"" and `hyperparameters.mixed_precision` as
        "auto"/"no"/"fp16"/"bf16". `identifier` is the already validated (or chosen) identifier token; base model
        existence and identifier rarity are checked by the caller, who knows the tokenizer. `seed` is used when
        the spec leaves it unset (a random one otherwise). A key the reader does not read is refused
        (`InvalidArgument` naming its API path), so a field carried by the converter but forgotten here fails loudly.
        """
        return _SpecReader(spec).build(identifier=identifier, default_seed=seed)


class _ReadKeys(Mapping[str, Any]):
    """A spec message that remembers which keys the reader looked at, so that any other key can be refused."""

    values: Mapping[str, Any]  # type: ignore[assignment]  # shadows Mapping.values() on purpose

    def __init__(self, values: Mapping[str, Any], path: str) -> None:
        self.values = values
        self.path = path
        self.read: set[Any] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self.values[key]

    def __contains__(self, key: object) -> bool:
        self.read.add(key)
        return key in self.values

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def refuse_unread(self) -> None:
        """InvalidArgument naming the API path of the first key nobody read (a field the reader does not know)."""
        unread = [key for key in self.values if key not in self.read]
        if unread:
            raise InvalidArgument(
                f"unknown field {unread[0]!r}; this trainer does not read it", field=f"{self.path}{unread[0]}"
            )


def _section(spec: _ReadKeys, name: str) -> _ReadKeys:
    value = spec.get(name) or {}
    if not isinstance(value, Mapping):
        raise InvalidArgument("must be a message", field=f"spec.{name}")
    return _ReadKeys(value, f"spec.{name}.")


class _SpecReader:
    """Reads one spec, checking each value against its documented range; a key it does not read is an error."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = _ReadKeys(spec, "spec.")
        self.sections: list[_ReadKeys] = []

    def _section(self, name: str) -> _ReadKeys:
        section = _section(self.spec, name)
        self.sections.append(section)
        return section

    def build(self, *, identifier: str, default_seed: int | None) -> TrainingConfig:
        spec = self.spec
        spec.read.add("identifier")  # known: the caller checked (or chose) it and passes it as `identifier`
        base_model = _text(spec.get("base_model"), "spec.base_model", required=True, limit=128)
        class_noun = _text(spec.get("class_noun"), "spec.class_noun", required=True, limit=MAX_NOUN_CHARS)
        if "\n" in class_noun or "{" in class_noun:
            raise InvalidArgument("must be a plain noun such as 'dog' or 'person'", field="spec.class_noun")
        if class_noun.lower() == identifier.lower():
            raise InvalidArgument(
                "must differ from the identifier; the identifier names this subject, the noun its class",
                field="spec.identifier",
            )
        method = spec.get("method") or "lora"
        if method not in METHODS:
            raise InvalidArgument(f"must be one of {', '.join(METHODS)}, got {method!r}", field="spec.method")

        config = TrainingConfig(base_model=base_model, identifier=identifier, class_noun=class_noun, method=method)
        config.dataset_id = _text(spec.get("dataset_id"), "spec.dataset_id", limit=128)
        config.display_name = _text(spec.get("display_name"), "spec.display_name", limit=MAX_DISPLAY_NAME_CHARS)
        config.export_kohya = bool(spec.get("export_kohya", False))
        config.processes = _integer(spec.get("processes"), "spec.processes", 0, MAX_PROCESSES_PER_JOB, 0)
        config.labels = _labels(spec.get("labels") or {})
        self._hyperparameters(config, self._section("hyperparameters"), default_seed)
        self._lora(config, self._section("lora"))
        self._prior(config, self._section("prior_preservation"))
        self._validation(config, self._section("validation"))
        self._checkpointing(config, self._section("checkpointing"))
        self._instance_prompt(config, spec.get("instance_prompt") or "")
        for message in (spec, *self.sections):
            message.refuse_unread()
        return config

    def _hyperparameters(self, config: TrainingConfig, hp: Mapping[str, Any], default_seed: int | None) -> None:
        path = "spec.hyperparameters."
        method = config.method
        config.max_train_steps = _integer(
            hp.get("max_train_steps"), path + "max_train_steps", 1, MAX_STEPS, DEFAULT_STEPS[method]
        )
        config.learning_rate = _rate(hp.get("learning_rate"), path + "learning_rate", DEFAULT_LEARNING_RATE[method])
        scheduler = hp.get("lr_scheduler") or "constant"
        if scheduler not in LR_SCHEDULERS:
            raise InvalidArgument(
                f"must be one of {', '.join(LR_SCHEDULERS)}, got {scheduler!r}", field=path + "lr_scheduler"
            )
        config.lr_scheduler = scheduler
        config.lr_warmup_steps = _integer(
            hp.get("lr_warmup_steps"), path + "lr_warmup_steps", 0, config.max_train_steps, 0
        )
        config.train_batch_size = _integer(hp.get("train_batch_size"), path + "train_batch_size", 1, MAX_BATCH_SIZE, 1)
        config.gradient_accumulation_steps = _integer(
            hp.get("gradient_accumulation_steps"), path + "gradient_accumulation_steps", 1, MAX_ACCUMULATION, 1
        )
        precision = hp.get("mixed_precision") or "auto"
        if precision not in MIXED_PRECISIONS:
            raise InvalidArgument(
                f"must be one of {', '.join(MIXED_PRECISIONS)}, got {precision!r}", field=path + "mixed_precision"
            )
        config.mixed_precision = precision
        config.gradient_checkpointing = bool(hp.get("gradient_checkpointing", False))
        config.memory_plan = _choice(hp.get("memory_plan") or "auto", MEMORY_PLAN_MODES, path + "memory_plan")
        config.optimizer = _choice(hp.get("optimizer") or "", OPTIMIZERS, path + "optimizer")
        if hp.get("memory_budget_mib") is not None:
            config.memory_budget_mib = _integer(
                hp["memory_budget_mib"], path + "memory_budget_mib", MIN_MEMORY_BUDGET_MIB, MAX_MEMORY_BUDGET_MIB, 0
            )
        seed = hp.get("seed")
        if seed is None:
            seed = default_seed if default_seed is not None else secrets.randbelow(2**31)
        config.seed = _integer(seed, path + "seed", 0, MAX_SEED, 0)
        if hp.get("snr_gamma") is not None:
            config.snr_gamma = _real(hp["snr_gamma"], path + "snr_gamma", 0.0, 100.0, low_open=True)
        if hp.get("noise_offset") is not None:
            config.noise_offset = _real(hp["noise_offset"], path + "noise_offset", 0.0, 1.0)
        config.random_flip = bool(hp.get("random_flip", False))
        config.center_crop = bool(hp.get("center_crop", False))
        resolution = _integer(hp.get("resolution"), path + "resolution", 0, MAX_RESOLUTION, 0)
        if resolution and (resolution < MIN_RESOLUTION or resolution % 8):
            raise InvalidArgument(
                f"must be 0 (the dataset's) or a multiple of 8 from {MIN_RESOLUTION} to {MAX_RESOLUTION}, "
                f"got {resolution}",
                field=path + "resolution",
            )
        config.resolution = resolution
        config.train_text_encoder = bool(hp.get("train_text_encoder", False))
        if hp.get("text_encoder_learning_rate") is not None:
            config.text_encoder_learning_rate = _rate(
                hp["text_encoder_learning_rate"], path + "text_encoder_learning_rate", config.learning_rate
            )

    def _lora(self, config: TrainingConfig, lora: Mapping[str, Any]) -> None:
        path = "spec.lora."
        settings = LoraSettings()
        settings.rank = _integer(lora.get("rank"), path + "rank", 1, MAX_RANK, settings.rank)
        if lora.get("alpha") is not None:
            settings.alpha = _real(lora["alpha"], path + "alpha", 0.0, 4.0 * MAX_RANK, low_open=True)
        targets = list(lora.get("target_modules") or [])
        for name in targets:
            if not isinstance(name, str) or not _MODULE_NAME.match(name):
                raise InvalidArgument(
                    f"{name!r} is not a module name such as 'to_q' or 'to_out.0'", field=path + "target_modules"
                )
        if targets:
            settings.target_modules = list(dict.fromkeys(targets))
        if lora.get("dropout") is not None:
            settings.dropout = _real(lora["dropout"], path + "dropout", 0.0, 1.0, high_open=True)
        config.lora = settings

    def _prior(self, config: TrainingConfig, prior: Mapping[str, Any]) -> None:
        path = "spec.prior_preservation."
        settings = PriorSettings(enabled=bool(prior.get("enabled", False)))
        class_prompt = _text(prior.get("class_prompt"), path + "class_prompt", limit=MAX_PROMPT_CHARS)
        settings.class_prompt = class_prompt or f"a photo of {config.class_noun}"
        if config.identifier in settings.class_prompt.split():
            raise InvalidArgument(
                "must not contain the identifier: class images show the class, not the subject",
                field=path + "class_prompt",
            )
        settings.num_class_images = _integer(
            prior.get("num_class_images"), path + "num_class_images", 1, MAX_CLASS_IMAGES, settings.num_class_images
        )
        if prior.get("prior_loss_weight") is not None:
            settings.prior_loss_weight = _real(prior["prior_loss_weight"], path + "prior_loss_weight", 0.0, 100.0)
        settings.class_dataset_id = _text(prior.get("class_dataset_id"), path + "class_dataset_id", limit=128)
        config.prior = settings

    def _validation(self, config: TrainingConfig, validation: Mapping[str, Any]) -> None:
        path = "spec.validation."
        prompts = list(validation.get("prompts") or [])
        if len(prompts) > MAX_VALIDATION_PROMPTS:
            raise InvalidArgument(
                f"at most {MAX_VALIDATION_PROMPTS} prompts, got {len(prompts)}", field=path + "prompts"
            )
        expanded = [
            config.expand_prompt(_text(prompt, path + "prompts", required=True, limit=MAX_PROMPT_CHARS))
            for prompt in prompts
        ]
        every = _integer(validation.get("every_n_steps"), path + "every_n_steps", 0, MAX_STEPS, 0)
        steps = _integer(
            validation.get("num_inference_steps"), path + "num_inference_steps", 1, MAX_VALIDATION_STEPS, 25
        )
        seed = _integer(validation.get("seed"), path + "seed", 0, MAX_SEED, 0)
        config.validation = ValidationSettings(expanded, every, steps, seed)

    def _checkpointing(self, config: TrainingConfig, checkpointing: Mapping[str, Any]) -> None:
        path = "spec.checkpointing."
        every = _integer(checkpointing.get("every_n_steps"), path + "every_n_steps", 0, MAX_STEPS, 100)
        keep = _integer(checkpointing.get("keep_last"), path + "keep_last", 1, MAX_KEEP_CHECKPOINTS, 2)
        config.checkpointing = CheckpointSettings(every, keep)

    def _instance_prompt(self, config: TrainingConfig, prompt: str) -> None:
        prompt = _text(prompt, "spec.instance_prompt", limit=MAX_PROMPT_CHARS)
        if not prompt:
            config.instance_prompt = f"a photo of {config.subject}"
            return
        expanded = config.expand_prompt(prompt)
        if config.identifier not in re.findall(r"[\w']+", expanded):
            raise InvalidArgument(
                f"must contain the identifier {config.identifier!r} (or the placeholder {{identifier}} or "
                "{subject}), otherwise the subject is not bound to it",
                field="spec.instance_prompt",
            )
        config.instance_prompt = expanded


def _text(value: Any, field_name: str, *, required: bool = False, limit: int) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidArgument(f"must be a string, got {type(value).__name__}", field=field_name)
    value = value.strip()
    if required and not value:
        raise InvalidArgument("must not be empty", field=field_name)
    if len(value) > limit:
        raise InvalidArgument(f"must be at most {limit} characters, got {len(value)}", field=field_name)
    return value


def _integer(value: Any, field_name: str, low: int, high: int, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"must be an integer, got {value!r}", field=field_name)
    if not low <= value <= high:
        raise InvalidArgument(f"must be between {low} and {high}, got {value}", field=field_name)
    return value


def _real(
    value: Any, field_name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"must be a finite number, got {value!r}", field=field_name)
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise InvalidArgument(f"must be in {left}{low:g}, {high:g}{right}, got {value:g}", field=field_name)
    return value


def _rate(value: Any, field_name: str, default: float) -> float:
    if value is None:
        return default
    return _real(value, field_name, 0.0, 1.0, low_open=True)


def _labels(labels: Mapping[str, Any]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"at most {MAX_LABELS} labels, got {len(labels)}", field="spec.labels")
    result: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
            raise InvalidArgument(
                f"label key {key!r} must be 1-63 letters, digits, '.', '_', '/' or '-'", field="spec.labels"
            )
        if not isinstance(value, str) or len(value) > 256:
            raise InvalidArgument(f"label {key!r} must be a string of at most 256 characters", field="spec.labels")
        result[key] = value
    return result


def _choice(value: Any, choices: tuple[str, ...], field_name: str) -> str:
    if value not in choices:
        shown = ", ".join(repr(choice) if choice else '"" (automatic)' for choice in choices)
        raise InvalidArgument(f"must be one of {shown}, got {value!r}", field=field_name)
    return str(value)
