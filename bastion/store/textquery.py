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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MIN_INDEXED", "Plan", "decode_times", "encode_times", "fts_phrase", "like_pattern", "normalise",
           "normalise_times", "plan", "visible_at"]

MIN_INDEXED = 3
"""The trigram indexes look up pieces of 3 characters: a shorter query is answered by reading every line."""


def normalise(s: str) -> str:
    """Text as the index compares it: case folded, whitespace runs made one space, stripped."""
    return " ".join(s.split()).casefold()


def normalise_times(s: str, times: Sequence[float]) -> tuple[str, list[float]]:
    """``normalise(s)`` with a time for each of its characters, from ``times`` (one per character of ``s``): a
    folded character keeps its own, a whitespace run made one space gets the latest of the run's."""
    out: list[str] = []
    ts: list[float] = []
    run: float | None = None  # the whitespace run since the last character kept
    for c, t in zip(s, times, strict=True):
        if c.isspace():  # what str.split() splits on
            run = t if run is None else max(run, t)
            continue
        if run is not None and out:
            out.append(" ")
            ts.append(run)
        run = None
        folded = c.casefold()  # Python's case folding maps each character on its own
        out.append(folded)
        ts.extend([t] * len(folded))
    return "".join(out), ts


def encode_times(times: Sequence[float]) -> str:
    """Per-character times as runs, ``START:SECONDS`` joined by commas (exact: ``repr`` of each float)."""
    runs: list[str] = []
    for i, t in enumerate(times):
        if i == 0 or t != times[i - 1]:
            runs.append(f"{i}:{t!r}")
    return ",".join(runs)


def decode_times(encoded: str, length: int) -> list[float] | None:
    """``encode_times`` undone for a line of ``length`` characters; None for anything else."""
    try:
        runs = [(int(a), float(b)) for a, _, b in (r.partition(":") for r in encoded.split(","))]
    except ValueError:
        return None
    if not runs or runs[0][0] != 0 or any(b[0] <= a[0] for a, b in zip(runs, runs[1:], strict=False)) \
            or runs[-1][0] >= length:
        return None
    out: list[float] = []
    for (start, t), (end, _) in zip(runs, [*runs[1:], (length, 0.0)], strict=True):
        out.extend([t] * (end - start))
    return out


def visible_at(norm: str, encoded: str | None, needle: str, default: float) -> float:
    """When ``needle`` first stood whole on a line (``norm``, its characters' times ``encoded``): for each place
    it occurs, the latest time of its characters; the earliest of those. ``default`` (the line's time) when the line
    has one time for all its characters, or ``needle`` is not in it."""
    times = decode_times(encoded, len(norm)) if encoded else None
    if times is None or not needle:
        return default
    best: float | None = None
    i = norm.find(needle)
    while i >= 0:
        t = max(times[i:i + len(needle)])
        best = t if best is None else min(best, t)
        i = norm.find(needle, i + 1)
    return default if best is None else best


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
