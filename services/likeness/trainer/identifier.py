"""The identifier: the rare token that names the subject in prompts ("a photo of ohwx dog").

DreamBooth binds the subject to a word the model has (almost) no prior for. It must be exactly one token of
the base model's tokenizer(s), else the subject is smeared over several embeddings that other words share, and a
rare one, else training fights what the model already knows about the word. CLIP's BPE vocabulary is ordered by
merge rank, which follows frequency in its training corpus, so a high token id means a rare token.

When the caller leaves the identifier empty we pick one from a short list of tokens with no meaning in any
language we know of. Never "sks": it is a popular rifle, and base models render guns for it (a caller may still
ask for it explicitly, as many tutorials do).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from likeness.errors import InvalidArgument

# Whole-word CLIP tokens with no common meaning, checked to be single tokens of CLIP's vocabulary.
AUTOMATIC_CANDIDATES = ("ohwx", "nmwx", "nlwx", "phol", "olis")
# A token in the first `COMMON_FRACTION` of the vocabulary is a common word (CLIP: ids below ~24,700).
COMMON_FRACTION = 0.5
_WORD = re.compile(r"^[a-z][a-z0-9]{1,15}$")


def _single_token_id(tokenizer: PreTrainedTokenizerBase, word: str) -> int | None:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    return ids[0] if len(ids) == 1 else None


def check_identifier(identifier: str, tokenizers: Sequence[PreTrainedTokenizerBase], *, class_noun: str = "") -> str:
    """Returns `identifier` if it is one rare token for every tokenizer; InvalidArgument naming spec.identifier."""
    field = "spec.identifier"
    word = identifier.strip()
    if not _WORD.match(word):
        raise InvalidArgument(
            f"{identifier!r} must be one lower-case word of 2-16 letters or digits, starting with a letter "
            "(for example 'ohwx'); leave it empty to choose one automatically",
            field=field,
        )
    if class_noun and word == class_noun.strip().lower():
        raise InvalidArgument("must differ from the class noun", field=field)
    for tokenizer in tokenizers:
        token_id = _single_token_id(tokenizer, word)
        if token_id is None:
            pieces = tokenizer.tokenize(word)
            raise InvalidArgument(
                f"{word!r} is split into {len(pieces)} tokens ({' '.join(pieces)}) by the base model's "
                f"tokenizer; it must be a single token such as {AUTOMATIC_CANDIDATES[0]!r}",
                field=field,
            )
        if token_id < COMMON_FRACTION * tokenizer.vocab_size:
            raise InvalidArgument(
                f"{word!r} is a common token (id {token_id} of {tokenizer.vocab_size}); the model already has a "
                f"meaning for it. Use a rare token such as {AUTOMATIC_CANDIDATES[0]!r}",
                field=field,
            )
    return word


def choose_identifier(tokenizers: Sequence[PreTrainedTokenizerBase], *, class_noun: str = "") -> str:
    """The first automatic candidate that passes `check_identifier` with these tokenizers."""
    for candidate in AUTOMATIC_CANDIDATES:
        try:
            return check_identifier(candidate, tokenizers, class_noun=class_noun)
        except InvalidArgument:
            continue
    raise InvalidArgument(
        "none of the automatic identifiers is a single rare token of this base model's tokenizer; "
        "set spec.identifier to a rare token of its vocabulary",
        field="spec.identifier",
    )
