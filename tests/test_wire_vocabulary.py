"""One vocabulary for GenerationParameters: the Scheduler enum's names and the fields' bounds, shared by the gallery
(RecordPrompt) and inference (GenerateImages), so that every recorded prompt can be replayed unchanged."""

from __future__ import annotations

import random

import pytest

from likeness.api import convert, generation
from likeness.errors import InvalidArgument
from likeness.gallery import records
from likeness.inference import params as inference_params
from likeness.inference.params import GenerationSpec
from likeness.models.arch import ARCHS, arch_info
from likeness_client.v1 import types_pb2

SCHEDULER_VALUES = [value for value in types_pb2.Scheduler.DESCRIPTOR.values if value.number]


def _inference_accepts(changes: dict, *, info=None) -> bool:
    try:
        inference_params.validate(
            GenerationSpec(prompt="a lighthouse", **changes),
            arch="sd15",
            info=info or arch_info("sd15"),
            base_model="sd15",
            subject=None,
            count_tokens=lambda text: len(text.split()) + 2,
            max_tokens=77,
            rng=random.Random(0),
        )
    except InvalidArgument as error:
        assert error.field == "parameters." + next(iter(changes)), error
        return False
    return True


def _gallery_accepts(key: str, value) -> bool:
    try:
        records.validate_params({key: value})
    except InvalidArgument as error:
        assert error.field == generation.field_path(generation.FIELDS_BY_KEY[key]), error
        return False
    return True


@pytest.mark.parametrize("value", SCHEDULER_VALUES, ids=lambda value: value.name)
def test_every_scheduler_enum_value_round_trips_through_the_one_map(value) -> None:
    # A new Scheduler value gets its name from the enum; it must also work everywhere a name is used.
    name = generation.SCHEDULER_NAMES[value.number]
    assert name == value.name.removeprefix("SCHEDULER_").lower()
    assert generation.SCHEDULER_ENUMS[name] == value.number
    message = types_pb2.GenerationParameters(scheduler=value.number)
    assert convert.params_to_dict(message) == {"scheduler": name}
    assert convert.params_from_dict({"scheduler": name}) == message
    assert records.validate_params({"scheduler": name}) == {"scheduler": name}
    assert _inference_accepts({"scheduler": name})
    # GenerateImages reads the same name off the wire.
    from likeness.inference.servicer import spec_from_request
    from likeness_client.v1 import inference_service_pb2 as inference_pb

    assert spec_from_request(inference_pb.GenerateImagesRequest(prompt="x", parameters=message)).scheduler == name
    # The diffusers scheduler class behind the name (the one mapping a new enum value still needs by hand).
    from likeness.inference.pipeline_runner import SCHEDULER_CLASSES

    assert name in SCHEDULER_CLASSES, f"{value.name} has no diffusers scheduler in pipeline_runner"


def test_the_scheduler_names_are_the_enum_and_used_by_gallery_and_inference() -> None:
    assert set(generation.SCHEDULER_NAMES) == {value.number for value in SCHEDULER_VALUES}
    assert generation.scheduler_name(types_pb2.SCHEDULER_UNSPECIFIED) == generation.DEFAULT_SCHEDULER
    assert records.SCHEDULERS is generation.SCHEDULERS
    assert (generation.DEFAULT_SCHEDULER, *generation.SCHEDULERS) == inference_params.SCHEDULERS
    assert convert.SCHEDULER_NAMES is generation.SCHEDULER_NAMES
    # "default" is the unset scheduler in both; an unknown name is refused by both.
    assert records.validate_params({"scheduler": "default"}) == {}
    assert not _gallery_accepts("scheduler", "heun") and not _inference_accepts({"scheduler": "heun"})
    with pytest.raises(InvalidArgument) as caught:
        convert.params_to_dict(types_pb2.GenerationParameters(scheduler=99))
    assert caught.value.field == "parameters.scheduler"


@pytest.mark.parametrize(
    ("key", "wire", "values"),
    [
        ("steps", "num_inference_steps", [-1, 0, 1, 30, 150, 151, 30.0, 30.5, True, float("nan")]),
        ("guidance", "guidance_scale", [-0.5, 0.0, 7.5, 30.0, 30.01, float("inf"), float("nan")]),
        ("seed", "seed", [-1, 0, 2**32, 2**63 - 9, 2**63 - 8, 2**63 - 2, 2**63 - 1, 2**63]),
        ("lora_scale", "lora_scale", [-0.1, 0.0, 1.0, 2.0, 2.01]),
    ],
)
def test_gallery_and_inference_accept_and_refuse_the_same_values(key: str, wire: str, values: list) -> None:
    # A recorded prompt is replayed as one GenerateImages request (one image: image i uses seed + i).
    for value in values:
        assert _gallery_accepts(key, value) == _inference_accepts({wire: value}), (key, value)


def test_sizes_the_gallery_accepts_are_those_some_base_model_takes() -> None:
    # The gallery does not know the base model's bounds, so it takes the widest; inference checks the model's own.
    infos = [arch_info(arch, tiny=tiny) for arch in ARCHS for tiny in (False, True)]
    for size in range(0, 2100, 4):
        some_model = any(_inference_accepts({"width": size}, info=info) for info in infos)
        assert _gallery_accepts("width", size) == some_model == _gallery_accepts("height", size), size


def test_gallery_errors_name_the_wire_fields() -> None:
    for wire, key in generation.DICT_KEYS.items():
        with pytest.raises(InvalidArgument) as caught:
            records.validate_params({key: -1})
        assert caught.value.field == f"parameters.{wire}"
