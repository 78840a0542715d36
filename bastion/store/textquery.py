"""How ``bastion audit search`` turns what an auditor typed into SQL: pure functions, no database.

Both the indexed lines and the query go through ``normalise`` (Unicode case folding, every whitespace run one
space, none at the ends), and a line matches when the normalised query is a substring of the normalised line. The
index only narrows the candidates; the text of the query never becomes SQL or FTS5 syntax:

- SQLite with the ``trigram`` tokenizer: ``norm MATCH '"..."'``, the query as one FTS5 string (a double quote
  doubled), so ``*``, ``-``, ``:``, ``NEAR``, ``AND``, ``^`` and parentheses are characters like any other;
- PostgreSQL: ``norm LIKE '%...%' ESCAPE '!'`` with ``!``, ``%`` and ``_`` escaped (``pg_trgm`` serves it);
- a query shorter than ``MIN_INDEXED`` characters (no trigram to look up), or SQLite without the tokenizer:
  ``instr(norm, ...) > 0`` (SQLite) or the same ``LIKE`` (PostgreSQL), which read every line the filters leave.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MIN_INDEXED", "Plan", "fts_phrase", "like_pattern", "normalise", "plan"]

MIN_INDEXED = 3
"""The trigram indexes look up pieces of 3 characters: a shorter query is answered by reading every line."""


def normalise(s: str) -> str:
    """Text as the index compares it: case folded, whitespace runs made one space, stripped."""
    return " ".join(s.split()).casefold()


def fts_phrase(needle: str) -> str:
    """``needle`` as one FTS5 string literal: every character taken as itself."""
    return '"' + needle.replace('"', '""') + '"'


def like_pattern(needle: str) -> str:
    """A LIKE pattern (``ESCAPE '!'``) matching any text that contains ``needle`` literally."""
    return "%" + needle.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


@dataclass(frozen=True)
class Plan:
    """The normalised query, the WHERE term on ``recording_text rt`` (fixed text) and its bound parameters;
    ``indexed``: whether an index narrows it (else every line the other filters leave is read)."""

    needle: str
    where: str
    params: dict[str, Any] = field(default_factory=dict)
    indexed: bool = True


def plan(query: str, dialect: str, trigram: bool = True) -> Plan:
    """How to find ``query`` on a store of ``dialect`` (``sqlite`` or ``postgresql``); ``trigram``: whether the
    SQLite table is FTS5 with the trigram tokenizer. ValueError for a query that can match nothing."""
    needle = normalise(query)
    if not needle:
        raise ValueError("give something to search for")
    if "\x00" in needle:
        raise ValueError("the text to search for contains a NUL character, which no recording line holds")
    indexed = len(needle) >= MIN_INDEXED
    if dialect == "sqlite":
        if indexed and trigram:
            return Plan(needle, "rt.norm MATCH :q", {"q": fts_phrase(needle)})
        return Plan(needle, "instr(rt.norm, :needle) > 0", {"needle": needle}, indexed=False)
    return Plan(needle, "rt.norm LIKE :pat ESCAPE '!'", {"pat": like_pattern(needle)}, indexed=indexed)
