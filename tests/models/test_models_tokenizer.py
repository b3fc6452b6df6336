"""The CLIP tokenizer built offline from open_clip's vocabulary has OpenAI CLIP's ids."""

from __future__ import annotations

import json
from pathlib import Path

from likeness.models.tokenizer import CLIP_VOCAB_SIZE, clip_tokenizer, clip_tokenizer_dir


def test_ids_match_openai_clip() -> None:
    tokenizer = clip_tokenizer()
    assert tokenizer("a photo of sks dog").input_ids == [49406, 320, 1125, 539, 48136, 1929, 49407]
    assert len(tokenizer) == CLIP_VOCAB_SIZE
    assert tokenizer.bos_token_id == 49406
    assert tokenizer.eos_token_id == 49407
    # Lower-cased like CLIP, and the same word gets the same id wherever it is.
    assert tokenizer("A PHOTO").input_ids == tokenizer("a photo").input_ids


def test_padding_and_truncation_to_model_max_length() -> None:
    tokenizer = clip_tokenizer(model_max_length=77)
    assert tokenizer.model_max_length == 77
    ids = tokenizer("a dog " * 100, padding="max_length", truncation=True).input_ids
    assert len(ids) == 77
    assert ids[0] == 49406
    assert ids[-1] == 49407
    assert len(tokenizer("a dog", padding="max_length").input_ids) == 77


def test_vocabulary_files_are_written_once(likeness_cache: Path) -> None:
    directory = clip_tokenizer_dir()
    assert directory.parent == likeness_cache
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == CLIP_VOCAB_SIZE
    assert vocab["<|startoftext|>"] == 49406
    assert (directory / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    modified = (directory / "vocab.json").stat().st_mtime_ns
    clip_tokenizer()
    assert (directory / "vocab.json").stat().st_mtime_ns == modified
