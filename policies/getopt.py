"""Read a program's options the way its own ``getopt_long`` would, to know exactly where its command starts.

A wrapper (``timeout -vk 5 10 rm F``) hides the program it runs behind options; guessing which words are options
gets ``10`` taken for the program. This module scans an argument list with the program's real grammar: combined
short options (``-vk 5``), attached arguments (``-n1``, ``-S'rm F'``), optional arguments (``-i[SUFFIX]``: only
attached), long options with ``=`` or a separate argument, unambiguous abbreviations of long options (GNU getopt
accepts ``--kill-a=5`` for ``--kill-after=5``), ``--``, and either stopping at the first operand (``+`` in the
optstring: every wrapper) or permuting (options anywhere). An option the grammar does not know is reported, never
guessed: the caller treats the line as opaque.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

NONE, REQUIRED, OPTIONAL = 0, 1, 2


@dataclass(frozen=True)
class Grammar:
    """A getopt optstring (``"+k:s:v"``: ``:`` takes an argument, ``::`` an optional attached one, a leading ``+``
    stops at the first operand) and the long options (name -> NONE / REQUIRED / OPTIONAL).

    ``numeric``: ``-5`` / ``-n5``-style numbers are options (``nice -5``); ``dash_is_option``: a lone ``-`` is an
    option rather than an operand (``env -`` = ``env -i``, ``su -`` = ``su -l``).
    """

    optstring: str
    long: Mapping[str, int] = field(default_factory=dict)
    numeric: bool = False
    dash_is_option: bool = False

    @property
    def stop_at_operand(self) -> bool:
        return self.optstring.startswith("+")

    def short(self) -> dict[str, int]:
        out: dict[str, int] = {}
        s = self.optstring.lstrip("+-")
        i = 0
        while i < len(s):
            c = s[i]
            kind = NONE
            if s.startswith("::", i + 1):
                kind, i = OPTIONAL, i + 2
            elif s.startswith(":", i + 1):
                kind, i = REQUIRED, i + 1
            out[c] = kind
            i += 1
        return out


@dataclass
class Scan:
    """What a scan found: options in order as (name, value or None), the operand indexes (into the scanned list),
    where scanning stopped (first operand when stopping, else the end), and the first error (unknown option...)."""

    options: list[tuple[str, str | None]] = field(default_factory=list)
    operands: list[int] = field(default_factory=list)
    stop: int = 0
    error: str | None = None

    def has(self, *names: str) -> bool:
        return any(n in names for n, _ in self.options)

    def values(self, *names: str) -> list[str]:
        return [v for n, v in self.options if n in names and v is not None]


_SHORT_CACHE: dict[str, dict[str, int]] = {}


def _long_match(name: str, table: Mapping[str, int]) -> tuple[str | None, str | None]:
    """The long option ``name`` stands for (exact, or the one option it abbreviates), or an error."""
    if name in table:
        return name, None
    hits = [k for k in table if k.startswith(name)]
    if len(hits) == 1:
        return hits[0], None
    if not hits:
        return None, f"unknown option --{name}"
    return None, f"ambiguous option --{name} ({', '.join('--' + h for h in sorted(hits))})"


def scan(grammar: Grammar, args: Sequence[str], start: int = 0) -> Scan:
    """Scan ``args[start:]`` with ``grammar``; indexes in the result are into ``args``."""
    short = _SHORT_CACHE.get(grammar.optstring)
    if short is None:
        short = _SHORT_CACHE[grammar.optstring] = grammar.short()
    out = Scan()
    i, n = start, len(args)
    while i < n:
        a = args[i]
        if a == "--":
            first = i + 1
            if grammar.dash_is_option and first < n and args[first] == "-":  # env/su read it after getopt
                out.options.append(("-", None))
                first += 1
            out.operands.extend(range(first, n))
            out.stop = first
            return out
        if a == "-" and grammar.dash_is_option:
            out.options.append(("-", None))
            i += 1
            continue
        if not a.startswith("-") or a == "-":
            if grammar.stop_at_operand:
                out.operands.extend(range(i, n))
                out.stop = i
                return out
            out.operands.append(i)
            i += 1
            continue
        if grammar.numeric and (a[1:].isdigit() or (a.startswith("--") and a[2:].isdigit())):
            out.options.append(("-n", a.lstrip("-")))
            i += 1
            continue
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            full, err = _long_match(name, grammar.long)
            if full is None:
                out.error = out.error or err
                i += 1
                continue
            kind = grammar.long[full]
            if kind == NONE and eq:
                out.error = out.error or f"option --{full} takes no argument"
            elif kind == REQUIRED and not eq:
                if i + 1 >= n:
                    out.error = out.error or f"option --{full} needs an argument"
                    out.options.append(("--" + full, None))
                    break
                value, i = args[i + 1], i + 1
            out.options.append(("--" + full, value if (eq or kind == REQUIRED) else None))
            i += 1
            continue
        j = 1
        while j < len(a):
            c = a[j]
            kind_ = short.get(c)
            if kind_ is None:
                out.error = out.error or f"unknown option -{c}"
                j += 1
                continue
            if kind_ == NONE:
                out.options.append(("-" + c, None))
                j += 1
                continue
            rest = a[j + 1:]
            if rest:
                out.options.append(("-" + c, rest))
            elif kind_ == OPTIONAL:
                out.options.append(("-" + c, None))
            elif i + 1 < n:
                out.options.append(("-" + c, args[i + 1]))
                i += 1
            else:
                out.error = out.error or f"option -{c} needs an argument"
                out.options.append(("-" + c, None))
            break
        i += 1
    out.stop = n
    return out
