"""Play an asciicast in a terminal in real time: ``--speed``, ``--idle-limit``, space pauses, q quits."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from recorder.asciicast import Cast, iter_events, read_cast

KeyPoll = Callable[[float], str | None]  # wait up to N seconds for a key; None on timeout


@contextlib.contextmanager
def _tty_keys() -> Iterator[KeyPoll | None]:
    """Key presses from stdin in cbreak mode (restored on exit), or None if stdin is not a terminal."""
    if not sys.stdin.isatty():
        yield None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def poll(timeout: float) -> str | None:
        r, _, _ = select.select([fd], [], [], max(0.0, timeout))
        return os.read(fd, 32).decode("utf-8", "replace")[:1] if r else None

    try:
        yield poll
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def play(cast: Cast | Path | str, out: BinaryIO | None = None, *, speed: float = 1.0,
         idle_limit: float | None = None, keys: KeyPoll | None = None, stream: str = "o",
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Write the recorded ``stream`` events to ``out`` with their timing; True if played to the end."""
    out = out if out is not None else sys.stdout.buffer
    speed = speed if speed > 0 else 1.0
    events = cast.events if isinstance(cast, Cast) else iter_events(Path(cast))
    with contextlib.ExitStack() as stack:
        if keys is None and out is sys.stdout.buffer:
            keys = stack.enter_context(_tty_keys())
        prev = 0.0
        try:
            for ev in events:
                if ev.code not in stream:
                    continue
                delay = max(0.0, ev.time - prev)
                prev = ev.time
                if idle_limit is not None:
                    delay = min(delay, idle_limit)
                if not _wait(delay / speed, keys, clock, sleep):
                    return False
                out.write(ev.data.encode("utf-8"))
                out.flush()
            return True
        finally:
            out.write(b"\x1b[0m")
            out.flush()


def _wait(seconds: float, keys: KeyPoll | None, clock: Callable[[], float], sleep: Callable[[float], None]) -> bool:
    """Wait ``seconds`` of play time, handling space (pause/resume) and q (quit); False means quit."""
    if keys is None:
        if seconds > 0:
            sleep(seconds)
        return True
    end = clock() + seconds
    paused = False
    remaining_at_pause = 0.0
    while True:
        remaining = end - clock()
        if not paused and remaining <= 0:
            return True
        key = keys(3600.0 if paused else remaining)
        if key in ("q", "Q", "\x03"):
            return False
        if key == " ":
            if paused:
                end = clock() + remaining_at_pause
            else:
                remaining_at_pause = max(0.0, end - clock())
            paused = not paused


def render_screen(path: Path | str, width: int | None = None, height: int | None = None) -> str:
    """The screen a terminal would show after all output events (lines right-stripped)."""
    import pyte

    cast = read_cast(Path(path))
    screen = pyte.Screen(width or cast.header["width"], height or cast.header["height"])
    stream = pyte.Stream(screen)
    for ev in cast.events:
        if ev.code == "o":
            stream.feed(ev.data)
        elif ev.code == "r":
            cols, _, rows = ev.data.partition("x")
            if cols.isdigit() and rows.isdigit() and width is None:
                screen.resize(int(rows), int(cols))
    return "\n".join(line.rstrip() for line in screen.display)
