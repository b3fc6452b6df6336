"""Validating a training job spec into a resolved `TrainingConfig`, before anything is written.

Everything that needs no photos is checked here: the base model, the class noun and identifier (against the base
model's tokenizers), hyperparameter ranges, the dataset and class dataset (which must exist), the resolution range
of the base model, and, where the devices are known (role `all`), the mixed precision they support.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from transformers import CLIPTokenizer

from likeness.errors import FailedPrecondition, InvalidArgument, NotFound
from likeness.models.catalog import BaseModelCatalog, BaseModelSpec
from likeness.storage.layout import validate_resource_id
from likeness.trainer.config import TrainingConfig
from likeness.trainer.identifier import check_identifier, choose_identifier
from likeness.trainer.training.loop import resolve_mixed_precision

#: (tenant, dataset_id) -> the dataset's resolution; NotFound when it does not exist.
DatasetLookup = Callable[[str, str], int]


class SpecValidator:
    """Turns request specs into resolved configs; caches the base models' tokenizers."""

    def __init__(
        self,
        catalog: BaseModelCatalog,
        dataset_resolution: DatasetLookup,
        *,
        default_base_model: str = "",
        worker_devices: Sequence[str] = (),
    ) -> None:
        self.catalog = catalog
        self.dataset_resolution = dataset_resolution
        self.default_base_model = default_base_model
        self.worker_devices = list(worker_devices)
        self._tokenizers: dict[str, list[CLIPTokenizer]] = {}

    def tokenizers(self, spec: BaseModelSpec) -> list[CLIPTokenizer]:
        """The base model's tokenizer(s), loaded from its folder (no weights) and cached."""
        if spec.id not in self._tokenizers:
            folder = spec.config_dir if spec.source.is_file() else spec.source
            if folder is None:
                raise FailedPrecondition(f"base model {spec.id!r} is a single file without a config folder")
            names = ["tokenizer", "tokenizer_2"] if spec.info.two_text_encoders else ["tokenizer"]
            self._tokenizers[spec.id] = [
                CLIPTokenizer.from_pretrained(str(folder / name), local_files_only=True) for name in names
            ]
        return self._tokenizers[spec.id]

    def validate(
        self, tenant: str, spec: Mapping[str, Any], *, inline_photos: bool
    ) -> tuple[TrainingConfig, BaseModelSpec]:
        """Turns a spec into a resolved config, checking everything that needs no photos; writes nothing."""
        spec = dict(spec)
        spec["base_model"] = (spec.get("base_model") or self.default_base_model or "").strip()
        if not spec["base_model"]:
            raise InvalidArgument("must name a base model", field="spec.base_model")
        try:
            base = self.catalog.resolve(spec["base_model"])
        except NotFound as error:
            # NOT_FOUND, as GenerateImages answers for an unknown base model; the field is the spec's.
            raise NotFound(error.reason, field="spec.base_model") from error
        class_noun = (spec.get("class_noun") or "").strip()
        if not class_noun:
            raise InvalidArgument(
                "must name the subject's class, for example 'dog' or 'person'", field="spec.class_noun"
            )
        tokenizers = self.tokenizers(base)
        identifier = (spec.get("identifier") or "").strip()
        if identifier:
            identifier = check_identifier(identifier, tokenizers, class_noun=class_noun)
        else:
            identifier = choose_identifier(tokenizers, class_noun=class_noun)
        config = TrainingConfig.from_spec(spec, identifier=identifier)
        if inline_photos and config.dataset_id:
            raise InvalidArgument("leave empty when photos are sent inline", field="spec.dataset_id")
        if not inline_photos:
            if not config.dataset_id:
                raise InvalidArgument("name a prepared dataset, or send photos inline", field="spec.dataset_id")
            validate_resource_id(config.dataset_id, field="spec.dataset_id")
            resolution = self.dataset_resolution(tenant, config.dataset_id)
            if not config.resolution:
                config.resolution = resolution
        if config.prior.enabled and config.prior.class_dataset_id:
            field = "spec.prior_preservation.class_dataset_id"
            validate_resource_id(config.prior.class_dataset_id, field=field)
            try:
                self.dataset_resolution(tenant, config.prior.class_dataset_id)
            except NotFound as error:
                raise NotFound(error.message, field=field) from error
        info = base.info
        if config.resolution and not (
            info.min_resolution <= config.resolution <= info.max_resolution
            and config.resolution % info.resolution_multiple == 0
        ):
            raise InvalidArgument(
                f"{config.resolution} px is outside {base.id}'s range {info.min_resolution}-{info.max_resolution} "
                f"(multiples of {info.resolution_multiple})",
                field="spec.hyperparameters.resolution",
            )
        for device in self.worker_devices:
            resolve_mixed_precision(config.mixed_precision, torch.device(device))
        return config, base
