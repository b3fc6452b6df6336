"""The base of the project's string enums, shared by every layer."""

from __future__ import annotations

from enum import Enum


class ValueEnum(str, Enum):
    """A string enum that prints as its value (what the database, the logs and the wire protocols carry)."""

    def __str__(self) -> str:
        return str(self.value)
