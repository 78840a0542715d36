"""Play an asciicast in real time (speed, idle limit; space pauses, q quits, +/- change speed); render a screen."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from recorder.asciicast import Cast, Event, iter_events, read_cast, read_header

__all__ = ["KeyPoll", "play", "render_screen"]

KeyPoll = Callable[[float], str | None]
"""Wait up to N seconds for key presses; returns the keys typed, or None on timeout."""

QUIT_KEYS = frozenset("qQ\x03")
MIN_SPEED, MAX_SPEED = 1 / 64, 64.0


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


class _Timer:
    """Play-time waits against a wall-clock schedule, with pause and speed keys."""

    def __init__(self, speed: float, keys: KeyPoll | None, clock: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        self.speed = min(MAX_SPEED, max(MIN_SPEED, speed))
        self.keys, self.clock, self.sleep = keys, clock, sleep
        self.deadline = clock()
        self.paused = False

    def wait(self, delay: float) -> bool:
        """Wait ``delay`` seconds of recording time (scaled by speed); False if the viewer quit."""
        now = self.clock()
        self.deadline = max(self.deadline, now - 0.25) + delay / self.speed  # never rush to catch up a stall
        if self.keys is None:
            if self.deadline > now:
                self.sleep(self.deadline - now)
            return True
        left = 0.0  # wall seconds left, kept while paused
        while True:
            keys = self.keys(3600.0 if self.paused else max(0.0, self.deadline - self.clock()))
            if keys is None:
                if not self.paused:
                    return True  # the poll timed out: the deadline has come
                continue
            for key in keys:
                if key in QUIT_KEYS:
                    return False
                if key == " ":
                    if self.paused:
                        self.deadline = self.clock() + left
                    else:
                        left = max(0.0, self.deadline - self.clock())
                    self.paused = not self.paused
                elif key in ("+", "-"):
                    factor = 2.0 if key == "+" else 0.5
                    new = min(MAX_SPEED, max(MIN_SPEED, self.speed * factor))
                    if self.paused:
                        left *= self.speed / new
                    else:
                        self.deadline = self.clock() + max(0.0, self.deadline - self.clock()) * self.speed / new
                    self.speed = new
            if not self.paused and self.deadline <= self.clock():
                return True


def play(cast: Cast | Path | str, out: BinaryIO | None = None, *, speed: float = 1.0,
         idle_limit: float | None = None, keys: KeyPoll | None = None, stream: str = "o",
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Write the data of ``stream`` events to ``out`` with their recorded timing; True if played to the end.

    Gaps are capped at ``idle_limit`` then divided by ``speed``. Without ``keys``, a terminal on stdin is put in
    cbreak mode and read for keys while playing. Only recorded bytes are written, then ``ESC[0m``.
    """
    if out is None:
        out = sys.stdout.buffer
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    events: Iterable[Event]
    if isinstance(cast, Cast):
        events = cast.events
    else:
        read_header(cast)  # a bad file fails here, before the terminal is touched
        events = iter_events(cast)
    with contextlib.ExitStack() as stack:
        if keys is None and out is getattr(sys.stdout, "buffer", None):
            keys = stack.enter_context(_tty_keys())
        timer = _Timer(speed, keys, clock, sleep)
        prev = 0.0
        try:
            for ev in events:
                if ev.code != stream:
                    continue
                delay = max(0.0, ev.time - prev)
                prev = max(prev, ev.time)
                if idle_limit is not None:
                    delay = min(delay, idle_limit)
                if not timer.wait(delay):
                    return False
                out.write(ev.data.encode("utf-8", "replace"))
                out.flush()
            return True
        finally:
            with contextlib.suppress(OSError, ValueError):
                out.write(b"\x1b[0m")
                out.flush()


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
