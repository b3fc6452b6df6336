"""Built-in templates: the DreamBench prompts, the curated seeds, filtering and rendering."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from likeness.errors import InvalidArgument, NotFound
from likeness.gallery import templates
from likeness.gallery.records import validate_params, validate_tags

# Same lookup as the dataset tests: $LIKENESS_DREAMBENCH_DIR, else shared/ beside the repository.
DREAMBENCH_DIR = Path(
    os.environ.get("LIKENESS_DREAMBENCH_DIR")
    or Path(__file__).resolve().parents[2].parent / "shared/datasets/dreambench"
)
DREAMBENCH_FILE = DREAMBENCH_DIR / "prompts_and_classes.txt"


def test_every_template_is_well_formed() -> None:
    all_templates = templates.list_templates()
    ids = [template.template_id for template in all_templates]
    assert len(ids) == len(set(ids)), "template ids must be unique"
    for template in all_templates:
        templates.validate_template_text(template.template)
        assert template.name and template.category and template.negative_prompt
        # Seeds are served as gallery records, so they must pass the same validation as recorded prompts.
        assert validate_params(template.default_params) == template.default_params
        assert validate_tags(template.tags) == template.tags


def test_catalog_has_dreambench_and_curated_categories() -> None:
    assert set(templates.categories()) == {"dreambench", "portrait", "pet", "product", "style", "context"}
    assert len(templates.list_templates("dreambench")) == 35  # 25 object + 25 live prompts, 15 shared
    curated = [t for t in templates.list_templates() if t.category != "dreambench"]
    assert len(curated) >= 40
    assert "DreamBooth" in templates.attribution()


@pytest.mark.skipif(not DREAMBENCH_FILE.exists(), reason="shared DreamBench folder not mounted")
def test_dreambench_prompts_match_the_dataset_file() -> None:
    source = DREAMBENCH_FILE.read_text()
    expected = {text.replace("{0} {1}", "{subject}") for text in re.findall(r"'(a [^']*?)'\.format", source)}
    shipped = {template.template for template in templates.list_templates("dreambench")}
    assert shipped == expected


def test_seed_file_is_plain_json_next_to_the_module() -> None:
    document = json.loads(templates.SEED_FILE.read_text(encoding="utf-8"))
    assert document["format_version"] == 1
    assert len(document["templates"]) == len(templates.list_templates())


def test_category_filter_and_unknown_category() -> None:
    pets = templates.list_templates("pet")
    assert pets and all(template.category == "pet" for template in pets)
    assert len(templates.list_templates(None)) == len(templates.list_templates(""))
    with pytest.raises(InvalidArgument) as error:
        templates.list_templates("pets")
    assert error.value.field == "category" and "pet" in str(error.value)


def test_returned_templates_are_copies() -> None:
    first = templates.list_templates("style")[0]
    first.default_params["steps"] = 1
    first.tags.append("mutated")
    again = templates.get_template(first.template_id)
    assert again.default_params["steps"] != 1 and "mutated" not in again.tags


def test_get_template_unknown_id() -> None:
    assert templates.get_template("dreambench-beach").template == "a {subject} on the beach"
    with pytest.raises(NotFound):
        templates.get_template("no-such-template")


def test_render_replaces_every_subject_placeholder() -> None:
    beach = templates.get_template("dreambench-beach")
    assert templates.render(beach, "sks dog") == "a sks dog on the beach"
    assert templates.render("{subject} meets {subject}", "  ohwx man ") == "ohwx man meets ohwx man"


@pytest.mark.parametrize(
    ("template", "subject", "field"),
    [
        ("a dog on the beach", "sks dog", "template"),  # no slot: the subject would be silently dropped
        ("a {subjct} on the beach", "sks dog", "template"),  # typo in the placeholder
        ("a {subject} in {place}", "sks dog", "template"),
        ("a {subject} on the beach", "   ", "subject"),
        ("a {subject} on the beach", "sks {dog}", "subject"),
        ("a {subject} on the beach", "x" * 201, "subject"),
    ],
)
def test_render_rejects(template: str, subject: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        templates.render(template, subject)
    assert error.value.field == field
