"""What a user types into the search box, turned into full-text queries that are safe for each engine.

A query is reduced to its words (Unicode letters and digits); everything else, FTS5 and tsquery operators
included (`AND OR NOT " * ( ) : & | !`), is a separator. Stop words that carry no meaning in image prompts are
dropped. The words are then written out in each engine's syntax from this module only, each one quoted, so no
text a caller sends ever reaches an engine as syntax. Matching is all-words first; a search whose words never
occur together falls back to any-word (`MatchMode.ANY`), still ranked by relevance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from likeness.enums import ValueEnum
from likeness.errors import InvalidArgument

SUBJECT_PLACEHOLDER = "{subject}"
MAX_QUERY_WORDS = 32

# Function words that carry no meaning in image prompts ("a dog on the beach" is about dog and beach). Kept to
# words that both engines' stemmers treat alike, so SQLite and PostgreSQL match the same entries.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "in",
        "into",
        "is",
        "it",
        "its",
        "not",
        "of",
        "on",
        "or",
        "that",
        "the",
        "their",
        "this",
        "to",
        "with",
    ]
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


class MatchMode(ValueEnum):
    """How a query's words must occur in an entry: all of them, or at least one."""

    ALL = "all"
    ANY = "any"


@dataclass(frozen=True)
class SearchTerms:
    """The words of a query, lower-cased, in order, without duplicates or stop words."""

    words: tuple[str, ...]

    @classmethod
    def parse(cls, query: str) -> SearchTerms:
        """The words of `query`; InvalidArgument (field `query`) when it has none to search for."""
        text = query.replace(SUBJECT_PLACEHOLDER, " ").lower()
        words = [word for word in dict.fromkeys(_WORD.findall(text)) if word not in STOPWORDS]
        if not words:
            raise InvalidArgument(
                "has no words to search for (operators, punctuation and words such as 'the' are ignored); "
                "type a word, or send an empty query to browse",
                field="query",
            )
        return cls(tuple(words[:MAX_QUERY_WORDS]))

    def fts5(self, mode: MatchMode) -> str:
        """An FTS5 MATCH expression: every word a quoted string (so `AND`, `*` or `"` are plain text)."""
        quoted = ['"' + word.replace('"', '""') + '"' for word in self.words]
        return (" AND " if mode is MatchMode.ALL else " OR ").join(quoted)

    def tsquery(self, mode: MatchMode) -> str:
        """A PostgreSQL to_tsquery() argument: every word single-quoted and escaped as a tsquery lexeme."""
        quoted = ["'" + word.replace("\\", "\\\\").replace("'", "''") + "'" for word in self.words]
        return (" & " if mode is MatchMode.ALL else " | ").join(quoted)
