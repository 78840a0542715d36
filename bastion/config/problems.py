"""How a config problem is named: ``FILE:LINE: key.path: message``.

Every problem -- a YAML syntax error, a schema violation, a failed semantic check -- is written the same way, so an
operator can jump straight to the line and a test can assert the exact text. The line comes from a map built from
the YAML node tree (see :mod:`bastion.config.loader`), keyed by the same path tuples pydantic uses for locations.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

Loc = tuple[Any, ...]
"""A key path into the config: mapping keys (str) and list indexes (int), e.g. ``("users", "alice", "groups", 0)``."""

LineMap = dict[Loc, int]
"""The 1-based line where each key path starts in the config file."""


class ConfigError(Exception):
    """A config problem; ``str()`` is ``FILE:LINE: key: message`` (one line per problem)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def dotted(loc: Iterable[Any]) -> str:
    """``("users", "alice", "groups", 0)`` -> ``users.alice.groups[0]``: how a key is spelled in a problem."""
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def line_for(lines: LineMap, loc: Loc) -> int:
    """The line of ``loc``, or of its nearest ancestor present in the file (a missing key points at its parent)."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def problem(path: Path, lines: LineMap, loc: Loc, msg: str) -> str:
    """One problem, in the one format every part of config loading uses."""
    return f"{path}:{line_for(lines, loc)}: {dotted(loc)}: {msg}"
