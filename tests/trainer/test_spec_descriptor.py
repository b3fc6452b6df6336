"""Every field of `TrainingJobSpec`, walked from its descriptor, survives spec -> dict -> TrainingConfig -> spec.

A new proto field must get a sample value here (the walk fails without one) and must be carried by
`spec_to_dict`, read by `TrainingConfig.from_spec` and written back by `spec_from_config`; a field dropped by any of
them fails the round trip. The last tests check the trainer's answers on an unknown base model and an empty job id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from likeness import errors
from likeness.errors import InvalidArgument, NotFound
from likeness.models.catalog import BaseModelCatalog
from likeness.trainer.config import TrainingConfig
from likeness.trainer.servicer import TrainerServicer, spec_from_config, spec_to_dict
from likeness.trainer.spec import SpecValidator
from likeness_client.v1 import trainer_service_pb2 as pb
from likeness_client.v1 import types_pb2

#: A valid value, different from the resolved default, for every leaf field of TrainingJobSpec (by path).
SAMPLES: dict[str, Any] = {
    "base_model": "tiny-sdxl",
    "identifier": "ohwx",
    "class_noun": "cat",
    "method": types_pb2.TRAINING_METHOD_FULL,
    "dataset_id": "ds-sample",
    "instance_prompt": "a portrait of ohwx cat",
    "hyperparameters.max_train_steps": 123,
    "hyperparameters.learning_rate": 2e-5,
    "hyperparameters.lr_scheduler": "cosine",
    "hyperparameters.lr_warmup_steps": 7,
    "hyperparameters.train_batch_size": 2,
    "hyperparameters.gradient_accumulation_steps": 3,
    "hyperparameters.mixed_precision": pb.MIXED_PRECISION_BF16,
    "hyperparameters.gradient_checkpointing": True,
    "hyperparameters.seed": 4242,
    "hyperparameters.snr_gamma": 5.0,
    "hyperparameters.noise_offset": 0.05,
    "hyperparameters.random_flip": True,
    "hyperparameters.center_crop": True,
    "hyperparameters.resolution": 512,
    "hyperparameters.train_text_encoder": True,
    "hyperparameters.text_encoder_learning_rate": 1e-6,
    "hyperparameters.memory_plan": pb.MEMORY_PLAN_OFF,
    "hyperparameters.memory_budget_mib": 24576,
    "hyperparameters.optimizer": pb.OPTIMIZER_ADAFACTOR,
    "lora.rank": 8,
    "lora.alpha": 4.0,
    "lora.target_modules": ["to_q", "to_v"],
    "lora.dropout": 0.1,
    "prior_preservation.enabled": True,
    "prior_preservation.class_prompt": "a photo of a cat",
    "prior_preservation.num_class_images": 50,
    "prior_preservation.prior_loss_weight": 0.5,
    "prior_preservation.class_dataset_id": "ds-class",
    "validation.prompts": ["a cat on the moon"],
    "validation.every_n_steps": 10,
    "validation.num_inference_steps": 5,
    "validation.seed": 99,
    "checkpointing.every_n_steps": 20,
    "checkpointing.keep_last": 3,
    "export_kohya": True,
    "processes": 2,
    "display_name": "sample job",
    "labels": {"team": "vision"},
}


def _is_map(field: Any) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def leaf_fields(descriptor: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, field) of every field a value is set on: nested (non-repeated) messages are walked into."""
    for field in descriptor.fields:
        path = prefix + field.name
        if field.message_type is not None and not field.is_repeated and not _is_map(field):
            yield from leaf_fields(field.message_type, path + ".")
        else:
            yield path, field


def _parent(message: Any, path: str) -> tuple[Any, str]:
    *parents, name = path.split(".")
    for part in parents:
        message = getattr(message, part)
    return message, name


def set_value(message: Any, path: str, value: Any) -> None:
    parent, name = _parent(message, path)
    field = parent.DESCRIPTOR.fields_by_name[name]
    if _is_map(field):
        getattr(parent, name).update(value)
    elif field.is_repeated:
        getattr(parent, name).extend(value)
    else:
        setattr(parent, name, value)


def get_value(message: Any, path: str) -> Any:
    parent, name = _parent(message, path)
    field = parent.DESCRIPTOR.fields_by_name[name]
    value = getattr(parent, name)
    if _is_map(field):
        return dict(value)
    if field.is_repeated:
        return list(value)
    if field.has_presence and not parent.HasField(name):
        return None
    return value


def same(got: Any, sent: Any) -> bool:
    if isinstance(sent, float):
        return got is not None and got == pytest.approx(sent, rel=1e-6)
    return got == sent


def to_config(spec: dict[str, Any]) -> TrainingConfig:
    # The identifier is checked against the tokenizer by SpecValidator; here it is taken as sent.
    return TrainingConfig.from_spec(spec, identifier=spec["identifier"], seed=1)


def carry_failures(
    spec_class: Any = pb.TrainingJobSpec,
    samples: dict[str, Any] = SAMPLES,
    to_dict: Callable[[Any], dict[str, Any]] = spec_to_dict,
    from_config: Callable[[TrainingConfig], Any] = spec_from_config,
) -> list[str]:
    """What went wrong carrying every sample value spec -> dict -> TrainingConfig -> spec ([] when all came back)."""
    failures = [f"{path}: no sample value" for path, _ in leaf_fields(spec_class.DESCRIPTOR) if path not in samples]
    spec = spec_class()
    for path, value in samples.items():
        set_value(spec, path, value)
    try:
        back = from_config(to_config(to_dict(spec)))
    except InvalidArgument as error:
        return [*failures, f"the round trip refused the spec: {error}"]
    for path, sent in samples.items():
        got = get_value(back, path)
        if not same(got, sent):
            failures.append(f"{path}: sent {sent!r}, came back {got!r}")
    return failures


def test_every_spec_field_has_a_non_default_sample_and_survives_the_round_trip():
    paths = [path for path, _ in leaf_fields(pb.TrainingJobSpec.DESCRIPTOR)]
    for section in ("hyperparameters", "lora", "prior_preservation", "validation", "checkpointing"):
        assert any(path.startswith(section + ".") for path in paths), section  # the walk reaches nested messages
    assert sorted(SAMPLES) == sorted(paths), "SAMPLES must name exactly the spec's fields"
    # Each sample differs from what the job would train with had the field been left unset.
    minimal = {"base_model": SAMPLES["base_model"], "class_noun": SAMPLES["class_noun"], "identifier": "ohwx"}
    defaults = spec_from_config(to_config(spec_to_dict(pb.TrainingJobSpec(**minimal))))
    for path in paths:
        if path not in minimal:
            assert not same(get_value(defaults, path), SAMPLES[path]), f"{path}: the sample is the default"
    assert carry_failures() == []


def _drop(path: str) -> Callable[[Any], Any]:
    def from_config(config: TrainingConfig) -> Any:
        spec = spec_from_config(config)
        parent, name = _parent(spec, path)
        parent.ClearField(name)
        return spec

    return from_config


def test_a_field_the_converter_drops_is_reported():
    assert carry_failures(from_config=_drop("hyperparameters.noise_offset")) == [
        "hyperparameters.noise_offset: sent 0.05, came back None"
    ]

    def forgetful_to_dict(spec: Any) -> dict[str, Any]:
        values = spec_to_dict(spec)
        del values["lora"]["dropout"]
        return values

    assert carry_failures(to_dict=forgetful_to_dict) == ["lora.dropout: sent 0.1, came back 0.0"]
    assert carry_failures(samples={k: v for k, v in SAMPLES.items() if k != "lora.rank"}) == [
        "lora.rank: no sample value"
    ]


def test_a_key_the_reader_does_not_read_is_refused_with_its_path():
    def carrying_extra(spec: Any) -> dict[str, Any]:
        values = spec_to_dict(spec)
        values["hyperparameters"]["ema_decay"] = 0.999
        return values

    (failure,) = carry_failures(to_dict=carrying_extra)
    assert "spec.hyperparameters.ema_decay" in failure
    with pytest.raises(InvalidArgument) as caught:
        TrainingConfig.from_spec({"base_model": "m", "class_noun": "dog", "colour": "red"}, identifier="ohwx")
    assert caught.value.field == "spec.colour"


def _spec_with_new_hyperparameter() -> Any:
    """TrainingJobSpec from a copy of its descriptor in which Hyperparameters has one more field, `new_option`."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: Any) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb)
        if file.name == pb.DESCRIPTOR.name:
            (message,) = [m for m in proto.message_type if m.name == "Hyperparameters"]
            message.field.add(
                name="new_option",
                number=1000,
                type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                json_name="newOption",
            )
        pool.Add(proto)
        added.add(file.name)

    add(pb.DESCRIPTOR)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("likeness.trainer.v1.TrainingJobSpec"))


def test_a_new_hyperparameter_fails_until_it_has_a_sample_and_is_carried_through():
    extended = _spec_with_new_hyperparameter()
    assert "new_option" in extended.DESCRIPTOR.fields_by_name["hyperparameters"].message_type.fields_by_name
    failures = carry_failures(spec_class=extended)
    assert failures[0] == "hyperparameters.new_option: no sample value"
    # spec_to_dict walks the descriptor, so it carries the new field; the reader does not know it and says so.
    assert "spec.hyperparameters.new_option" in failures[1]
    with_sample = carry_failures(spec_class=extended, samples={**SAMPLES, "hyperparameters.new_option": 5})
    assert len(with_sample) == 1 and "spec.hyperparameters.new_option" in with_sample[0]


def test_an_unknown_base_model_is_not_found_naming_the_spec_field(tmp_path):
    catalog = BaseModelCatalog(cache_dir=tmp_path)
    with pytest.raises(NotFound) as generate_error:
        catalog.resolve("no-such-model")  # what GenerateImages answers
    validator = SpecValidator(catalog, lambda tenant, dataset_id: 64)
    with pytest.raises(NotFound) as caught:
        validator.validate("default", {"base_model": "no-such-model", "class_noun": "dog"}, inline_photos=True)
    assert caught.value.field == "spec.base_model"
    assert caught.value.reason == generate_error.value.reason
    assert "unknown base model 'no-such-model'" in caught.value.message


class _NoJobs:
    storage = None

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"an empty job id must be refused before jobs.{name}")


@pytest.mark.parametrize(
    ("method", "request_class"),
    [
        ("GetTrainingJob", pb.GetTrainingJobRequest),
        ("CancelTrainingJob", pb.CancelTrainingJobRequest),
        ("DeleteTrainingJob", pb.DeleteTrainingJobRequest),
        ("WatchTrainingJob", pb.WatchTrainingJobRequest),
    ],
)
def test_an_empty_job_id_is_invalid_argument(method, request_class):
    servicer = TrainerServicer(_NoJobs(), SimpleNamespace(), SimpleNamespace())
    call = getattr(servicer, method)(request_class(job_id=""), None)
    awaitable = anext(call) if method == "WatchTrainingJob" else call
    with pytest.raises(InvalidArgument) as caught:
        asyncio.run(awaitable)
    assert (caught.value.field, caught.value.reason) == ("job_id", "must not be empty")


def test_an_empty_job_id_is_invalid_argument_over_grpc(client):
    for call in (client.get_training_job, client.cancel_training_job, client.delete_training_job):
        with pytest.raises(errors.InvalidArgument, match="job_id"):
            call("")
    with pytest.raises(errors.InvalidArgument, match="job_id"):
        list(client.watch_training_job(""))
    with pytest.raises(errors.NotFound, match=r"spec\.base_model"):
        client.create_training_job(
            pb.TrainingJobSpec(base_model="no-such-model", class_noun="dog", dataset_id="ds-missing")
        )
