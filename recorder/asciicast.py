"""asciicast v2 writer and reader (see DESIGN.md, "Recording"), and the echo guard for recorded input."""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple


class CastError(Exception):
    """A recording that cannot be read; the message names the file and line."""


class Event(NamedTuple):
    time: float
    code: str
    data: str


class CastWriter:
    """Append-only asciicast v2 writer: one JSON line per event, flushed per event."""

    def __init__(self, path: Path, width: int, height: int, *, title: str, env: dict[str, str] | None = None,
                 timestamp: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self._f = os.fdopen(fd, "wb")
        self._clock = clock
        self._start = clock()
        self._last = 0.0
        self._sha = hashlib.sha256()
        self.bytes_written = 0
        self.closed = False
        self._dec = {c: codecs.getincrementaldecoder("utf-8")(errors="replace") for c in "io"}
        header = {"version": 2, "width": int(width), "height": int(height),
                  "timestamp": int(timestamp if timestamp is not None else time.time()),
                  "env": dict(env or {}), "title": title}
        self._line(header)

    def _line(self, obj: Any) -> None:
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        self._f.write(data)
        self._f.flush()
        self._sha.update(data)
        self.bytes_written += len(data)

    def _event(self, code: str, data: str) -> None:
        if self.closed or not data:
            return
        t = max(self._last, round(self._clock() - self._start, 6))
        self._last = t
        self._line([t, code, data])

    def output(self, data: bytes) -> None:
        self._event("o", self._dec["o"].decode(data))

    def input(self, data: bytes) -> None:
        self._event("i", self._dec["i"].decode(data))

    def resize(self, cols: int, rows: int) -> None:
        self._event("r", f"{int(cols)}x{int(rows)}")

    def marker(self, label: str) -> None:
        self._event("m", label)

    def close(self) -> str:
        """Flush, fsync and close; return the SHA-256 of the file. Idempotent."""
        if not self.closed:
            for code in "oi":
                tail = self._dec[code].decode(b"", final=True)
                self._event(code, tail)
            self.closed = True
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        return self._sha.hexdigest()


_ESC = re.compile(
    rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]"          # CSI
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC ... BEL/ST
    rb"|\x1b[PX^_][^\x1b]*\x1b\\"          # DCS/SOS/PM/APC ... ST
    rb"|\x1b.?"                             # two-byte escapes
)
PROMPT_RE = re.compile(r"(password|passphrase|passcode|pin|token|secret|otp)[^\n]*[:?]\s*$", re.I)


def _text(data: bytes) -> str:
    """Printable text of terminal bytes: escape sequences removed, newlines kept, other controls dropped."""
    text = _ESC.sub(b"", data).decode("utf-8", "replace")
    return "".join(ch for ch in text if ch == "\n" or ch.isprintable())


@dataclass
class _Line:
    chunks: list[bytes] = field(default_factory=list)
    want: str = ""
    submitted: bool = False
    secret: bool = False


@dataclass
class EchoGuard:
    """Decide which typed bytes may be recorded when the remote tty's echo flag is invisible.

    Typed bytes wait, line by line, until the output shows them (the tty's echo). A submitted line whose text did
    not show up before the next newline in the output was typed with echo off (a password): it is dropped and
    ``hidden_count`` goes up. A line started while a password prompt is on the current output line is dropped
    whatever the output does (covers ``pwfeedback`` asterisks). A caller who knows the echo flag (a local pty)
    says so with :meth:`set_echo_known`.
    """

    limit: int = 4096
    hidden_count: int = 0
    _lines: list[_Line] = field(default_factory=list)
    _since: str = ""
    _current: str = ""
    _prompt: bool = False
    _known: bool | None = None

    def set_echo_known(self, echo_on: bool | None) -> None:
        self._known = echo_on

    def feed_input(self, data: bytes, now: float = 0.0) -> list[bytes]:
        """Typed bytes; returns those now safe to record (in order)."""
        for piece in re.split(rb"(\r\n?|\n)", data):
            if not piece:
                continue
            if not self._lines:
                self._since = ""  # only output that follows the typing can prove an echo
            if not self._lines or self._lines[-1].submitted:
                self._lines.append(_Line(secret=self._prompt or self._known is False))
            line = self._lines[-1]
            line.chunks.append(piece)
            if piece[:1] in (b"\r", b"\n"):
                line.submitted = True
            else:
                line.want += _text(piece).replace("\n", "")
        if self._known is True and not self._prompt:
            return self._release_all()
        if self._known is False:
            self._drop_submitted()
        while sum(len(c) for ln in self._lines for c in ln.chunks) > self.limit and self._lines:
            self._lines.pop(0)
            self.hidden_count += 1
        return []

    def feed_output(self, data: bytes, now: float = 0.0) -> list[bytes]:
        """Output bytes; returns the pending input they prove was echoed."""
        text = _text(data)
        self._current = (self._current + text).rsplit("\n", 1)[-1][-512:]
        self._prompt = bool(PROMPT_RE.search(self._current))
        if not self._lines:
            return []
        self._since = (self._since + text)[-8192:]
        out: list[bytes] = []
        while self._lines:
            head = self._lines[0]
            if not head.secret:
                pos = _subsequence_end(head.want, self._since) if head.want else 0
                if pos >= 0:
                    out += head.chunks
                    head.chunks, head.want = [], ""
                    self._since = self._since[pos:]
                    if head.submitted:
                        self._lines.pop(0)
                        continue
                    break
            if head.submitted and "\n" in self._since:
                self._lines.pop(0)
                self.hidden_count += 1
                self._since = self._since[self._since.index("\n") + 1:]
                continue
            break
        if not self._lines:
            self._since = ""
        return out

    def _release_all(self) -> list[bytes]:
        out = [c for ln in self._lines for c in ln.chunks]
        self._lines = [] if not self._lines or self._lines[-1].submitted else [_Line()]
        return out

    def _drop_submitted(self) -> None:
        while self._lines and self._lines[0].submitted:
            if self._lines.pop(0).want:
                self.hidden_count += 1


def _subsequence_end(want: str, text: str) -> int:
    """Index just past the end of ``want`` found as an in-order subsequence of ``text``, or -1."""
    i = 0
    for j, ch in enumerate(text):
        if ch == want[i]:
            i += 1
            if i == len(want):
                return j + 1
    return -1


@dataclass
class Cast:
    header: dict[str, Any]
    events: list[Event]
    truncated: bool = False
    errors: list[str] = field(default_factory=list)


def _parse_header(path: Path, line: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError as e:
        raise CastError(f"{path}:1: not an asciicast header: {e}") from None
    if not isinstance(header, dict) or header.get("version") != 2:
        raise CastError(f"{path}:1: not an asciicast v2 header")
    for k in ("width", "height"):
        if not isinstance(header.get(k), int) or header[k] <= 0:
            raise CastError(f"{path}:1: header field {k!r} must be a positive integer")
    return header


def iter_events(path: Path, errors: list[str] | None = None) -> Iterator[Event]:
    """Stream the events of a cast; bad lines are reported in ``errors`` (with line numbers) and skipped."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
        _parse_header(path, first)
        for n, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
                if (not isinstance(ev, list) or len(ev) != 3 or not isinstance(ev[0], int | float)
                        or not isinstance(ev[1], str) or not isinstance(ev[2], str)):
                    raise ValueError("not a [time, code, data] event")
            except ValueError as e:
                if errors is not None:
                    errors.append(f"{path}:{n}: {'truncated last line' if not line.endswith(chr(10)) else e}")
                continue
            yield Event(float(ev[0]), ev[1], ev[2])


def read_cast(path: Path) -> Cast:
    """Read a whole cast; a truncated last line (kill -9 mid-write) is reported, not raised."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        header = _parse_header(path, f.readline())
    errors: list[str] = []
    events = list(iter_events(path, errors))
    truncated = any("truncated last line" in e for e in errors)
    return Cast(header, events, truncated, errors)
