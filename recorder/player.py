"""Play an asciicast in a terminal, with seeking; render a screen.

Keys while playing: space pauses, ``+``/``-`` change speed, ←/→ seek 5 s, ``[``/``]`` jump to the previous/next
marker (policy decisions, approvals), ``/text`` Enter jumps to where ``text`` next appears on screen, ``q`` quits.
Seeking paints the keyframe before the target (``recorder.seekindex``) and writes the output after it, so it takes
the same time anywhere in a long recording.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from recorder.asciicast import Cast, Event, read_cast, read_header
from recorder.seekindex import SeekIndex, events_from, load, load_or_build
from recorder.textindex import ScreenLines, without_terminal
from recorder.typed import TypedKeys

__all__ = ["HELP", "KeyPoll", "play", "render_screen"]

KeyPoll = Callable[[float], str | None]
"""Wait up to N seconds for key presses; returns the keys typed, or None on timeout."""

QUIT_KEYS = frozenset("qQ\x03")
MIN_SPEED, MAX_SPEED = 1 / 64, 64.0
SEEK_STEP = 5.0
SMALL_CAST = 1 << 20
"""A recording without its seek index, up to this size, is indexed to take a status line away (about a second)."""
SHOW_SPEED = 2.0
"""Seconds (wall clock) the status line stays after a speed change while playing, at least until the next event."""
EPSILON = 1e-6
"""A cast's time resolution: a target given in milliseconds (``--from 1:23.457``, parsed as a float) that is a hair
below an event's time still includes it."""
HELP = "space pause  +/- speed  \u2190/\u2192 5s  [ ] markers  /text find  b bookmark  q quit"
CLEAR = "\x1b[0m\x1b[H\x1b[2J"
_ARROWS = {"\x1b[C": "right", "\x1b[D": "left", "\x1bOC": "right", "\x1bOD": "left"}


@contextlib.contextmanager
def _tty_keys() -> Iterator[KeyPoll | None]:
    """Key presses from stdin in cbreak mode (restored on exit), or None if stdin is not a terminal."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd < 0 or not os.isatty(fd):
        yield None
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd, termios.TCSANOW)

    def poll(timeout: float) -> str | None:
        r, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if not r:
            return None
        data = os.read(fd, 64)
        return data.decode("utf-8", "replace") if data else "q"  # EOF/hangup: stop playing

    try:
        yield poll
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _split_keys(keys: str) -> list[str]:
    """Key presses: arrow escape sequences stay whole, everything else is one character."""
    out, i = [], 0
    while i < len(keys):
        seq = keys[i:i + 3]
        if seq in _ARROWS:
            out.append(_ARROWS[seq])
            i += 3
        else:
            out.append(keys[i])
            i += 1
    return out


def _merged(markers: list[tuple[float, str]], extra: Sequence[tuple[float, str]]) -> list[tuple[float, str]]:
    return sorted([*markers, *extra], key=lambda m: m[0])


class _Source:
    """Events with positions: byte offsets in a file (keyframes from its seek index), or indexes in a list."""

    def __init__(self, cast: Cast | Path, extra: Sequence[tuple[float, str]] = ()) -> None:
        self.extra = list(extra)  # markers kept beside the recording (bookmarks), merged in time order
        self.cast = cast if isinstance(cast, Cast) else None
        self.path = None if isinstance(cast, Cast) else Path(cast)
        self._index: SeekIndex | None = None
        if self.cast is not None:
            self.header = self.cast.header
            self.start = 0
            self.markers = _merged([(e.time, e.data) for e in self.cast.events if e.code == "m"], self.extra)
            self.duration = max((e.time for e in self.cast.events), default=0.0)
        else:
            assert self.path is not None
            self.header = read_header(self.path)  # a bad file fails here, before the terminal is touched
            with open(self.path, "rb") as f:
                self.start = len(f.readline())
            self.markers = _merged([], self.extra)
            self.duration = 0.0
            self._scanned = False

    def events(self, pos: int) -> Iterator[tuple[int, Event]]:
        """(position after, event) from ``pos`` on."""
        if self.cast is not None:
            for i in range(pos, len(self.cast.events)):
                yield i + 1, self.cast.events[i]
            return
        assert self.path is not None
        yield from events_from(self.path, pos)

    def index(self) -> SeekIndex | None:
        """The seek index (built on first need when the recording has no sidecar)."""
        if self.path is not None and self._index is None:
            self._index = load_or_build(self.path)
            self.markers, self.duration = _merged(list(self._index.markers), self.extra), self._index.duration
        return self._index

    @property
    def scanned(self) -> bool:
        """Whether the duration and markers are known (a file's need its seek index: built once, maybe slowly)."""
        return self.path is None or self._scanned

    def repaintable(self) -> bool:
        """Whether the screen can be repainted without a long wait: the index is read already, its sidecar is there
        (the daemon writes one when a recording closes), or the file is small enough to index in about a second."""
        if self.scanned:
            return True
        assert self.path is not None
        idx = load(self.path)
        if idx is not None:
            self._index, self._scanned = idx, True
            self.markers, self.duration = _merged(list(idx.markers), self.extra), idx.duration
            return True
        try:
            small = self.path.stat().st_size <= SMALL_CAST
        except OSError:
            return False
        if small:
            self.ensure_scanned()
        return small

    def ensure_scanned(self) -> None:
        if self.path is not None and not self._scanned:
            self.index()
            self._scanned = True

    def keyframe(self, t: float) -> tuple[float, int, str]:
        """(time, position, ANSI that paints the screen) of the newest keyframe at or before ``t``."""
        idx = self.index()
        k = idx.keyframe_before(t) if idx is not None else None
        if k is None:
            return 0.0, self.start, CLEAR
        return k.t, k.offset, k.screen


class _Player:
    def __init__(self, src: _Source, out: BinaryIO, *, speed: float, idle_limit: float | None, keys: KeyPoll | None,
                 stream: str, clock: Callable[[], float], sleep: Callable[[float], None], rows: int,
                 cols: int) -> None:
        self.src, self.out, self.keys, self.stream = src, out, keys, stream
        self.speed = min(MAX_SPEED, max(MIN_SPEED, speed))
        self.idle_limit, self.clock, self.sleep, self.rows, self.cols = idle_limit, clock, sleep, rows, cols
        self.pos = src.start
        self.t = 0.0  # recording time shown
        self.deadline = clock()
        self.paused = False
        self.left = 0.0  # wall seconds left of the current wait, kept while paused
        self.message = ""
        self.bookmark_out: str | None = None  # where `b` appends the auditor's bookmarks (JSON lines)
        # typed keys shown by name, each Enter a new line (without a terminal the input was data: tabs are text)
        self.typed = TypedKeys(data=without_terminal(src.header)) if stream == "i" else None
        self.status_until: float | None = None  # a status line shown while playing (a speed change) goes then

    # -- output ------------------------------------------------------------------------------------------------
    def write(self, data: str) -> None:
        self.out.write(data.encode("utf-8", "replace"))
        self.out.flush()

    def show(self, data: str) -> str:
        """The data of an event of the played stream as it goes to the terminal: output as recorded, typed keys
        made readable (``recorder.typed``): never the raw keys, which would drive the viewer's terminal."""
        return data if self.typed is None else self.typed.feed(data)

    def paint(self, screen: str) -> None:
        """Paint a keyframe (or clear the screen): what was shown before is gone."""
        if self.typed is not None:
            self.typed.reset()
        self.write(screen)

    def status(self, text: str | None = None, *, scan: bool = True) -> None:
        """A line in reverse video on the last row (the screen under it is repainted when play resumes); its total
        duration needs the seek index: ``scan=False`` leaves it out rather than build one (at start)."""
        if scan:
            self.src.ensure_scanned()
        speed = f"x{self.speed:g}"
        state = ("paused" + (f" {speed}" if self.speed != 1 else "")) if self.paused else speed
        if text is None:
            total = f"/{_clock(self.src.duration)}" if scan else ""
            text = f"{state}  {self.message or HELP}  {_clock(self.t)}{total}"
        text = (" " + text)[:max(1, self.cols - 1)]  # never the last column: that would wrap and scroll
        self.write(f"\x1b7\x1b[{self.rows};1H\x1b[0;7m\x1b[2K{text}\x1b[0m\x1b8")

    # -- seeking -----------------------------------------------------------------------------------------------
    def seek(self, target: float, *, repaint: bool = False) -> None:
        """Show the screen as it was at ``target`` (recording seconds); ``repaint`` even if it is the current one."""
        self.src.ensure_scanned()
        target = min(max(0.0, target), self.src.duration)
        kt, kpos, screen = self.src.keyframe(target) if self.stream == "o" else (0.0, self.src.start, CLEAR)
        pos = self.pos
        if repaint or target < self.t or kt > self.t:  # backwards, or a keyframe closer than where we are
            self.paint(screen)
            pos = kpos
        buf: list[str] = []
        for after, ev in self.src.events(pos):
            if ev.time > target + EPSILON:
                break
            if ev.code == self.stream:
                buf.append(self.show(ev.data))
                if len(buf) > 256:
                    self.write("".join(buf))
                    buf = []
            pos = after
        self.write("".join(buf))
        self.pos, self.t = pos, target
        self.deadline = self.clock()
        self.left = 0.0

    def next_marker(self, forward: bool) -> float | None:
        self.src.ensure_scanned()
        times = [t for t, _ in self.src.markers]
        if forward:
            later = [t for t in times if t > self.t + 1e-6]
            return later[0] if later else None
        earlier = [t for t in times if t < self.t - 0.5]
        return earlier[-1] if earlier else None

    def find(self, needle: str) -> float | None:
        """The time the next screen line containing ``needle`` is complete, after the current time."""
        needle = needle.casefold()
        lines = ScreenLines()
        _, pos, _ = self.src.keyframe(self.t)  # lines before it are over
        for _, ev in self.src.events(pos):
            if ev.code != "o":
                continue
            for _t0, t1, text in lines.feed_spans(ev.time, ev.data):
                if t1 > self.t + 1e-6 and needle in text.casefold():
                    return t1
        for _t0, t1, text in lines.flush_spans():
            if t1 > self.t + 1e-6 and needle in text.casefold():
                return t1
        return None

    def label_at(self, t: float) -> str:
        return next((label for mt, label in self.src.markers if abs(mt - t) < 1e-6), "")

    # -- keys --------------------------------------------------------------------------------------------------
    def read_line(self, prompt: str = "/") -> str | None:
        """Text typed after ``/`` (or another prompt) up to Enter (None: Esc or quit)."""
        assert self.keys is not None
        text = ""
        while True:
            self.status(prompt + text)
            keys = self.keys(3600.0)
            if keys is None:
                continue
            for k in _split_keys(keys):
                if k in ("\r", "\n"):
                    return text
                if k in ("\x1b", "\x03"):
                    return None
                if k in ("\x7f", "\b"):
                    text = text[:-1]
                elif k.isprintable() and len(k) == 1:
                    text += k

    def handle(self, key: str) -> bool:
        """Act on one key; False means quit."""
        if key in QUIT_KEYS:
            return False
        if key == " ":
            if self.paused:
                self.paused = False
                self.message = ""
                self.status_until = None  # the repaint below takes the status line away
                left = self.left
                self.seek(self.t, repaint=True)  # what the status line covered
                self.deadline = self.clock() + left
            else:
                self.left = max(0.0, self.deadline - self.clock())
                self.paused = True
                self.status()
        elif key in ("+", "-"):
            factor = 2.0 if key == "+" else 0.5
            new = min(MAX_SPEED, max(MIN_SPEED, self.speed * factor))
            if self.paused:
                self.left *= self.speed / new
                self.speed = new
                self.status()
            else:
                self.deadline = self.clock() + max(0.0, self.deadline - self.clock()) * self.speed / new
                self.speed = new
                self.show_speed()
        elif key in ("left", "right"):
            self.seek(self.t + (SEEK_STEP if key == "right" else -SEEK_STEP))
            self.message = ""
            if self.paused:
                self.status()
        elif key in ("[", "]"):
            t = self.next_marker(key == "]")
            self.message = "no more markers" if t is None else self.label_at(t)
            if t is not None:
                self.seek(t)
            if self.paused or t is None:
                self.status()
        elif key == "b" and self.bookmark_out is not None:
            paused, self.paused = self.paused, True
            left = max(0.0, self.deadline - self.clock())
            at = self.t
            note = self.read_line(f"bookmark at {_clock(at)}, note: ")
            self.paused = paused
            if note and note.strip():
                with open(self.bookmark_out, "a", encoding="utf-8") as f:  # the bastion keeps it once this ends
                    f.write(json.dumps({"t": round(at, 3), "note": note.strip()}) + "\n")
                mark = (at, f"bookmark: {note.strip()}")
                self.src.extra.append(mark)
                self.src.markers = _merged(self.src.markers, [mark])
                self.message = f"bookmarked {_clock(at)}"
            else:
                self.message = ""
            self.seek(self.t, repaint=True)
            self.deadline = self.clock() + left
            if self.paused:
                self.status()
        elif key == "/":
            paused, self.paused = self.paused, True
            left = max(0.0, self.deadline - self.clock())
            needle = self.read_line()
            self.paused = paused
            found = self.find(needle) if needle else None
            if found is not None:
                self.message = f"found {needle!r}"
                self.seek(found)
            else:
                self.message = f"{needle!r} does not appear again" if needle else ""
                self.seek(self.t, repaint=True)
                self.deadline = self.clock() + left
            if self.paused or found is None:
                self.status()
        return True

    def show_speed(self) -> None:
        """The speed on the status line while playing (after ``+``/``-``, or at start when not x1): it stays at
        least ``SHOW_SPEED`` seconds, kept on top of the output, and goes with the first event after that."""
        self.status(self._speed_line(), scan=False)
        self.status_until = self.clock() + SHOW_SPEED

    def _speed_line(self) -> str:
        total = f"/{_clock(self.src.duration)}" if self.src.scanned else ""
        return f"speed x{self.speed:g}  {HELP}  {_clock(self.t)}{total}"

    def clear_status(self) -> None:
        """Take the status line away: repaint the screen as it is now (the deadline kept), or, when the seek index
        is not there and building it may take long, blank the row it covered."""
        self.status_until = None
        if not self.src.repaintable():  # a copy the output scrolled up stays until the next seek
            self.write(f"\x1b7\x1b[{self.rows};1H\x1b[0m\x1b[2K\x1b8")
            return
        left, pos = max(0.0, self.deadline - self.clock()), self.pos
        self.seek(self.t, repaint=True)
        self.pos = max(self.pos, pos)  # events skipped on the way here (other streams) stay skipped
        self.deadline = self.clock() + left

    def wait(self, delay: float) -> bool | None:
        """Wait ``delay`` recording seconds; True when the time came, False to quit, None after a seek."""
        now = self.clock()
        self.deadline = max(self.deadline, now - 0.25) + delay / self.speed  # never rush to catch up a stall
        if self.keys is None:
            if self.deadline > now:
                self.sleep(self.deadline - now)
            return True
        while True:
            keys = self.keys(3600.0 if self.paused else max(0.0, self.deadline - self.clock()))
            if keys is None:
                if self.paused:
                    continue
                if self.status_until is not None and self.clock() >= self.status_until:
                    before = (self.pos, self.t)
                    self.clear_status()
                    if (self.pos, self.t) != before:
                        return None
                return True  # the poll timed out: the deadline has come
            before = (self.pos, self.t)
            for key in _split_keys(keys):
                if not self.handle(key):
                    return False
            if (self.pos, self.t) != before:
                return None
            if not self.paused and self.deadline <= self.clock():
                return True

    def run(self, start: float | None, end: float | None) -> bool:
        if start:
            self.seek(start)
        if self.keys is not None and self.speed != 1.0:
            self.show_speed()
        done = self._play(end)
        if done and self.status_until is not None:
            self.clear_status()  # the last screen as recorded
        return done

    def _play(self, end: float | None) -> bool:
        while True:
            prev_t, restarted = self.t, False
            for after, ev in self.src.events(self.pos):
                if end is not None and ev.time > end + EPSILON:
                    return True
                if ev.code != self.stream:
                    self.pos = after
                    continue
                delay = max(0.0, ev.time - prev_t)
                if self.idle_limit is not None:
                    delay = min(delay, self.idle_limit)
                got = self.wait(delay)
                if got is False:
                    return False
                if got is None:
                    restarted = True
                    break
                self.write(self.show(ev.data))
                self.pos, self.t, prev_t = after, max(self.t, ev.time), max(prev_t, ev.time)
                if self.status_until is not None and not self.paused:
                    self.status(self._speed_line(), scan=False)  # on top of what the event wrote
            if not restarted:
                return True


def _clock(t: float) -> str:
    t = int(t)
    return f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}" if t >= 3600 else f"{t // 60:02d}:{t % 60:02d}"


def play(cast: Cast | Path | str, out: BinaryIO | None = None, *, speed: float = 1.0,
         idle_limit: float | None = None, keys: KeyPoll | None = None, stream: str = "o",
         start: float | None = None, end: float | None = None,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
         extra_markers: Sequence[tuple[float, str]] = (), bookmark_out: str | None = None) -> bool:
    """Write the data of ``stream`` events to ``out`` with their recorded timing; True if played to the end.

    Gaps are capped at ``idle_limit`` then divided by ``speed``. ``start`` seeks there first (the screen as it was);
    playing stops after ``end``. Without ``keys``, a terminal on stdin is put in cbreak mode and read for keys.
    Only recorded bytes (and, on seeks, repaints) are written, then ``ESC[0m``.
    """
    sink: BinaryIO = sys.stdout.buffer if out is None else out
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    src = _Source(cast if isinstance(cast, Cast) else Path(cast), extra_markers)
    cols, rows = int(src.header.get("width") or 80), int(src.header.get("height") or 24)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        cols, rows = os.get_terminal_size(sink.fileno())
    with contextlib.ExitStack() as stack:
        if keys is None and sink is getattr(sys.stdout, "buffer", None):
            keys = stack.enter_context(_tty_keys())
        player = _Player(src, sink, speed=speed, idle_limit=idle_limit, keys=keys, stream=stream, clock=clock,
                         sleep=sleep, rows=rows, cols=cols)
        player.bookmark_out = bookmark_out
        try:
            return player.run(start, end)
        finally:
            with contextlib.suppress(OSError, ValueError):
                sink.write(b"\x1b[0m")
                sink.flush()


def render_screen(path: Path | str, width: int | None = None, height: int | None = None) -> str:
    """The screen a terminal shows after all output events: lines right-stripped, joined by newlines.

    The screen takes the header's size and follows resize events unless ``width`` or ``height`` is given.
    """
    import pyte

    cast = read_cast(Path(path))
    fixed = width is not None or height is not None
    screen = pyte.Screen(width or cast.header["width"], height or cast.header["height"])
    stream = pyte.Stream(screen)
    for ev in cast.events:
        if ev.code == "o":
            stream.feed(ev.data)
        elif ev.code == "r" and not fixed:
            cols, _, rows = ev.data.partition("x")
            if cols.isdigit() and rows.isdigit() and int(cols) > 0 and int(rows) > 0:
                screen.resize(int(rows), int(cols))
    return "\n".join(line.rstrip() for line in screen.display)


def load_bookmarks(path: str) -> list[tuple[float, str]]:
    """``[[seconds, label], ...]`` from a file the bastion wrote beside the copy it plays (anything else: none)."""
    import json

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(raw, list):
        return []
    return [(float(t), str(label)) for t, label in (x for x in raw if isinstance(x, list) and len(x) == 2)
            if isinstance(t, int | float) and isinstance(label, str)]


def main(argv: list[str] | None = None) -> int:
    """``python -m recorder.player FILE``: play in this terminal (the bastion runs this for auditors in the TUI)."""
    import argparse

    from recorder.asciicast import CastError

    p = argparse.ArgumentParser(prog="python -m recorder.player", description=HELP)
    p.add_argument("file")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--idle-limit", type=float, default=2.0)
    p.add_argument("--bookmarks", help="a JSON file of [seconds, label] pairs shown among the markers")
    p.add_argument("--bookmark-out", help="where b appends the auditor's bookmarks (JSON lines: t, note)")
    args = p.parse_args(argv)
    try:
        extra = load_bookmarks(args.bookmarks) if args.bookmarks else []
        sys.stdout.buffer.write(b"\x1b[H\x1b[2J")
        done = play(args.file, speed=args.speed, idle_limit=args.idle_limit, extra_markers=extra,
                    bookmark_out=args.bookmark_out)
    except CastError as e:
        print(f"cannot play: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if done:  # the end: wait for a key, so the last screen can be read
        sys.stdout.buffer.write(b"\r\n\x1b[7m end of recording: press any key \x1b[0m")
        sys.stdout.buffer.flush()
        with _tty_keys() as keys:
            if keys is not None:
                keys(3600.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
