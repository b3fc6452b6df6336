"""Request validation: ranges name their field, defaults, {subject} expansion, prompt truncation."""

from __future__ import annotations

import random

import pytest

from likeness.errors import InvalidArgument
from likeness.inference.params import GenerationSpec, SubjectNames, truncate_prompt, validate
from likeness.models.loading import arch_info
from likeness.models.tokenizer import clip_tokenizer

TOKENIZER = clip_tokenizer()
SUBJECT = SubjectNames("sks", "dog")


def count_tokens(text: str) -> int:
    return len(TOKENIZER(text, truncation=False, verbose=False)["input_ids"])


def check(spec: GenerationSpec, arch: str = "sd15", subject: SubjectNames | None = SUBJECT):
    return validate(
        spec,
        arch=arch,
        info=arch_info(arch, tiny=True),
        base_model=f"tiny-{arch}",
        subject=subject,
        count_tokens=count_tokens,
        max_tokens=77,
        rng=random.Random(0),
    )


def test_defaults_fill_unset_fields_and_expand_the_subject() -> None:
    params, warnings = check(GenerationSpec(prompt="a photo of {subject} on a beach"))
    assert params.prompt == "a photo of sks dog on a beach"
    assert (params.num_images, params.steps, params.width, params.height) == (1, 30, 64, 64)
    assert params.guidance_scale == 7.5 and params.lora_scale == 1.0 and params.output_format == "png"
    assert 0 <= params.seed < 2**32 and warnings == []
    sdxl, _ = check(GenerationSpec(prompt="sks dog"), arch="sdxl")
    assert sdxl.guidance_scale == 5.0


def test_seeds_of_a_request_are_consecutive() -> None:
    params, _ = check(GenerationSpec(prompt="sks dog", num_images=3, seed=41))
    assert params.seeds == [41, 42, 43]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"num_images": 9}, "num_images"),
        ({"num_images": -1}, "num_images"),
        ({"num_inference_steps": 0}, "parameters.num_inference_steps"),
        ({"num_inference_steps": 151}, "parameters.num_inference_steps"),
        ({"guidance_scale": 31.0}, "parameters.guidance_scale"),
        ({"guidance_scale": float("nan")}, "parameters.guidance_scale"),
        ({"width": 60}, "parameters.width"),
        ({"height": 1024}, "parameters.height"),
        ({"width": 8}, "parameters.width"),
        ({"lora_scale": 2.5}, "parameters.lora_scale"),
        ({"seed": -1}, "parameters.seed"),
        ({"scheduler": "heun"}, "parameters.scheduler"),
        ({"output_format": "gif"}, "output_format"),
        ({"preview_every_n_steps": -2}, "preview_every_n_steps"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "a photo of sks dog\x00 on a beach"}, "prompt"),
        ({"negative_prompt": "blurry\x1b[31m"}, "parameters.negative_prompt"),
    ],
)
def test_out_of_range_fields_are_invalid_arguments_naming_the_field(changes: dict, field: str) -> None:
    spec = GenerationSpec(**{"prompt": "a photo of sks dog", **changes})
    with pytest.raises(InvalidArgument) as caught:
        check(spec)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_tabs_and_newlines_are_plain_text() -> None:
    params, _ = check(GenerationSpec(prompt="a photo of sks dog,\n\ton a beach"))
    assert params.prompt == "a photo of sks dog,\n\ton a beach"


def test_placeholder_without_subject_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="subject_model_id"):
        check(GenerationSpec(prompt="a photo of {subject}"), subject=None)


def test_prompt_not_naming_the_subject_warns() -> None:
    _, warnings = check(GenerationSpec(prompt="a photo of a dog"))
    assert len(warnings) == 1 and "'sks'" in warnings[0]
    _, none = check(GenerationSpec(prompt="a photo of SKS, the dog"))
    assert none == []


def test_long_prompts_are_truncated_at_a_word_boundary_with_a_warning() -> None:
    long_prompt = "a photo of {subject} " + " ".join(f"detail{i}" for i in range(80))
    params, warnings = check(GenerationSpec(prompt=long_prompt, negative_prompt="blurry " * 100))
    assert count_tokens(params.prompt) <= 77
    assert params.prompt.startswith("a photo of sks dog detail0")
    assert long_prompt.replace("{subject}", "sks dog").startswith(params.prompt)
    # Adding the next word would overflow: the cut is as late as possible.
    next_word = long_prompt.replace("{subject}", "sks dog")[len(params.prompt) :].split()[0]
    assert count_tokens(params.prompt + " " + next_word) > 77
    assert count_tokens(params.negative_prompt) <= 77
    assert len(warnings) == 2 and "cut to" in warnings[0] and "negative prompt" in warnings[1]


def test_truncation_leaves_short_prompts_alone() -> None:
    assert truncate_prompt("a photo", count_tokens, 77) == ("a photo", False)


def test_every_template_is_accepted_unchanged_by_every_builtin_base_model(likeness_cache) -> None:
    # ListTemplates promises parameters that can be sent to GenerateImages unchanged: through both wire
    # conversions, for each base model of the default catalog (the toy model is 32 px, the tiny ones 64 px).
    from likeness.gallery import templates
    from likeness.gallery.servicer import template_to_proto
    from likeness.inference.servicer import spec_from_request
    from likeness.models.catalog import DEFAULT_CATALOG_SPEC, BaseModelCatalog
    from likeness_client.v1 import inference_service_pb2 as inference_pb

    catalog = BaseModelCatalog(DEFAULT_CATALOG_SPEC, cache_dir=likeness_cache / "base-models")
    bases = [catalog.resolve(model_id) for model_id in catalog.ids()]
    assert {base.id for base in bases} >= {"toy-sd15", "tiny-sd15", "tiny-sdxl"}
    for template in templates.list_templates():
        message = template_to_proto(template)
        for base in bases:
            request = inference_pb.GenerateImagesRequest(
                prompt=message.template, parameters=message.parameters, base_model=base.id, subject_model_id="m"
            )
            params, _ = validate(
                spec_from_request(request),
                arch=base.arch,
                info=base.info,
                base_model=base.id,
                subject=SUBJECT,
                count_tokens=count_tokens,
                max_tokens=77,
                rng=random.Random(0),
            )
            assert (params.width, params.height) == (base.info.default_resolution,) * 2, (template.template_id, base.id)


def test_the_largest_seed_fits_one_image_and_every_image_of_a_request() -> None:
    # Image i uses seed + i: the int64 maximum is a valid seed for one image (a gallery entry replayed), and the
    # first seed of n images leaves room for the other n - 1.
    largest = 2**63 - 1
    params, _ = check(GenerationSpec(prompt="sks dog", seed=largest))
    assert params.seeds == [largest]
    params, _ = check(GenerationSpec(prompt="sks dog", num_images=3, seed=largest - 2))
    assert params.seeds[-1] == largest
    with pytest.raises(InvalidArgument) as caught:
        check(GenerationSpec(prompt="sks dog", num_images=3, seed=largest - 1))
    assert caught.value.field == "parameters.seed"
