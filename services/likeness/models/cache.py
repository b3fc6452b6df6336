"""Where Likeness keeps files it generates once and reuses (tokenizer vocabulary, builtin base models)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def likeness_cache_dir() -> Path:
    """`$LIKENESS_CACHE_DIR`, else `$XDG_CACHE_HOME/likeness`, else `~/.cache/likeness`; a folder in the system
    temp dir when none of those is writable (e.g. a read-only home in a locked-down container)."""
    explicit = os.environ.get("LIKENESS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    candidate = (Path(xdg) if xdg else Path.home() / ".cache") / "likeness"
    with contextlib.suppress(OSError):  # not creatable: use the temp dir below
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    return Path(tempfile.gettempdir()) / f"likeness-cache-{os.getuid()}"
