"""The player shows its speed (issue 24: after `+`/`-` nothing said how fast it played): on the status line after each
change, and at start when it is not x1; the line goes after a while, leaving the recording's screen as it was."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyte

from recorder.player import SHOW_SPEED, play
from tests.support.terminal import Terminal

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


class Viewer:
    """A pyte screen fed with what the player writes."""

    def __init__(self, cols: int = 60, rows: int = 6) -> None:
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.Stream(self.screen)

    def write(self, data: bytes) -> int:
        self.stream.feed(data.decode("utf-8"))
        return len(data)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        return [ln.rstrip() for ln in self.screen.display]


class Keys:
    """(wall seconds until it comes, key) pairs; every poll snapshots the screen first."""

    def __init__(self, clock: Clock, viewer: Viewer, script: list[tuple[float, str]]) -> None:
        self.clock, self.viewer, self.script = clock, viewer, script
        self.snaps: list[tuple[float, list[str]]] = []

    def __call__(self, timeout: float) -> str | None:
        self.snaps.append((self.clock.t, self.viewer.lines()))
        if not self.script:
            self.clock.t += timeout
            return None
        gap, key = self.script[0]
        if gap > timeout:
            self.script[0] = (gap - timeout, key)
            self.clock.t += timeout
            return None
        self.script.pop(0)
        self.clock.t += gap
        return key


def make_cast(path: Path, n: int = 40) -> Path:
    lines = [json.dumps({"version": 2, "width": 60, "height": 6, "timestamp": 0, "env": {}, "title": "t"})]
    lines += [json.dumps([float(k), "o", f"line {k}\r\n"]) for k in range(1, n + 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


def snap_after(keys: Keys, wall: float) -> list[str]:
    return next(lines for t, lines in keys.snaps if t >= wall)


def test_speed_on_the_status_line_at_start_and_after_each_change(tmp_path: Path) -> None:
    p = make_cast(tmp_path / "s.cast")
    clock, viewer = Clock(), Viewer()
    keys = Keys(clock, viewer, [(0.1, "+"), (0.1, "-"), (0.1, "-"), (SHOW_SPEED + 3, " "), (0.1, "+"), (0.1, " ")])
    assert play(p, viewer, speed=2, keys=keys, clock=clock.now, sleep=clock.sleep)
    status = [lines[-1] for _, lines in keys.snaps]
    assert status[0].startswith(" speed x2  space pause")  # at start: not x1
    seen = [s.split()[1] for s in status if s.startswith(" speed x")]
    assert seen[:4] == ["x2", "x4", "x2", "x1"]  # +, -, - each shown
    # a while later the line is gone: the screen is the recording's
    later = snap_after(keys, 0.3 + SHOW_SPEED + 1)
    assert not any("speed" in ln for ln in later) and later[0] == "line 1"
    assert any(s.startswith(" paused x2") for s in status)  # paused, + : the speed beside "paused"
    assert viewer.lines() == ["line 36", "line 37", "line 38", "line 39", "line 40", ""]  # the end, clean


def test_x1_at_start_shows_nothing(tmp_path: Path) -> None:
    p = make_cast(tmp_path / "s.cast", n=3)
    clock, viewer = Clock(), Viewer()
    keys = Keys(clock, viewer, [])
    assert play(p, viewer, keys=keys, clock=clock.now, sleep=clock.sleep)
    assert all("speed" not in lines[-1] for _, lines in keys.snaps)


def test_bastion_replay_shows_the_speed_in_a_real_terminal(tmp_path: Path) -> None:
    """`bastion replay FILE --speed 2` on a pty: the speed at start, `+` shows x4, `-` x2, then `q`."""
    p = make_cast(tmp_path / "t.cast", n=600)
    bastion = str(Path(sys.executable).with_name("bastion"))
    argv = [bastion, "replay", str(p), "--speed", "2"] if os.access(bastion, os.X_OK) else \
        [sys.executable, "-m", "bastion.cli", "replay", str(p), "--speed", "2"]
    with Terminal(argv, cols=80, rows=10, cwd=ROOT) as term:
        term.wait_for(r"^ speed x2 ")
        term.send("+")
        term.wait_for(r"^ speed x4 ")
        term.send("-")
        term.wait_for(r"^ speed x2 ")
        term.send("q")
        assert term.wait_exit() == 0


def test_the_status_line_leaves_no_copy_behind_when_output_scrolls_under_it(tmp_path: Path) -> None:
    """At x8 sixteen lines scroll through six rows while the speed is shown: once it goes, the screen is the
    recording's, with no scrolled-up copy of the status line in it."""
    p = make_cast(tmp_path / "scroll.cast", n=60)
    clock, viewer = Clock(), Viewer()
    keys = Keys(clock, viewer, [(SHOW_SPEED + 2, "q")])
    assert not play(p, viewer, speed=8, keys=keys, clock=clock.now, sleep=clock.sleep)
    during = [lines for t, lines in keys.snaps if 0.5 < t < SHOW_SPEED]
    assert during and all(lines[-1].startswith(" speed x8") for lines in during)
    after = [lines for t, lines in keys.snaps if t > SHOW_SPEED + 0.2]
    assert after and not any("speed" in ln for lines in after for ln in lines)
    last = after[-1]
    k = int(last[-2].split()[1])  # the newest line shown: the rows above it are the lines before it, in order
    assert last == [f"line {i}" for i in range(k - 4, k + 1)] + [""]
