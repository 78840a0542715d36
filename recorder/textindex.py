"""What a recording showed, as searchable text: the output stream turned into screen lines the way a terminal
would show them (carriage returns overwrite, backspaces and erases take effect, escape sequences vanish), each with
the time it started and the time each of its characters last changed (a search hit points at the moment its text
became visible, not at the moment its row was first written: a prompt drawn seconds before the command typed on it,
a line finished after a pause); plus the markers (policy decisions, approvals); plus, for a session without a
terminal, its standard input (a program fed to ``python3 -``, a script piped to ``sh``) in lines the same way.

Only recorded input is indexed, and a cast records typed input only once the terminal has echoed it (see
``recorder.asciicast.EchoGuard``): what was typed with echo off (a password) is in neither the cast nor the index.
With a terminal, what was typed is on screen already (its echo), so only input without one becomes ``stdin`` rows.

A line-oriented terminal, not a full emulator: it is linear in the output size (pyte is ~1 MB/s and is kept for
rendering screens), and full-screen programs come out as fragments that still contain their words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from recorder.asciicast import Event, iter_events, read_header
from recorder.transferlog import describe, is_transfer_log, iter_records

__all__ = ["IndexRow", "ScreenLine", "ScreenLines", "index_rows", "rows_from_events", "without_terminal"]

MAX_LINE = 4000
"""Longer lines are cut (a binary dump to the terminal must not become one giant row)."""

_TOKEN = re.compile(
    r"(?P<text>[^\x00-\x1f\x7f\x1b\x9b]+)"
    r"|\x1b\[(?P<csi>[0-?]*)[ -/]*(?P<final>[@-~])"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC (title, hyperlinks): dropped
    r"|\x1b[PX^_].*?\x1b\\"  # DCS, SOS, PM, APC strings: dropped
    r"|\x1b[ -/]*[0-OQ-WYZ\\`-~]"  # other escapes (charsets, keypad modes, save/restore cursor)
    r"|(?P<ctl>[\x00-\x1a\x1c-\x1f\x7f])",
    re.DOTALL,
)


_REWRITES = re.compile(r"[\r\b\x1b]")

NO_TERMINAL = "dumb"
"""The ``TERM`` a cast's header names when the session had no terminal (``client.term_type or "dumb"``)."""


class IndexRow(NamedTuple):
    """One searchable piece of a recording: seconds from its start, ``screen``, ``marker`` or ``stdin``, and the
    text; for screen and stdin lines, ``times``: for each character of ``text``, when it last changed (so the time
    a piece of the line became visible is the latest of its characters' times)."""

    t: float
    kind: str
    text: str
    times: tuple[float, ...] = ()


class ScreenLine(NamedTuple):
    """A completed line: the time its first character appeared, the time of its last change, its text, and when
    each character of the text last changed (a character rewritten with itself keeps its time)."""

    t0: float
    t1: float
    text: str
    times: tuple[float, ...]


class ScreenLines:
    """Feed output text; completed screen lines come out with the time their first character appeared."""

    def __init__(self) -> None:
        self._line: list[str] = []
        self._times: list[float] = []  # per cell of _line: when it last changed
        self._before: tuple[list[str], list[float]] | None = None  # the line as the current event found it
        self._col = 0
        self._t0: float | None = None
        self._t1 = 0.0
        self._pending = ""

    def feed(self, t: float, data: str) -> list[tuple[float, str]]:
        """Lines completed by ``data`` (output at time ``t``): (time of their first character, text)."""
        return [(t0, text) for t0, _, text in self.feed_spans(t, data)]

    def flush(self) -> list[tuple[float, str]]:
        """The line in progress (at the end of the recording)."""
        return [(t0, text) for t0, _, text in self.flush_spans()]

    def feed_spans(self, t: float, data: str) -> list[tuple[float, float, str]]:
        """Like ``feed``, with the time of the last change to each line too: (first, last, text)."""
        return [(ln.t0, ln.t1, ln.text) for ln in self.feed_lines(t, data)]

    def flush_spans(self) -> list[tuple[float, float, str]]:
        return [(ln.t0, ln.t1, ln.text) for ln in self.flush_lines()]

    def flush_lines(self) -> list[ScreenLine]:
        """The line in progress, with its characters' times."""
        out: list[ScreenLine] = []
        self._emit(out)
        return out

    def feed_lines(self, t: float, data: str) -> list[ScreenLine]:
        """Lines completed by ``data`` (output at time ``t``), with their characters' times."""
        out: list[ScreenLine] = []
        data = self._pending + data
        self._pending = ""
        # only a cursor moved back (\r, \b, an escape) can rewrite what the line shows: then keep it as it was
        # (times are per column: a piece of the line has shown what it shows since the latest of its columns' times)
        self._before = (self._line[:], self._times[:]) if self._line and _REWRITES.search(data) else None
        cut = data.rfind("\x1b", max(0, len(data) - 4096))
        if cut >= 0 and _TOKEN.match(data, cut) is None:  # a sequence split across events: wait for the rest
            self._pending, data = data[cut:], data[:cut]
        for tok in _TOKEN.finditer(data):
            text = tok.group("text")
            if text is not None:
                self._write(t, text)
            elif tok.group("ctl") is not None:
                self._control(t, tok.group("ctl"), out)
            elif tok.group("final") is not None:
                self._csi(t, tok.group("csi"), tok.group("final"), out)
        self._settle()
        return out

    def _settle(self) -> None:
        """A cell showing, at the end of an event, what it showed before that event keeps its earlier time: a
        program that erases a line and draws it again in one write (a shell redrawing its prompt) changed nothing
        the viewer could see."""
        if self._before is None:
            return
        old, old_times = self._before
        line, times = self._line, self._times
        for i in range(min(len(old), len(line))):
            if line[i] == old[i] and times[i] != old_times[i]:
                times[i] = old_times[i]
        self._before = None

    # -- the terminal ------------------------------------------------------------------------------------------
    def _write(self, t: float, text: str) -> None:
        if self._t0 is None:
            self._t0 = t
        self._t1 = t
        line, times, col = self._line, self._times, self._col
        if col >= MAX_LINE:
            return
        text = text[:MAX_LINE - col]
        if col > len(line):
            self._pad(t, col)
        over = min(len(text), len(line) - col)  # cells overwritten: a cell keeps its time if its character stays
        for i in range(over):
            if line[col + i] != text[i]:
                line[col + i] = text[i]
                times[col + i] = t
        if over < len(text):  # the common case: writing at the end of the line
            line.extend(text[over:])
            times.extend([t] * (len(text) - over))
        self._col = col + len(text)

    def _pad(self, t: float, width: int) -> None:
        """Blank cells up to ``width`` (the cursor moved past the end of the line, then wrote)."""
        n = width - len(self._line)
        if n > 0:
            self._line.extend(" " * n)
            self._times.extend([t] * n)

    def _blank(self, t: float, start: int, end: int) -> None:
        """Cells ``start..end`` erased to spaces (a cell that was a space already keeps its time)."""
        for i in range(start, min(end, len(self._line))):
            if self._line[i] != " ":
                self._line[i] = " "
                self._times[i] = t

    def _emit(self, out: list[ScreenLine]) -> None:
        self._settle()
        text = "".join(self._line).rstrip()
        if text.strip() and self._t0 is not None:
            out.append(ScreenLine(self._t0, self._t1, text, tuple(self._times[:len(text)])))
        self._line, self._times, self._col, self._t0 = [], [], 0, None

    def _control(self, t: float, c: str, out: list[ScreenLine]) -> None:
        if c in "\n\x0b\x0c":
            self._emit(out)
        elif c == "\r":
            self._col = 0
        elif c == "\b":
            self._col = max(0, self._col - 1)
        elif c == "\t":
            self._col = min(MAX_LINE, (self._col // 8 + 1) * 8)

    def _csi(self, t: float, params: str, final: str, out: list[ScreenLine]) -> None:
        if params.startswith(("?", ">", "<", "=")):
            return  # private modes
        nums = [int(p) if p.isdigit() else 0 for p in params.split(";")] if params else []
        n = max(1, nums[0]) if nums else 1
        line, times = self._line, self._times
        if final == "K":
            mode = nums[0] if nums else 0
            if mode == 0:
                del line[self._col:], times[self._col:]
            elif mode == 1:
                self._blank(t, 0, self._col + 1)
            else:
                line.clear()
                times.clear()
        elif final == "C":
            self._col = min(MAX_LINE, self._col + n)
        elif final == "D":
            self._col = max(0, self._col - n)
        elif final == "G" or final == "`":
            self._col = min(MAX_LINE, n - 1)
        elif final == "P":  # what follows moves left: at each column it shows something new (unless the same)
            del line[self._col:self._col + n]
            times[self._col:] = [t] * (len(line) - self._col)
        elif final == "@":
            if self._col < len(line):  # beyond the end there is nothing to shift
                line[self._col:self._col] = " " * n
                times[self._col:] = [t] * (len(line) - self._col)
        elif final == "X":
            self._blank(t, self._col, self._col + n)
        elif final in "ABEFHfdJ":
            # another row: what was on this one is complete (full-screen programs come out as fragments)
            self._emit(out)
            if final in "Hf":
                self._col = min(MAX_LINE, (nums[1] - 1) if len(nums) > 1 and nums[1] > 0 else 0)
            elif final in "EF":
                self._col = 0
            else:
                self._col = 0 if final == "J" else self._col


def rows_from_events(events: Iterable[Event], *, stdin: bool = False) -> Iterator[IndexRow]:
    """The index rows of a stream of events: screen lines of the output, and markers; with ``stdin`` (a session
    without a terminal), the lines of its recorded input too."""
    lines = ScreenLines()
    typed = ScreenLines()
    for ev in events:
        if ev.code == "o":
            for ln in lines.feed_lines(ev.time, ev.data):
                yield IndexRow(ln.t0, "screen", ln.text, ln.times)
        elif ev.code == "m":
            yield IndexRow(ev.time, "marker", ev.data[:MAX_LINE])
        elif ev.code == "i" and stdin:
            for ln in typed.feed_lines(ev.time, ev.data):
                yield IndexRow(ln.t0, "stdin", ln.text, ln.times)
    for ln in lines.flush_lines():
        yield IndexRow(ln.t0, "screen", ln.text, ln.times)
    for ln in typed.flush_lines():
        yield IndexRow(ln.t0, "stdin", ln.text, ln.times)


def without_terminal(header: dict[str, object]) -> bool:
    """Whether a cast's session had no terminal: its input was data (a pipe), never echoed on a screen."""
    env = header.get("env")
    return isinstance(env, dict) and env.get("TERM") == NO_TERMINAL


def index_rows(path: Path | str, errors: list[str] | None = None) -> Iterator[IndexRow]:
    """The index rows of a recording file; a damaged tail is skipped (and described in ``errors``). A transfer
    log's operations are judged acts, like a cast's markers: each is a ``marker`` row (file names, hashes,
    decisions), found by ``audit search --only commands``."""
    if is_transfer_log(path):
        return (IndexRow(float(r.get("t", 0.0)), "marker", describe(r)) for r in iter_records(path, errors))
    return rows_from_events(iter_events(path, errors), stdin=without_terminal(read_header(path)))
