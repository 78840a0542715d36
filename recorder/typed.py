"""What was typed, made readable for ``replay --stream i``: each Enter starts a new line, and every key that is not
text is shown by name instead of being sent to the viewer's terminal.

A typed stream is keys, not screen output: Enter is a bare ``\\r`` (which, written to a terminal, only returns the
cursor, so every line would overwrite the one before), Backspace is DEL, arrows and function keys are escape
sequences, Ctrl-C is ``\\x03``, a paste comes between bracketed-paste markers, and the operator's terminal answers
queries (cursor position, colours) on the same stream. Written raw, those would move the viewer's cursor, switch
its modes or worse. Here only printable text goes out as itself; ``\\r``, ``\\n`` and ``\\r\\n`` each end a line
(also across two events); Ctrl-C and Ctrl-D end one after their name (they end a line at a tty, too); other control
characters show as ``^X``; known keys as ``<Up>``, ``<C-Left>``, ``<F5>``, ``<BS>``; a paste as ``<paste>`` ...
``</paste>`` around its lines; anything else as its characters spelled out (``<Esc[12;5R>``, ``<U+009B>``). Names
are dimmed so that they stand apart from text typed literally.
"""

from __future__ import annotations

import re

__all__ = ["TypedKeys"]

NEWLINE = "\r\n"
DIM, UNDIM = "\x1b[2m", "\x1b[22m"

_SEQ = re.compile(
    r"\x1b\[(?P<csi>[0-?]*[ -/]*[@-~])"  # CSI: cursor keys, function keys, paste markers, terminal answers
    r"|\x1bO(?P<ss3>[ -~])"  # SS3: application-mode cursor keys, F1-F4
    r"|\x1b(?P<str>[\]P_^X][^\x07\x1b]*(?:\x07|\x1b\\))"  # OSC/DCS/APC/PM/SOS: a terminal's answers
    r"|\x1b(?P<meta>[^\x1b])"  # Alt+key
    r"|(?P<esc>\x1b)",
    re.DOTALL,
)
_CURSOR = {"A": "Up", "B": "Down", "C": "Right", "D": "Left", "H": "Home", "F": "End", "Z": "S-Tab",
           "P": "F1", "Q": "F2", "R": "F3", "S": "F4", "I": "FocusIn", "O": "FocusOut"}
_TILDE = {1: "Home", 2: "Ins", 3: "Del", 4: "End", 5: "PgUp", 6: "PgDn", 7: "Home", 8: "End",
          11: "F1", 12: "F2", 13: "F3", 14: "F4", 15: "F5", 17: "F6", 18: "F7", 19: "F8", 20: "F9", 21: "F10",
          23: "F11", 24: "F12"}
_MODS = {2: "S-", 3: "M-", 4: "M-S-", 5: "C-", 6: "C-S-", 7: "C-M-", 8: "C-M-S-"}
_NAMED = {"\x7f": "BS", "\t": "Tab", "\x1b": "Esc"}
_LINE_ENDERS = {"\x03": "^C", "\x04": "^D"}


def _spell(text: str) -> str:
    """Characters as themselves where printable, else as ``^X`` or ``U+XXXX``: safe to show inside a name."""
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif ord(c) < 0x20:
            out.append("^" + chr(ord(c) + 0x40))
        else:
            out.append(f"U+{ord(c):04X}")
    return "".join(out)


def _csi_name(body: str) -> str | None:
    """The key a CSI sequence names (``1;5C`` -> ``C-Right``), or None for anything else."""
    params, final = body[:-1], body[-1]
    nums = params.split(";") if params else []
    if not all(n.isdigit() for n in nums):
        return None
    mod = _MODS.get(int(nums[1]), "") if len(nums) == 2 else ""
    if final in _CURSOR and (not nums or nums[0] == "1") and len(nums) <= 2:
        return mod + _CURSOR[final]
    if final == "~" and nums and int(nums[0]) in _TILDE and len(nums) <= 2:
        return mod + _TILDE[int(nums[0])]
    return None


class TypedKeys:
    """Feed the data of input events in order; get text safe and readable on any terminal."""

    def __init__(self, *, data: bool = False) -> None:
        """``data``: the input of a session without a terminal (a program piped in), where a tab is text."""
        self._data = data
        self._after_cr = False  # the last event ended with \r: a \n starting the next one is the same Enter
        self._paste = False

    def reset(self) -> None:
        """Start over (the viewer's screen was cleared)."""
        self._after_cr = self._paste = False

    def feed(self, data: str) -> str:
        out: list[str] = []
        if self._after_cr and data.startswith("\n"):
            data = data[1:]
        self._after_cr = data.endswith("\r")
        i = 0
        while i < len(data):
            m = _SEQ.match(data, i)
            if m is not None:
                out.append(self._sequence(m))
                i = m.end()
                continue
            c = data[i]
            i += 1
            if c == "\r" or c == "\n":
                if c == "\r" and data.startswith("\n", i):
                    i += 1
                out.append(NEWLINE)
            elif c in _LINE_ENDERS:
                out.append(_name(_LINE_ENDERS[c]) + NEWLINE)
            elif c == "\t" and (self._paste or self._data):
                out.append("\t")  # a tab in pasted text is text; typed, it asks the shell to complete
            elif c in _NAMED:
                out.append(_name(f"<{_NAMED[c]}>"))
            elif c.isprintable():
                out.append(c)
            else:
                out.append(_name(_spell(c) if ord(c) < 0x20 else f"<{_spell(c)}>"))
        return "".join(out)

    def _sequence(self, m: re.Match[str]) -> str:
        if m.group("csi") is not None:
            body = m.group("csi")
            if body in ("200~", "201~"):
                self._paste = body == "200~"
                return _name("<paste>" if self._paste else "</paste>")
            key = _csi_name(body)
            return _name(f"<{key}>" if key else f"<Esc[{_spell(body)}>")
        if m.group("ss3") is not None:
            key = _CURSOR.get(m.group("ss3"))
            return _name(f"<{key}>" if key else f"<EscO{_spell(m.group('ss3'))}>")
        if m.group("str") is not None:
            return _name(f"<Esc{_spell(m.group('str'))}>")
        if m.group("meta") is not None:
            return _name(f"<M-{_spell(m.group('meta'))}>")
        return _name("<Esc>")


def _name(label: str) -> str:
    return f"{DIM}{label}{UNDIM}"
