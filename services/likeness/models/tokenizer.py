"""OpenAI CLIP's BPE tokenizer, built offline from the vocabulary open_clip ships.

Stable Diffusion's text encoders use OpenAI's CLIP tokenizer. Nothing may be downloaded at run time, but the
open-clip-torch wheel carries `bpe_simple_vocab_16e6.txt.gz`, the very BPE merge list CLIP was trained with. From it
we write the `vocab.json` + `merges.txt` pair that `transformers.CLIPTokenizer` reads; the ids equal OpenAI's
(`'a photo of sks dog'` -> `[49406, 320, 1125, 539, 48136, 1929, 49407]`).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from likeness.errors import FailedPrecondition
from likeness.models.cache import likeness_cache_dir

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 49,152 - 256 - 2 merges of the file (after its "#version" header line).
CLIP_MERGE_COUNT = 49152 - 256 - 2
CLIP_VOCAB_SIZE = 49408
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
TOKENIZER_FILES = ("vocab.json", "merges.txt")


def _open_clip_bpe_path() -> Path:
    # Importing open_clip needs torchvision, which is not installed: only locate the package's data file.
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition(
            "the CLIP tokenizer is built from open_clip's vocabulary, but open-clip-torch is not installed: "
            "run `pip install --no-deps open-clip-torch`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BPE_FILE_NAME
    if not path.is_file():
        raise FailedPrecondition(f"open-clip-torch is installed but {path} is missing: reinstall it")
    return path


def _bytes_to_unicode() -> list[str]:
    """CLIP's reversible byte -> printable character table, in vocabulary order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    byte_values = printable[:]
    characters = printable[:]
    shift = 0
    for byte in range(256):
        if byte not in byte_values:
            byte_values.append(byte)
            characters.append(256 + shift)
            shift += 1
    return [chr(code) for code in characters]


def _clip_vocab_and_merges(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    with gzip.open(bpe_path, "rt", encoding="utf-8") as stream:
        lines = stream.read().split("\n")
    merges = lines[1 : CLIP_MERGE_COUNT + 1]
    base_characters = _bytes_to_unicode()
    tokens = base_characters + [character + "</w>" for character in base_characters]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [START_OF_TEXT, END_OF_TEXT]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise FailedPrecondition(f"{bpe_path} yields {len(vocab)} tokens instead of CLIP's {CLIP_VOCAB_SIZE}")
    return vocab, merges


def _write_atomically(path: Path, text: str) -> None:
    # Several processes may build the cache at once: each writes its own temp file and renames it into place.
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_clip_tokenizer_files(directory: str | Path) -> Path:
    """Write CLIP's `vocab.json` and `merges.txt` into `directory` (created if needed) and return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_vocab_and_merges(_open_clip_bpe_path())
    _write_atomically(directory / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    _write_atomically(directory / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    return directory


def clip_tokenizer_dir() -> Path:
    """The cached folder holding CLIP's `vocab.json` + `merges.txt`, written on first use."""
    directory = likeness_cache_dir() / "clip-tokenizer"
    if not all((directory / name).is_file() for name in TOKENIZER_FILES):
        write_clip_tokenizer_files(directory)
    return directory


def clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A fresh OpenAI CLIP tokenizer (49,408 tokens), loaded from the cached vocabulary files.

    `model_max_length` must be set (77 for Stable Diffusion): left unset, generation overflows.
    """
    from transformers import CLIPTokenizer  # imported here so importing this module stays cheap

    return CLIPTokenizer.from_pretrained(
        str(clip_tokenizer_dir()), model_max_length=model_max_length, local_files_only=True
    )
