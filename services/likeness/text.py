"""Rules for free text that clients send (prompts), shared by the inference and gallery services."""

from __future__ import annotations

import re

from likeness.errors import InvalidArgument

# C0 control characters other than tab and newlines: they end PNG text chunks early, garble logs and terminals,
# and mean nothing to a text encoder.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_plain_text(text: str, field: str) -> None:
    """Raises InvalidArgument naming `field` and the position when `text` holds a control character."""
    found = _CONTROL_CHARACTERS.search(text)
    if found:
        raise InvalidArgument(
            f"contains the control character U+{ord(found.group()):04X} at position {found.start()}; remove it",
            field=field,
        )
