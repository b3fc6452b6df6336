"""Built-in prompt templates: the DreamBench evaluation prompts plus a curated seed collection.

Every template carries a `{subject}` placeholder. The inference service expands it to
"<identifier> <class noun>" (for example "sks dog"), which is what binds a prompt to a fine-tuned subject.
`render` does the same expansion for previews and clients that want the final text.

The templates live in `seed_prompts.json` next to this module, so the package works without the shared
datasets folder; the gallery also serves them to every tenant as its read-only seed collection.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from likeness.errors import InvalidArgument, NotFound

SUBJECT_PLACEHOLDER = "{subject}"
SEED_FILE = Path(__file__).with_name("seed_prompts.json")
MAX_SUBJECT_CHARS = 200

# A template suits every base model and its parameters are sent to GenerateImages unchanged, so it leaves the image
# size to the model (its native size): a fixed 512 or 640 px is out of range for the tiny and toy models (32 to
# 256 px) and far from SDXL's native 1024 px. Sizes the seed file names are not served.
MODEL_DEPENDENT_PARAMS = frozenset({"width", "height"})

# Any `{word}` in a template; only `{subject}` is defined, others are almost always typos ("{subjet}").
_PLACEHOLDER_PATTERN = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Template:
    """A reusable prompt with a `{subject}` slot, its negative prompt, and parameters that suit it.

    `default_params` (steps, guidance) are within every base model's limits and carry no image size, so they can
    be sent to any base model unchanged.
    """

    template_id: str
    name: str
    category: str
    template: str
    negative_prompt: str
    default_params: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


@lru_cache(maxsize=1)
def _load_seed_file() -> tuple[str, tuple[Template, ...]]:
    document = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    templates = tuple(
        Template(
            template_id=entry["template_id"],
            name=entry["name"],
            category=entry["category"],
            template=entry["template"],
            negative_prompt=entry.get("negative_prompt", ""),
            default_params=_portable_params(entry.get("default_params", {})),
            tags=list(entry.get("tags", [])),
        )
        for entry in document["templates"]
    )
    return document.get("attribution", ""), templates


def _portable_params(params: dict[str, Any]) -> dict[str, Any]:
    """The template's parameters without the ones that depend on the base model (see MODEL_DEPENDENT_PARAMS)."""
    return {name: value for name, value in params.items() if name not in MODEL_DEPENDENT_PARAMS}


def _fresh_copy(template: Template) -> Template:
    # The cached templates are shared; callers get their own dict/list so mutating them cannot leak.
    return Template(
        template_id=template.template_id,
        name=template.name,
        category=template.category,
        template=template.template,
        negative_prompt=template.negative_prompt,
        default_params=copy.deepcopy(template.default_params),
        tags=list(template.tags),
    )


def attribution() -> str:
    """Where the non-original templates come from (shown with the DreamBench prompts)."""
    return _load_seed_file()[0]


def categories() -> list[str]:
    """The template categories, in the order they first appear in the seed file."""
    return list(dict.fromkeys(template.category for template in _load_seed_file()[1]))


def list_templates(category: str | None = None) -> list[Template]:
    """All built-in templates, or those of one category.

    An empty or None category means all. An unknown category is an InvalidArgument that lists the valid
    ones, because an empty answer would hide a typo.
    """
    templates = _load_seed_file()[1]
    if category:
        known = categories()
        if category not in known:
            raise InvalidArgument(
                f"unknown template category {category!r}; use one of {', '.join(known)}", field="category"
            )
        templates = tuple(template for template in templates if template.category == category)
    return [_fresh_copy(template) for template in templates]


def get_template(template_id: str) -> Template:
    """One built-in template by id (NotFound when there is none)."""
    for template in _load_seed_file()[1]:
        if template.template_id == template_id:
            return _fresh_copy(template)
    raise NotFound(f"template {template_id!r} does not exist; list_templates() shows the available ids")


def validate_template_text(text: str, *, field_name: str = "template") -> None:
    """Check that `text` has a `{subject}` slot and no other placeholder.

    A template without the slot would silently drop the fine-tuned subject from the image, so it is
    rejected rather than rendered unchanged.
    """
    placeholders = _PLACEHOLDER_PATTERN.findall(text)
    unknown = sorted({name for name in placeholders if name != "subject"})
    if unknown:
        raise InvalidArgument(
            "only the {subject} placeholder is supported; found " + ", ".join("{" + n + "}" for n in unknown),
            field=field_name,
        )
    if "subject" not in placeholders:
        raise InvalidArgument(
            "the template has no {subject} placeholder, so the subject would not appear in the image; "
            "add {subject} where the subject belongs",
            field=field_name,
        )


def render(template: Template | str, subject: str) -> str:
    """Replace every `{subject}` in a template (object or text) with `subject`.

    `subject` is what the inference service would substitute, e.g. "sks dog". Raises InvalidArgument
    (field "template") when the text has no `{subject}` or has another placeholder, and (field "subject")
    when the subject is empty, longer than 200 characters, or contains braces.
    """
    text = template.template if isinstance(template, Template) else template
    validate_template_text(text)
    subject = subject.strip()
    if not subject:
        raise InvalidArgument("give the subject phrase, e.g. 'sks dog'", field="subject")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise InvalidArgument(f"must be at most {MAX_SUBJECT_CHARS} characters", field="subject")
    if "{" in subject or "}" in subject:
        raise InvalidArgument("must not contain '{' or '}'", field="subject")
    return text.replace(SUBJECT_PLACEHOLDER, subject)
