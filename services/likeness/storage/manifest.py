"""Manifests: the marker files that describe (and, written last, publish) subject models and datasets.

Constructing a manifest with bad values raises InvalidArgument naming the field. Reading one (`from_json`)
that is unparsable, misses a field or has a wrong type raises FailedPrecondition: the stored object is corrupt
and no retry will fix it, so the message names the source and the field.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, TypeVar

from likeness.errors import FailedPrecondition, InvalidArgument
from likeness.storage.base import validate_key
from likeness.storage.layout import model_prefix, validate_resource_id, validate_tenant

FORMAT_VERSION = 1
METHODS = ("lora", "full")
#: A subject is bound to its identifier and class noun; a style is applied beside a subject and needs neither.
KINDS = ("subject", "style")
#: Trained by this deployment, or a LoRA file made with another tool (ImportLora).
ORIGINS = ("trained", "imported")
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))$"
)

_ManifestT = TypeVar("_ManifestT", bound="_Manifest")


def utc_now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with milliseconds, e.g. `2025-01-31T12:00:00.123Z`."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(value: str, *, field: str = "created_at") -> datetime:
    """Parse an RFC 3339 timestamp (offset or Z) into an aware datetime; InvalidArgument if it is not one."""
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if not match:
        raise InvalidArgument(f"{value!r} is not an RFC 3339 timestamp such as 2025-01-31T12:00:00Z", field=field)
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, sign, offset_hours, offset_minutes = match.groups()[6:]
    try:
        offset = timedelta(hours=int(offset_hours or 0), minutes=int(offset_minutes or 0))
        tz = timezone(-offset if sign == "-" else offset)
        microsecond = int((fraction or "0").ljust(6, "0")[:6])
        return datetime(year, month, day, hour, minute, min(second, 59), microsecond, tzinfo=tz)
    except ValueError as exc:
        raise InvalidArgument(f"{value!r} is not a valid date and time ({exc})", field=field) from exc


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise InvalidArgument(message, field=field)


def _check_text(value: Any, field: str) -> None:
    _require(isinstance(value, str) and value.strip() != "", field, f"must be a non-empty string, got {value!r}")


def _check_relative_paths(value: Any, field: str, *, non_empty: bool) -> None:
    _require(isinstance(value, list), field, f"must be a list of relative paths, got {type(value).__name__}")
    _require(not non_empty or len(value) > 0, field, "must list at least one file")
    for item in value:
        validate_key(item, field=field)
    _require(len(set(value)) == len(value), field, "lists a file twice")


def _check_string_keyed_dict(value: Any, field: str) -> None:
    _require(
        isinstance(value, dict) and all(isinstance(k, str) for k in value),
        field,
        f"must be a JSON object with string keys, got {type(value).__name__}",
    )


def _check_format_version(value: Any) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        "format_version",
        f"must be a positive integer, got {value!r}",
    )
    if value > FORMAT_VERSION:
        # Not InvalidArgument: the data is fine, this code is too old to read it.
        raise FailedPrecondition(
            f"format_version {value} was written by a newer Likeness (this one reads up to {FORMAT_VERSION}); upgrade"
        )


@dataclass
class _Manifest(abc.ABC):
    """JSON (de)serialisation shared by the manifests; subclasses implement `validate`."""

    KIND: ClassVar[str] = "manifest"

    def __post_init__(self) -> None:
        self.validate()

    @abc.abstractmethod
    def validate(self) -> None:
        """Raise InvalidArgument naming the first field that is wrong."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Stable JSON text: sorted keys, indented, trailing newline (what storage writes)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls: type[_ManifestT], data: Any, *, source: str | None = None) -> _ManifestT:
        """Build from parsed JSON. Unknown keys are ignored (forward compatible within a format version)."""
        where = source or f"{cls.KIND} manifest"
        if not isinstance(data, dict):
            raise FailedPrecondition(f"{where} is corrupt: expected a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [
            name
            for name, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise FailedPrecondition(f"{where} is corrupt: missing required field(s) {', '.join(missing)}")
        try:
            return cls(**{name: data[name] for name in fields if name in data})
        except InvalidArgument as exc:
            raise FailedPrecondition(f"{where} is corrupt: {exc.message}") from exc

    @classmethod
    def from_json(cls: type[_ManifestT], text: str | bytes, *, source: str | None = None) -> _ManifestT:
        """Parse manifest JSON; FailedPrecondition naming `source` (e.g. the storage key) if it is corrupt."""
        where = source or f"{cls.KIND} manifest"
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise FailedPrecondition(f"{where} is corrupt: not valid JSON ({exc})") from exc
        return cls.from_dict(data, source=where)


@dataclass
class SubjectModelManifest(_Manifest):
    """`manifest.json` of a published subject model (tenants/{tenant}/models/{model_id}/).

    `weights` and `sample_images` are paths relative to the model folder. `lora_rank` is set for method
    "lora" and None for "full" fine-tunes. `identifier` is the rare token bound to the subject ("sks"),
    `class_noun` its class ("dog"); prompts use "a photo of {identifier} {class_noun}".

    `kind` is "subject" or "style" (a style may leave identifier and class noun empty), `origin` "trained" or
    "imported", and `source_format` the layout an imported file came in ("kohya", "diffusers"). Manifests written
    before these fields existed read as trained subjects.
    """

    KIND: ClassVar[str] = "subject model"

    model_id: str
    tenant: str
    identifier: str
    class_noun: str
    base_model: str
    arch: str
    method: str
    training_config: dict[str, Any]
    metrics: dict[str, Any]
    created_at: str
    sample_images: list[str]
    weights: list[str]
    lora_rank: int | None = None
    format_version: int = FORMAT_VERSION
    kind: str = "subject"
    origin: str = "trained"
    source_format: str = ""

    def validate(self) -> None:
        _check_format_version(self.format_version)
        validate_resource_id(self.model_id, field="model_id")
        validate_tenant(self.tenant)
        _require(self.kind in KINDS, "kind", f"must be one of {', '.join(KINDS)}, got {self.kind!r}")
        _require(self.origin in ORIGINS, "origin", f"must be one of {', '.join(ORIGINS)}, got {self.origin!r}")
        _require(isinstance(self.source_format, str), "source_format", "must be a string")
        if self.kind == "subject" or self.identifier:
            _check_text(self.identifier, "identifier")
        _require(
            isinstance(self.identifier, str) and not any(c.isspace() for c in self.identifier),
            "identifier",
            "must be a single token without spaces",
        )
        if self.kind == "subject":
            _check_text(self.class_noun, "class_noun")
        else:
            _require(isinstance(self.class_noun, str), "class_noun", "must be a string")
        for name in ("base_model", "arch"):
            _check_text(getattr(self, name), name)
        _require(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        _check_string_keyed_dict(self.training_config, "training_config")
        _check_string_keyed_dict(self.metrics, "metrics")
        parse_rfc3339(self.created_at)
        _check_relative_paths(self.sample_images, "sample_images", non_empty=False)
        _check_relative_paths(self.weights, "weights", non_empty=True)
        if self.method == "lora":
            _require(
                isinstance(self.lora_rank, int) and not isinstance(self.lora_rank, bool) and self.lora_rank > 0,
                "lora_rank",
                f"must be a positive integer for method 'lora', got {self.lora_rank!r}",
            )
        else:
            _require(self.lora_rank is None, "lora_rank", "must be null for method 'full'")

    @property
    def prefix(self) -> str:
        """The storage folder of the model: `tenants/{tenant}/models/{model_id}`."""
        return model_prefix(self.tenant, self.model_id)

    @property
    def sample_image_keys(self) -> list[str]:
        """Storage keys of the sample images (`sample_images` are relative to the model folder)."""
        return [f"{self.prefix}/{path}" for path in self.sample_images]

    @property
    def weight_keys(self) -> list[str]:
        """Storage keys of the weight files."""
        return [f"{self.prefix}/{path}" for path in self.weights]


@dataclass
class DatasetManifest(_Manifest):
    """`manifest.json` of a published dataset (tenants/{tenant}/datasets/{dataset_id}/).

    `images` are paths relative to the dataset folder (e.g. "images/0001.png"); `captions` maps some or all of
    them to a caption. `source` says where the images came from (an upload, a URL, a tool name).
    """

    KIND: ClassVar[str] = "dataset"

    dataset_id: str
    tenant: str
    resolution: int
    image_count: int
    images: list[str]
    captions: dict[str, str]
    created_at: str
    source: str
    format_version: int = FORMAT_VERSION

    def validate(self) -> None:
        _check_format_version(self.format_version)
        validate_resource_id(self.dataset_id, field="dataset_id")
        validate_tenant(self.tenant)
        _require(
            isinstance(self.resolution, int) and not isinstance(self.resolution, bool) and self.resolution > 0,
            "resolution",
            f"must be a positive integer (pixels), got {self.resolution!r}",
        )
        _check_relative_paths(self.images, "images", non_empty=True)
        _require(
            self.image_count == len(self.images) and not isinstance(self.image_count, bool),
            "image_count",
            f"is {self.image_count!r} but images lists {len(self.images)} files",
        )
        _check_string_keyed_dict(self.captions, "captions")
        unknown = sorted(set(self.captions) - set(self.images))
        _require(not unknown, "captions", f"caption(s) for images not in the dataset: {', '.join(unknown[:5])}")
        _require(
            all(isinstance(caption, str) for caption in self.captions.values()),
            "captions",
            "captions must be strings",
        )
        parse_rfc3339(self.created_at)
        _require(isinstance(self.source, str), "source", f"must be a string, got {type(self.source).__name__}")
