"""Spec validation: defaults per method, every bad value rejected with the API path of its field."""

from __future__ import annotations

import pytest

from likeness.errors import InvalidArgument
from likeness.models.tokenizer import clip_tokenizer
from likeness.trainer.config import DEFAULT_LORA_TARGETS, TrainingConfig
from likeness.trainer.identifier import AUTOMATIC_CANDIDATES, check_identifier, choose_identifier


def build(**spec) -> TrainingConfig:
    return TrainingConfig.from_spec({"base_model": "tiny-sd15", "class_noun": "dog", **spec}, identifier="ohwx")


def test_defaults_follow_the_method_and_round_trip_through_json():
    lora = build(hyperparameters={"seed": 3})
    assert (lora.max_train_steps, lora.learning_rate, lora.lora.rank, lora.lora.effective_alpha) == (400, 1e-4, 16, 16)
    assert lora.lora.target_modules == list(DEFAULT_LORA_TARGETS)
    assert lora.instance_prompt == "a photo of ohwx dog"
    assert lora.prior.class_prompt == "a photo of dog" and lora.prior.num_class_images == 100
    assert (lora.checkpointing.every_n_steps, lora.checkpointing.keep_last) == (100, 2)
    full = build(method="full")
    assert (full.max_train_steps, full.learning_rate) == (800, 5e-6)
    assert 0 <= full.seed < 2**31  # picked and recorded
    assert TrainingConfig.from_dict(lora.to_dict()) == lora


def test_prompts_expand_placeholders_and_must_name_the_identifier():
    config = build(instance_prompt="a {subject} on a beach", validation={"prompts": ["{identifier} as a {class_noun}"]})
    assert config.instance_prompt == "a ohwx dog on a beach"
    assert config.validation.prompts == ["ohwx as a dog"]
    with pytest.raises(InvalidArgument) as caught:
        build(instance_prompt="a photo of a dog")
    assert caught.value.field == "spec.instance_prompt"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"hyperparameters": {"max_train_steps": 0}}, "spec.hyperparameters.max_train_steps"),
        ({"hyperparameters": {"learning_rate": -1e-4}}, "spec.hyperparameters.learning_rate"),
        ({"hyperparameters": {"learning_rate": float("nan")}}, "spec.hyperparameters.learning_rate"),
        ({"hyperparameters": {"lr_scheduler": "sawtooth"}}, "spec.hyperparameters.lr_scheduler"),
        ({"hyperparameters": {"max_train_steps": 10, "lr_warmup_steps": 11}}, "spec.hyperparameters.lr_warmup_steps"),
        ({"hyperparameters": {"train_batch_size": 65}}, "spec.hyperparameters.train_batch_size"),
        ({"hyperparameters": {"gradient_accumulation_steps": 0}}, "spec.hyperparameters.gradient_accumulation_steps"),
        ({"hyperparameters": {"resolution": 100}}, "spec.hyperparameters.resolution"),
        ({"hyperparameters": {"snr_gamma": 0.0}}, "spec.hyperparameters.snr_gamma"),
        ({"hyperparameters": {"noise_offset": 2.0}}, "spec.hyperparameters.noise_offset"),
        ({"hyperparameters": {"mixed_precision": "fp8"}}, "spec.hyperparameters.mixed_precision"),
        ({"lora": {"rank": 0}}, "spec.lora.rank"),
        ({"lora": {"rank": 300}}, "spec.lora.rank"),
        ({"lora": {"dropout": 1.0}}, "spec.lora.dropout"),
        ({"lora": {"target_modules": ["to q"]}}, "spec.lora.target_modules"),
        ({"prior_preservation": {"num_class_images": 0}}, "spec.prior_preservation.num_class_images"),
        ({"prior_preservation": {"class_prompt": "a photo of ohwx"}}, "spec.prior_preservation.class_prompt"),
        ({"validation": {"prompts": ["a"] * 9}}, "spec.validation.prompts"),
        ({"checkpointing": {"keep_last": 0}}, "spec.checkpointing.keep_last"),
        ({"method": "dora"}, "spec.method"),
        ({"class_noun": "   "}, "spec.class_noun"),
        ({"class_noun": "ohwx"}, "spec.identifier"),
        ({"labels": {"bad key!": "x"}}, "spec.labels"),
    ],
)
def test_nonsense_values_name_their_field(spec, field):
    with pytest.raises(InvalidArgument) as caught:
        build(**spec)
    assert caught.value.field == field


def test_identifier_must_be_one_rare_token():
    tokenizers = [clip_tokenizer()]
    assert check_identifier("ohwx", tokenizers) == "ohwx"
    assert check_identifier("sks", tokenizers) == "sks"  # allowed when asked for, never chosen
    for word, reason in [("zwx", "split into 2 tokens"), ("dog", "common token"), ("two words", "one lower-case word")]:
        with pytest.raises(InvalidArgument, match=reason) as caught:
            check_identifier(word, tokenizers)
        assert caught.value.field == "spec.identifier"
    chosen = choose_identifier(tokenizers)
    assert chosen in AUTOMATIC_CANDIDATES and chosen != "sks"
    assert choose_identifier(tokenizers, class_noun="ohwx") != "ohwx"
