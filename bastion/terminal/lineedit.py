"""The line at Enter, reconstructed twice: from the input (``LineEditor``, a small readline-style editor: sees what
was typed even before it is echoed, and every line of a paste) and from the output (``render_line``: the bytes since
the last newline as a terminal shows them, so Tab completion and history recall are seen; ``strip_prompt`` takes
the prompt off). The command filter (``bastion.terminal.cmdfilter``) judges both."""

from __future__ import annotations

import re

import pyte

MAX_LINE = 16384  # bytes of one output line kept for rendering


class LineEditor:
    """Input-side reconstruction of a readline-style line; ``reliable`` drops when history/completion is used."""

    buf: list[str]
    pos: int
    reliable: bool
    typed_any: bool
    tail: str  # printable text typed since the last editing key: the part whose echo we can check
    _esc: bytes

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Back to an empty line."""
        self.buf = []
        self.pos = 0
        self.reliable = True
        self.typed_any = False
        self.tail = ""
        self._esc = b""

    @property
    def text(self) -> str:
        return "".join(self.buf)

    def feed(self, data: bytes, pasting: bool = False) -> None:
        text = (self._esc + data).decode("utf-8", "replace")
        self._esc = b""
        i = 0
        while i < len(text):
            c = text[i]
            if c == "\x1b":
                m = re.match(r"\x1b(\[[0-9;]*[~A-Za-z]|O[A-Za-z]|.)?", text[i:])
                seq = m.group(0) if m else "\x1b"
                if len(seq) == 1 and i == len(text) - 1:
                    self._esc = b"\x1b"
                    return
                self._escape(seq)
                i += len(seq)
                continue
            if c.isprintable() and c != "\x1b":
                self.tail += c
                self.typed_any = True
            elif c not in ("\r", "\n"):
                self.tail = ""
            if c in ("\x7f", "\x08"):
                if self.pos > 0:
                    del self.buf[self.pos - 1]
                    self.pos -= 1
            elif c == "\x15":  # ^U
                del self.buf[: self.pos]
                self.pos = 0
            elif c == "\x0b":  # ^K
                del self.buf[self.pos:]
            elif c == "\x17":  # ^W
                j = self.pos
                while j > 0 and self.buf[j - 1] == " ":
                    j -= 1
                while j > 0 and self.buf[j - 1] != " ":
                    j -= 1
                del self.buf[j: self.pos]
                self.pos = j
            elif c == "\x01":
                self.pos = 0
            elif c == "\x05":
                self.pos = len(self.buf)
            elif c == "\x02":
                self.pos = max(0, self.pos - 1)
            elif c == "\x06":
                self.pos = min(len(self.buf), self.pos + 1)
            elif c in ("\r", "\n") and pasting:
                self.buf.insert(self.pos, "\n")
                self.pos += 1
            elif c in ("\t", "\x10", "\x0e", "\x12", "\x13", "\x19", "\x14"):  # completion, history, yank, transpose
                self.reliable = False
            elif c.isprintable():
                self.buf.insert(self.pos, c)
                self.pos += 1
            i += 1

    def _escape(self, seq: str) -> None:
        if seq not in ("\x1b[200~", "\x1b[201~"):
            self.tail = ""
        if seq in ("\x1b[D", "\x1bOD"):
            self.pos = max(0, self.pos - 1)
        elif seq in ("\x1b[C", "\x1bOC"):
            self.pos = min(len(self.buf), self.pos + 1)
        elif seq in ("\x1b[H", "\x1bOH", "\x1b[1~"):
            self.pos = 0
        elif seq in ("\x1b[F", "\x1bOF", "\x1b[4~"):
            self.pos = len(self.buf)
        elif seq == "\x1b[3~":
            if self.pos < len(self.buf):
                del self.buf[self.pos]
        elif seq in ("\x1b[200~", "\x1b[201~"):
            pass
        else:  # up/down (history), alt-anything: we no longer know the line from the input alone
            self.reliable = False


def render_line(data: bytes, cols: int) -> str:
    """The text a terminal shows for ``data`` written from the start of a line (wrapped rows joined)."""
    screen = pyte.Screen(max(cols, 20), 64)
    stream = pyte.ByteStream(screen)
    stream.feed(data[-MAX_LINE:])
    rows = [screen.display[y] for y in range(0, screen.cursor.y + 1)]
    out = ""
    for row in rows:
        out += row if len(row.rstrip()) >= screen.columns else row.rstrip() + "\n"
    return out.rstrip("\n").rstrip()


def strip_prompt(line: str, prompt: str | None) -> str:
    """The command part of a rendered line."""
    if prompt and line.startswith(prompt.rstrip()) and prompt.rstrip():
        return line[len(prompt.rstrip()):].strip()
    m = re.match(r"^\(reverse-i-search\)`[^']*': (.*)$", line)
    if m:
        return m.group(1).strip()
    m = re.match(r"^[^\s]*?[$#%>] (.*)$", line)
    return (m.group(1) if m else line).strip()

