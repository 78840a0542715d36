"""Find the bash history expansions in a command line typed at an interactive prompt.

Why: an interactive bash (``histexpand`` is on by default) rewrites the line *after* Enter and *before* it parses it.
``!chmod:s/600/777/`` is judged as a program named ``!chmod:s/600/777/``, and then bash runs ``chmod 777 f``. The
interactive filter cannot know the shell's history, so a line with an expansion is not the line that runs: the
engine treats any hit as opaque (the strictest action of the policy).

What counts, following bash (lib/readline/histexpand.c ``history_expand`` and bashhist.c
``bash_history_inhibit_expansion``; default ``histchars`` ``!^#``):

- ``^old^new[^]`` at the start of a physical line (quick substitution, ``!!:s^old^new^``), quoted or not;
- ``!`` followed by anything but a space, tab, newline, carriage return, ``=`` or the end of the line: ``!!``,
  ``!n``, ``!-n``, ``!str``, ``!?str?``, ``!#``, word designators (``!$``, ``!^``, ``!*``, ``!:0``, ``!!:2-3``) and
  modifiers (``!chmod:s/600/777/``, ``!!:gs/a/b/``, ``:h``, ``:p`` ...);
- except where bash does not expand: inside single quotes (outside double quotes; ``$'...'`` honours ``\\'``),
  ``\\!``, ``!"`` inside double quotes, ``$!``, ``${!name}`` (a ``}`` follows), ``[!...]`` (a ``]`` follows), and
  after a ``#`` that starts a word (a comment, to the end of the physical line). Inside double quotes ``!`` *is*
  expanded (``echo "hi!x"``).

When bash versions differ, the hit is kept (fail closed: a false positive only makes the line opaque):
``!`` before ``(``, ``;``, ``&``, ``|``, ``<``, ``>`` (bash 5.2 tries an event there, or an extglob when ``extglob`` is
on, which the filter cannot know); a ``!`` in single quotes inside ``"$(...)"`` (older bash expands it);
``$'...\\'...'`` (older bash ends the quote at ``\\'``); and for a multi-line text each physical line is read both on
its own (older bash) and with the quoting carried over from the lines before (newer bash). ``$!`` at the very start
of a line is a hit (bash's check wants ``$`` after position 0).

Not covered: a shell whose ``histchars`` were changed, or with ``set +H`` (then this is only over-strict); csh/zsh
rules (zsh is close enough: it also expands ``!`` and ``^``).

Pure, stdlib only, no I/O: called by the shell parser for every interactive line, so the common case (no ``!``,
no ``^`` starting a line) returns at once.
"""

from __future__ import annotations

import re

__all__ = ["history_expansions"]

_NO_EXPAND = frozenset(" \t\n\r=")  # readline's history_no_expand_chars (bash >= 5.3 adds ;&|()<>: not relied on)
_WORD_DELIMITERS = frozenset(" \t\n;&()|<>")  # where a '#' starts a comment (history_word_delimiters)
_SEARCH_DELIMITERS = frozenset(";&()|<>")  # bash's history_search_delimiter_chars: they end !str
_EVENT_DELIMITERS = frozenset("^$*%")  # they end !str too ('-' does, after its first character)
_MODIFIERS = frozenset("htrepqx&")  # :h :t :r :e :p :q :x :& (s and g/a/G take more)
_INTERESTING = re.compile(r"[!\"'\\#]")


def history_expansions(text: str) -> list[str]:
    """The history designators bash would expand in ``text`` (in order; [] when the line runs as typed)."""
    if "!" not in text and not (text.startswith("^") or "\n^" in text):
        return []
    found: dict[int, str] = {}
    start = 0
    for line in text.split("\n"):
        if line.startswith("^"):
            found[start] = line[: _modifiers_end(line, _subst_end(line, 0))]
        if "!" in line:
            for pos, spec in _scan(line, dollar_escapes=True):
                found.setdefault(start + pos, spec)
            if "$'" in line:  # an older bash ends $'...' at \' too
                for pos, spec in _scan(line, dollar_escapes=False):
                    found.setdefault(start + pos, spec)
        start += len(line) + 1
    if "\n" in text and "!" in text:  # newer bash carries the quoting of one line into the next
        for pos, spec in _scan(text, dollar_escapes=True):
            found.setdefault(pos, spec)
    return [found[k] for k in sorted(found)]


def _scan(s: str, *, dollar_escapes: bool) -> list[tuple[int, str]]:
    """(position, designator) of each ``!`` that starts an expansion: the pre-scan of ``history_expand``, run on to
    the end instead of stopping at the first hit."""
    hits: list[tuple[int, str]] = []
    n = len(s)
    dquote = False
    i = 0
    while True:
        m = _INTERESTING.search(s, i)
        if m is None:
            break
        i = m.start()
        c = s[i]
        nxt = s[i + 1] if i + 1 < n else ""
        if c == "#":
            if not dquote and (i == 0 or s[i - 1] in _WORD_DELIMITERS):  # a comment, to the end of the line
                j = s.find("\n", i)
                if j < 0:
                    break
                i = j
                continue
            i += 1
        elif c == "!":
            if nxt == "" or nxt in _NO_EXPAND or (dquote and nxt == '"') or _inhibited(s, i):
                i += 1
                continue
            end = _designator_end(s, i, '"' if dquote else "")
            hits.append((i, s[i:end]))
            i = max(end, i + 1)
        elif c == "\\":
            i += 2 if nxt == "!" or nxt == "'" or (dquote and nxt == '"') else 1
        elif c == '"':
            dquote = not dquote
            i += 1
        elif c == "'" and not dquote:
            escapes = dollar_escapes and i > 0 and s[i - 1] == "$"
            j = i + 1
            while j < n and s[j] != "'":
                j += 2 if escapes and s[j] == "\\" else 1
            if j >= n:
                break
            i = j + 1
        else:
            i += 1
    return hits


def _inhibited(s: str, i: int) -> bool:
    """bash_history_inhibit_expansion: ``[!...]``, ``${!name}``, ``$!`` (extglob ``!(...)`` is not assumed)."""
    if i > 1 and s[i - 1] == "$":
        return True
    eol = s.find("\n", i)
    eol = len(s) if eol < 0 else eol
    if i > 0 and s[i - 1] == "[":
        return s.find("]", i + 1, eol) >= 0
    return i > 1 and s[i - 1] == "{" and s[i - 2] == "$" and s.find("}", i + 1, eol) >= 0


def _designator_end(s: str, i: int, quote: str) -> int:
    """End of the designator starting with the ``!`` at ``i``: event, word designator, modifiers."""
    n = len(s)
    j = i + 1
    c = s[j] if j < n else ""
    if c in ("!", "#"):
        j += 1
    elif c in (":", "$", "*", "%", "^"):
        pass  # a word designator of the previous line
    else:
        if c == "-" and j + 1 < n and s[j + 1] in "0123456789":
            j += 1
        if j < n and s[j] in "0123456789":
            while j < n and s[j] in "0123456789":
                j += 1
        else:
            substring = j < n and s[j] == "?"
            j += substring
            first = j
            while j < n:
                c = s[j]
                if c == "\n" or (substring and c == "?"):
                    break
                if not substring and (c in " \t:" or c in _EVENT_DELIMITERS or c in _SEARCH_DELIMITERS
                                      or (c == "-" and j > first) or (quote and c == quote)):
                    break
                j += 1
            if substring and j < n and s[j] == "?":
                j += 1
    return _modifiers_end(s, _word_end(s, j))


def _word_end(s: str, j: int) -> int:
    """Past a word designator at ``j`` (``:N``, ``:N-M``, ``^``, ``$``, ``*``, ``%``, ``-M``), if any."""
    n = len(s)
    k = j
    colon = k < n and s[k] == ":"
    k += colon
    if k < n and s[k] in "%*$":
        return k + 1
    if not (k < n and (s[k] in "-^" or (colon and s[k].isdigit()))):
        return j
    if s[k] == "^":
        k += 1
    while k < n and s[k].isdigit():
        k += 1
    if k < n and s[k] in "^*":
        return k + 1
    if k < n and s[k] == "-":
        k += 1
        if k < n and s[k] in "$^":
            return k + 1
        while k < n and s[k].isdigit():
            k += 1
    return k


def _modifiers_end(s: str, j: int) -> int:
    """Past the ``:modifier`` list at ``j`` (``:s/a/b/``, ``:gs/a/b/``, ``:&``, ``:h`` ...)."""
    n = len(s)
    while j + 1 < n and s[j] == ":":
        k = j + 1
        if s[k] in "gaG":
            k += 1
        c = s[k] if k < n else ""
        if c in _MODIFIERS:
            j = k + 1
        elif c == "s":
            j = _subst_end(s, k + 1)
        else:
            break
    return j


def _subst_end(s: str, k: int) -> int:
    """Past ``/old/new/`` at ``k`` (any delimiter, ``\\`` quoting it; the last one may be left out)."""
    n = len(s)
    if k >= n:
        return k
    delim = s[k]
    k += 1
    for _ in range(2):
        while k < n and s[k] != delim:
            k += 2 if s[k] == "\\" and k + 1 < n and s[k + 1] == delim else 1
        if k < n:
            k += 1
    return k
