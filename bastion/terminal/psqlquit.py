"""Leaving a restricted psql with ``\\q``.

In ``\\restrict`` mode psql refuses every meta-command, ``\\q`` included ("backslash commands are restricted; only
\\unrestrict is allowed"), yet every psql user quits with ``\\q``. The bastion sees the typed line, so a quit form
typed where psql itself would quit ends psql the way Ctrl-D does: the line is never sent; instead psql gets the
keys that empty readline's line and end its input (``QUIT_KEYS``: end of line, kill the line, EOF; on a cooked
terminal the kill and EOF characters do the same). psql prints ``\\q`` and exits with status 0, and the operator is
back at the menu (or, straight to the target, the connection ends) with the usual outcome line. The Enter of the
line never reaches psql, ``QUIT_KEYS`` holds no key that runs a line, and nothing the operator types afterwards is
forwarded, so a misjudged line can only end the session, which Ctrl-D does anyway.

Judged as psql judges it (``MainLoop`` and the backslash lexer; checked against psql 15), from the typed line and
the prompt psql drew before it (its default ``%/%R%x%#``, which the bastion's psqlrc sets: the database, the state
``%R``, the transaction flag, ``>`` or ``#``):

- ``\\q`` or ``\\quit`` after optional whitespace; a command name ends at whitespace or a backslash (``\\qecho`` and
  ``\\q;`` are other, unknown, commands), anything after it is what psql would ignore (extra arguments) or never
  reach (later meta-commands). It quits wherever psql reads meta-commands: the main prompt ``=>``, and also inside
  an unfinished statement (``->``, ``(>``), whose text is dropped, as psql does with ``\\q``. Inside a quoted string,
  a quoted identifier, a dollar quote or a comment (``'>``, ``">``, ``$>``, ``*>``) the backslash is text: the line
  goes to psql as today (psql adds it to the string and hints "Use control-D to quit").
- ``exit`` or ``quit``, in any case, at the very start of the line, followed only by whitespace and at most one
  ``;``, at a prompt with an empty query buffer (``=>``; ``^>``, ``!>``); psql would quit by itself there, ending it
  the same way keeps one path. Elsewhere psql adds the word to the statement and says "Use \\q to quit", which then
  holds.

The prompt is taken from the screen line where the operator began typing the line; if psql had not drawn it yet
(keys typed ahead), from the line at Enter (the prompt followed by the echo of what was typed). A line psql has not
shown yet is forwarded as today. Ctrl-C starts a new line, as in psql.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from bastion.terminal.lineedit import MAX_LINE, LineEditor, render_line

QUIT_KEYS = b"\x05\x15\x04"  # ^E ^U ^D: to the end of the line, kill it, EOF on the empty line
SPACE = " \t\n\r\f\v"  # psql's {space} and C isspace()
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"
INTERRUPT = b"\x03"
# %R: = ready, - continuation, ( in parentheses, ' " $ in a quote, * in a comment, ^ single-line, ! disconnected,
# @ in an inactive \if branch; then %x (in a transaction *, failed !, unknown ?) and %# (> or # for a superuser)
STATE = r"(?P<state>[=\-(^!@'\"$*])(?P<tx>[*!?]?)[>#]"
META_QUITS_AT = frozenset("=-(^!")  # where psql lexes a backslash as a meta-command (not @: the branch is inactive)
WORD_QUITS_AT = frozenset("=^!")  # PROMPT1: the query buffer is empty
META_QUIT = re.compile(r"\\(?:quit|q)(?:[ \t\n\r\f\v\\]|$)")

QuitForm = Literal["meta", "word"]


def quit_form(line: str) -> QuitForm | None:
    """Which quit form ``line`` (as psql would read it, newlines of a paste included) is, if any."""
    if META_QUIT.match(line.lstrip(SPACE)):
        return "meta"
    word, rest = line[:4], line[4:]
    if word.isascii() and word.lower() in ("exit", "quit"):  # not indented: an indented one is an identifier
        rest = rest.lstrip(SPACE)
        rest = rest.removeprefix(";").lstrip(SPACE)
        if not rest:
            return "word"
    return None


def prompt_state(shown: str, database: str) -> tuple[str, str] | None:
    """psql's state ``%R`` and the rest of the line, for a screen line that begins with psql's default prompt."""
    m = re.match(re.escape(database) + STATE + " ?", shown)
    return (m.group("state"), shown[m.end():]) if m else None


def ends_psql(line: str, state: str) -> bool:
    """Would psql quit on ``line`` typed at a prompt in ``state`` (were meta-commands not restricted)?"""
    form = quit_form(line)
    if form == "meta":
        return state in META_QUITS_AT
    return form == "word" and state in WORD_QUITS_AT


class QuitWatch:
    """Between the operator and a restricted interactive psql: forwards every key, except that an Enter ending a
    quit form (see the module docstring) becomes ``QUIT_KEYS``; after that, nothing more is forwarded.

    ``forward`` writes to psql's pty; ``quitting(line)`` is told once, when the session is being ended."""

    def __init__(self, database: str, forward: Callable[[bytes], None],
                 quitting: Callable[[str], None] = lambda line: None, cols: int = 80):
        self.database, self.forward, self.quitting = database, forward, quitting
        self.cols = cols
        self.editor = LineEditor()
        self.line = bytearray()  # psql's output since its last newline
        self.prompt: str | None = None  # the screen line when the operator began typing this line
        self.pasting = False
        self.done = False

    def output(self, data: bytes) -> None:
        """psql wrote ``data``: keep the current screen line."""
        nl = data.rfind(b"\n")
        if nl >= 0:
            self.line = bytearray(data[nl + 1:])
        else:
            self.line += data
            del self.line[:-MAX_LINE]

    def input(self, data: bytes) -> None:
        """The operator typed ``data``."""
        start = i = 0
        while i < len(data) and not self.done:
            if data.startswith(PASTE_START, i) or data.startswith(PASTE_END, i):
                self._typed(data[start:i])  # what came before, read in the paste state it was typed in
                start, self.pasting = i, data.startswith(PASTE_START, i)
                i += len(PASTE_START)
                continue
            if data[i] == INTERRUPT[0]:  # psql drops the line (and the statement) and draws a new prompt
                self._typed(data[start:i + 1])
                self._new_line()
                start = i + 1
            elif data[i] in b"\r\n" and not self.pasting:
                self._typed(data[start:i])
                start = i + 1
                if self._quits():
                    self.done = True
                    self.forward(QUIT_KEYS)
                    self.quitting(self.editor.text if self.editor.reliable else "")
                    return
                self.forward(data[i:i + 1])
                self._new_line()
            i += 1
        if not self.done:
            self._typed(data[start:])

    def _typed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self.prompt is None:
            self.prompt = render_line(bytes(self.line), self.cols)
        self.editor.feed(chunk, pasting=self.pasting)
        self.forward(chunk)

    def _new_line(self) -> None:
        """A line ended (Enter or Ctrl-C): psql answers on a new screen line, with a new prompt."""
        self.editor.reset()
        self.prompt = None
        self.line.clear()

    def _quits(self) -> bool:
        """Is the line at this Enter a quit form where psql reads it as one? (see the module docstring)"""
        typed = self.editor.text if self.editor.reliable else None
        at = prompt_state(self.prompt, self.database) if self.prompt is not None else None
        if at is not None and typed is not None:
            return ends_psql(typed, at[0])
        shown = prompt_state(render_line(bytes(self.line), self.cols), self.database)
        if shown is None:
            return False  # psql has not drawn this line yet: as today
        state, echo = shown
        if typed is not None and echo.strip(SPACE) != typed.strip(SPACE):
            return False  # the echo is behind what was typed
        return ends_psql(typed if typed is not None else echo, state)
