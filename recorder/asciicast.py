"""asciicast v2 writer and reader (see DESIGN.md, "Recording"), and the echo guard for recorded input."""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from recorder.sink import BackgroundSink, FileSink, Sink
from recorder.transferlog import KIND as TRANSFER_KIND
from recorder.transferlog import describe as describe_record

__all__ = ["PROMPT_RE", "Cast", "CastError", "CastWriter", "EchoGuard", "Event", "iter_events", "parse_line",
           "read_cast", "read_header"]


class CastError(Exception):
    """A recording that cannot be read; the message names the file and line."""


class Event(NamedTuple):
    """One asciicast event: seconds since start, code ("o", "i", "r", "m") and data."""

    time: float
    code: str
    data: str


# --------------------------------------------------------------------------------------------------------- writer

# JSON leaves these unescaped, but str.splitlines() and some readers break lines on them: escape them too
_LINE_SEPARATORS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


class CastWriter:
    """Append-only asciicast v2 writer: one JSON line per event, SHA-256 kept while writing. Each line is flushed
    at once, or (``background``) handed to the process's writer thread (:mod:`recorder.sink`), so that the caller
    -- an event loop carrying other sessions -- never waits for the disk."""

    def __init__(self, path: Path | str, width: int, height: int, *, title: str, env: dict[str, str] | None = None,
                 timestamp: float | None = None, clock: Callable[[], float] = time.monotonic,
                 background: bool = False) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o640)
        f = os.fdopen(fd, "wb")
        self._sink: Sink = BackgroundSink(f) if background else FileSink(f)
        self._clock = clock
        self._start = clock()
        self._last = 0.0
        self._sha = hashlib.sha256()
        self._bytes = 0
        self._closed = False
        self._digest = ""
        self._dec = {c: codecs.getincrementaldecoder("utf-8")(errors="replace") for c in "io"}
        header = {"version": 2, "width": int(width), "height": int(height),
                  "timestamp": int(timestamp if timestamp is not None else time.time()),
                  "env": dict(env or {}), "title": title}
        self._line(header)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def bytes_written(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def backlog(self) -> int:
        """Bytes recorded but not yet in the file (a background writer behind a slow disk)."""
        return self._sink.backlog

    def wait_written(self, upto: int, timeout: float = 10.0) -> bool:
        """Block until the first ``upto`` bytes are in the file (to read it back while it is being written)."""
        return self._sink.wait_written(upto, timeout)

    def _line(self, obj: Any) -> None:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_LINE_SEPARATORS)
        data = text.encode("utf-8", "replace") + b"\n"  # "replace": a lone surrogate in a label must not raise
        self._sink.write(data)
        self._sha.update(data)
        self._bytes += len(data)

    def _event(self, code: str, data: str) -> None:
        if self._closed or not data:
            return
        t = max(self._last, round(self._clock() - self._start, 6))
        self._last = t
        self._line([t, code, data])

    def output(self, data: bytes) -> None:
        """Record bytes sent to the terminal (UTF-8 decoded incrementally)."""
        if not self._closed:
            self._event("o", self._dec["o"].decode(data))

    def input(self, data: bytes) -> None:
        """Record bytes typed by the operator (UTF-8 decoded incrementally, separately from output)."""
        if not self._closed:
            self._event("i", self._dec["i"].decode(data))

    def resize(self, cols: int, rows: int) -> None:
        self._event("r", f"{int(cols)}x{int(rows)}")

    def marker(self, label: str) -> None:
        self._event("m", label)

    def close(self) -> str:
        """Flush the decoders, write everything, fsync and close; return the hex SHA-256 of the file. Idempotent.
        With a background writer it waits for the disk: call it off an event loop."""
        if not self._closed:
            try:
                for code in "oi":
                    self._event(code, self._dec[code].decode(b"", final=True))
            finally:
                self._closed = True
                self._digest = self._sha.hexdigest()
                self._sink.close()
        return self._digest

    def __enter__(self) -> CastWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------- echo guard

_ESC_BODY = (
    rb"\x1b\[[0-?]*[ -/]*[@-~]"             # CSI
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC ... BEL/ST
    rb"|\x1b[PX^_][^\x1b]*\x1b\\"           # DCS/SOS/PM/APC ... ST
    rb"|\x1b[NO][ -~]"                      # SS2/SS3 (application cursor keys: ESC O A)
    rb"|\x1b[ -/]*[0-~]"                    # other escapes, Alt+key
)
_ESC_FULL = re.compile(_ESC_BODY)
_ESC = re.compile(_ESC_BODY + rb"|\x1b")
_ESC_PREFIX = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|[PX^_][^\x1b]*|[NO]|[ -/]*)\Z")
_CONTROLS = dict.fromkeys([*range(0, 10), *range(11, 32), 127, *range(0x80, 0xA0)])
_LINE_END = re.compile(rb"(\r\n|\r|\n|\x03|\x04)")  # Enter, and ^C/^D which also end a tty line
_SEEN_LIMIT = 16384     # output text kept to find the echo of a type-ahead line
_TYPEAHEAD_LINES = 500  # output lines after which a type-ahead line that never showed up is dropped
PROMPT_RE = re.compile(r"(password|passphrase|passcode|pin|token|secret|otp)[^\n]*[:?]\s*$", re.IGNORECASE)


def _incomplete_tail(data: bytes) -> int:
    """Length of a trailing escape sequence or UTF-8 character that the next chunk may complete."""
    k = data.rfind(b"\x1b")
    if k >= 0 and len(data) - k <= 512 and not _ESC_FULL.match(data, k) and _ESC_PREFIX.match(data, k):
        return len(data) - k
    for i in range(1, min(3, len(data)) + 1):
        b = data[-i]
        if b & 0xC0 == 0x80:
            continue
        need = 2 if 0xC0 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4 if 0xF0 <= b < 0xF8 else 0
        return i if need > i else 0
    return 0


def _looks_like_prompt(line: str) -> bool:
    """PROMPT_RE, after the cheap test it implies (the line ends with ``:`` or ``?``): runs on every output chunk."""
    tail = line.rstrip()
    return bool(tail) and tail[-1] in ":?" and PROMPT_RE.search(line) is not None


def _printable(text: str) -> str:
    """Text with control characters removed, newlines kept."""
    return text.translate(_CONTROLS)


class _TermText:
    """Printable text of a terminal byte stream, chunk by chunk (escapes and UTF-8 split across chunks are joined)."""

    def __init__(self) -> None:
        self._carry = b""
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def reset(self) -> None:
        self._carry = b""
        self._dec.reset()

    def feed(self, data: bytes) -> str:
        data = self._carry + data
        k = data.rfind(b"\x1b")
        if k >= 0 and len(data) - k <= 512 and not _ESC_FULL.match(data, k) and _ESC_PREFIX.match(data, k):
            data, self._carry = data[:k], data[k:]
        else:
            self._carry = b""
        return _printable(self._dec.decode(_ESC.sub(b"", data)))


class _Line:
    """Typed bytes of one input line that are not yet recorded."""

    __slots__ = ("buf", "echoed", "matched", "newlines", "ready", "secret", "seen", "submitted", "trimmed",
                 "typeahead", "want")

    def __init__(self, secret: bool, typeahead: bool) -> None:
        self.buf = b""
        self.ready = 0          # bytes of buf that ``want`` covers (an incomplete escape/UTF-8 tail waits)
        self.want = ""          # printable text of buf[:ready]: what the echo must show
        self.matched = 0        # characters of ``want`` seen in the output so far
        self.newlines = 0       # output newlines seen since the echo of this line began
        self.secret = secret    # never released
        self.submitted = False  # Enter (or ^C/^D) typed
        self.echoed = False     # part of the line was seen echoed
        self.trimmed = False    # the pending bound cut this line
        self.typeahead = typeahead  # typed while earlier lines were pending
        self.seen = ""          # (type-ahead) output text since this line's echo may have begun

    def update(self) -> None:
        self.ready = len(self.buf) if self.submitted else len(self.buf) - _incomplete_tail(self.buf)
        self.want = _printable(_ESC.sub(b"", self.buf[:self.ready]).decode("utf-8", "replace")).replace("\n", "")
        self.matched = min(self.matched, len(self.want))

    def take(self, n: int) -> bytes:
        out, self.buf = self.buf[:n], self.buf[n:]
        self.matched = self.newlines = 0
        self.seen = ""
        self.update()
        return out

    def has_content(self) -> bool:
        return bool(self.buf.strip(b"\r\n\x03\x04"))


class EchoGuard:
    """Decide which typed bytes may be recorded when the remote tty's echo flag is invisible (pure logic, no I/O).

    Typed bytes wait until the output shows their printable characters in order (the tty's echo); pending bytes
    with nothing printable go out with the next output. A submitted line (Enter, ^C, ^D) whose echo has not begun
    by the next newline in the output was typed with echo off: it is dropped and ``hidden_count`` goes up. A line
    typed while earlier lines were still pending (paste, type-ahead) is read after their output, so it must show
    up verbatim within ``_TYPEAHEAD_LINES`` output lines instead. A line typed while a password prompt ends the
    current output line is never released (covers ``pwfeedback`` asterisks) and is dropped at Enter; so is type-
    ahead not echoed when such a prompt appears. At most ``limit`` bytes are held: the oldest go (hidden) first.
    :meth:`set_echo_known` lets a caller who knows the echo flag (a local pty) decide instead. ``now`` is accepted
    for callers' convenience; the heuristic does not depend on time.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.hidden_count = 0
        self._lines: list[_Line] = []
        self._text = _TermText()
        self._current = ""   # printable text of the current output line
        self._prompt = False
        self._known: bool | None = None

    @property
    def pending(self) -> int:
        """Typed bytes held back (neither recorded nor dropped yet)."""
        return sum(len(ln.buf) for ln in self._lines)

    def set_echo_known(self, echo_on: bool | None) -> None:
        """True: record typed input at once; False: never; None: infer echo from the output."""
        self._known = echo_on
        if echo_on is False:
            for ln in self._lines:
                if ln.buf:
                    ln.secret = True
            self._drop_submitted_secrets()

    def feed_input(self, data: bytes, now: float = 0.0) -> list[bytes]:
        """Typed bytes; returns the typed bytes that are now safe to record, in order."""
        out = self._release_known()
        for n, piece in enumerate(_LINE_END.split(data)):
            if not piece:
                continue
            if not self._lines or self._lines[-1].submitted:
                secret = self._known is False or (self._known is None and self._prompt)
                self._lines.append(_Line(secret, typeahead=bool(self._lines)))
            line = self._lines[-1]
            line.buf += piece
            line.submitted = n % 2 == 1
            line.update()
            if line.submitted and line.secret:
                self._prompt = False  # the prompt has had its answer
        self._drop_submitted_secrets()
        self._bound()
        return out + self._release_known()

    def feed_output(self, data: bytes, now: float = 0.0) -> list[bytes]:
        """Bytes shown to the operator; returns the typed bytes their echo proves visible, in order."""
        if not data:
            return []
        out = self._release_known()
        if not self._lines:  # only the prompt detector needs the output: look at the last line only
            k = data.rfind(b"\n")
            if k >= 0:
                self._text.reset()
                self._current, data = "", data[k + 1:]
            self._set_current(self._current + self._text.feed(data))
            return out
        text = self._text.feed(data)
        k = text.rfind("\n")
        if k >= 0:
            self._match(text[:k + 1], out)
            self._current, text = "", text[k + 1:]
        line = (self._current + text)[-512:]
        if self._known is None and _looks_like_prompt(line):
            self._prompt_shown(line)
        self._match(text, out)
        self._set_current(line)
        return out

    def _set_current(self, line: str) -> None:
        self._current = line[-512:]
        self._prompt = _looks_like_prompt(self._current)

    def _prompt_shown(self, line: str) -> None:
        """A password prompt ends the output: typed bytes not echoed so far are an answer to it."""
        tail = line.rstrip()
        for ln in self._lines:
            if ln.buf and not ln.secret and not ln.echoed and ln.matched == 0:
                want = ln.want.rstrip()
                if not (want and tail.endswith(want)):  # the "prompt" is not just the echo of this line
                    ln.secret = True
        self._drop_submitted_secrets()

    def _match(self, text: str, out: list[bytes]) -> None:
        """Advance the echo match of the pending lines over ``text``, releasing or dropping lines."""
        i = 0
        while self._lines and not self._lines[0].secret:
            head = self._lines[0]
            if not head.want or not head.typeahead:
                i, resolved = self._scan_fresh(head, text, i, out)
            else:
                i, resolved = self._scan_typeahead(head, text, i, out)
            if not resolved:
                return

    def _release(self, head: _Line, out: list[bytes]) -> bool:
        """The whole ``want`` of the head line was echoed: release it; True if the line is done."""
        if head.submitted:
            if head.buf:
                out.append(head.buf)
            self._lines.pop(0)
            return True
        if head.ready:
            out.append(head.take(head.ready))
            head.echoed = True
        return False

    def _scan_fresh(self, head: _Line, text: str, i: int, out: list[bytes]) -> tuple[int, bool]:
        """A line typed with nothing pending before it: its echo is an in-order subsequence of the output that
        starts before the newline of its Enter (later newlines: a long line wrapped)."""
        while True:
            if head.matched >= len(head.want):
                return i, self._release(head, out)
            if i >= len(text):
                return i, False
            j = text.find(head.want[head.matched], i)
            nl = text.find("\n", i) if head.submitted else -1
            if nl >= 0 and (j < 0 or nl < j):
                i = nl + 1
                head.newlines += 1
                if head.matched == 0 or head.newlines > 2 + len(head.want) // 20:
                    self._hide(self._lines.pop(0))
                    return i, True
                continue
            if j < 0:
                return len(text), False
            head.matched += 1
            i = j + 1

    def _scan_typeahead(self, head: _Line, text: str, i: int, out: list[bytes]) -> tuple[int, bool]:
        """A line typed while earlier ones were pending: the remote reads it after their output, however long,
        so its echo must show it verbatim (contiguous); dropped if that has not happened after many lines."""
        seen = head.seen + text[i:]
        k = seen.find(head.want)
        if k >= 0:
            end = k + len(head.want)
            i += max(0, end - len(head.seen))
            head.seen = seen[end:]
            head.matched = len(head.want)
            return i, self._release(head, out)
        head.newlines += text.count("\n", i)
        head.seen = seen[-_SEEN_LIMIT:]
        if head.submitted and head.newlines > _TYPEAHEAD_LINES:
            self._hide(self._lines.pop(0))
        return len(text), False

    def _release_known(self) -> list[bytes]:
        if self._known is not True:
            return []
        out: list[bytes] = []
        for ln in list(self._lines):
            if ln.secret:
                continue
            if ln.buf:
                out.append(ln.buf)
            if ln.submitted:
                self._lines.remove(ln)
            else:
                ln.take(len(ln.buf))
                ln.echoed = True
        return out

    def _drop_submitted_secrets(self) -> None:
        for ln in [ln for ln in self._lines if ln.secret and ln.submitted]:
            self._lines.remove(ln)
            self._hide(ln)

    def _hide(self, line: _Line) -> None:
        if line.has_content() and not line.trimmed:
            self.hidden_count += 1

    def _bound(self) -> None:
        excess = self.pending - self.limit
        while excess > 0 and self._lines:
            head = self._lines[0]
            if len(self._lines) > 1 or len(head.buf) <= excess:
                self._lines.pop(0)
                self._hide(head)
                excess -= len(head.buf)
            else:
                if not head.trimmed and head.has_content():
                    self.hidden_count += 1
                head.trimmed = True
                head.take(excess)
                excess = 0


# --------------------------------------------------------------------------------------------------------- reader


@dataclass
class Cast:
    """A whole recording: header, events, and what was wrong with it (``truncated``: the last line is cut)."""

    header: dict[str, Any]
    events: list[Event]
    truncated: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass
class _Report:
    errors: list[str] = field(default_factory=list)
    truncated: bool = False


def _parse_header(path: Path, line: str) -> dict[str, Any]:
    if not line.strip():
        raise CastError(f"{path}:1: empty file, no asciicast header")
    try:
        header = json.loads(line)
    except ValueError as e:
        raise CastError(f"{path}:1: not an asciicast header: {e}") from None
    if not isinstance(header, dict):
        raise CastError(f"{path}:1: not an asciicast header (expected a JSON object)")
    if header.get("kind") == TRANSFER_KIND and header.get("version") == 1:
        # a transfer log (recorder.transferlog) reads as a cast of its operations, one line each, so that
        # every player, search and export shows it
        return {"version": 2, "width": 160, "height": 40, "timestamp": header.get("timestamp", 0),
                "title": str(header.get("title", "")), "env": {}, "transfer": True}
    if header.get("version") != 2:
        raise CastError(f"{path}:1: unsupported asciicast version {header.get('version')!r} (expected 2)")
    for k in ("width", "height"):
        v = header.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise CastError(f"{path}:1: header field {k!r} must be a positive integer, got {v!r}")
    return header


def _parse_event(line: str) -> Event:
    ev = json.loads(line)
    if not isinstance(ev, list) or len(ev) != 3:
        raise ValueError("expected an event [time, code, data]")
    t, code, data = ev
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise ValueError(f"bad event time {t!r}")
    if not isinstance(code, str) or not code:
        raise ValueError(f"bad event code {code!r}")
    if not isinstance(data, str):
        raise ValueError(f"bad event data {data!r}")
    return Event(float(t), code, data)


def _open(path: Path) -> IO[str]:
    try:
        return open(path, encoding="utf-8", errors="replace", newline="\n")  # noqa: SIM115
    except OSError as e:
        raise CastError(f"{path}: cannot read: {e.strerror or e}") from e


def _transfer_events(line: str) -> list[Event]:
    """A transfer log's line as cast events: each operation a line of output and a marker; the end's totals."""
    rec = json.loads(line)
    if not isinstance(rec, dict):
        raise ValueError("expected a transfer log record (a JSON object)")
    t = rec.get("t", 0.0)
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise ValueError(f"bad record time {t!r}")
    text = describe_record(rec)
    if "marker" in rec:
        return [Event(float(t), "m", str(rec["marker"]))]
    events = [Event(float(t), "o", text + "\r\n")]
    return events + ([Event(float(t), "m", text)] if "op" in rec else [])


def parse_line(line: str) -> list[Event]:
    """One line of a recording after its header, as events: a cast's event, or a transfer log's record (its
    operations as lines of output); ValueError for anything else (a header, a damaged line)."""
    if line.lstrip().startswith("{"):
        if '"version"' in line[:40] and '"kind"' in line:
            raise ValueError("a header, not an event")
        return _transfer_events(line)
    return [_parse_event(line)]


def _events(path: Path, f: IO[str], report: _Report | None, transfer: bool = False) -> Iterator[Event]:
    bad: tuple[int, str] | None = None  # a bad line is "truncated" only if nothing follows it
    for n, line in enumerate(f, start=2):
        if bad is not None and report is not None:
            report.errors.append(f"{path}:{bad[0]}: skipped garbled line: {bad[1]}")
        bad = None
        if not line.strip():
            if report is not None:
                report.errors.append(f"{path}:{n}: skipped blank line")
            continue
        try:
            if transfer:
                yield from _transfer_events(line)
            else:
                yield _parse_event(line)
        except ValueError as e:
            bad = (n, str(e))
    if bad is not None and report is not None:
        report.truncated = True
        report.errors.append(f"{path}:{bad[0]}: truncated last line (recording cut short?): {bad[1]}")


def read_header(path: Path | str) -> dict[str, Any]:
    """The header of a cast; raises :class:`CastError` if it is not asciicast v2."""
    path = Path(path)
    with _open(path) as f:
        return _parse_header(path, f.readline())


def iter_events(path: Path | str, errors: list[str] | None = None) -> Iterator[Event]:
    """Stream the events of a cast; bad lines are skipped and described in ``errors`` (with line numbers)."""
    path = Path(path)
    report = _Report(errors if errors is not None else [])
    with _open(path) as f:
        header = _parse_header(path, f.readline())
        yield from _events(path, f, report, bool(header.get("transfer")))


def read_cast(path: Path | str) -> Cast:
    """Read a whole cast; a cut or garbled last line (kill -9 mid-write) is reported, not raised."""
    path = Path(path)
    report = _Report()
    with _open(path) as f:
        header = _parse_header(path, f.readline())
        events = list(_events(path, f, report, bool(header.get("transfer"))))
    return Cast(header, events, report.truncated, report.errors)
