"""The player: timing with speed and idle limit, pause/quit/speed keys, a real terminal, screen rendering."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from recorder.asciicast import Cast, CastError, CastWriter, Event
from recorder.player import CLEAR, play, render_screen


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(round(s, 3))
        self.t += s


class FakeKeys:
    """A key source: each poll returns the next scripted answer; a timeout (None) lets the clock run out."""

    def __init__(self, clock: FakeClock, script: Iterable[str | None], hold: float = 100.0) -> None:
        self.clock, self.script, self.hold = clock, iter(script), hold
        self.polls: list[float] = []

    def __call__(self, timeout: float) -> str | None:
        self.polls.append(round(timeout, 3))
        key = next(self.script, None)
        self.clock.t += self.hold if key is not None else timeout  # a key comes after `hold` seconds
        return key


CAST = Cast({"version": 2, "width": 20, "height": 3}, [
    Event(1.0, "o", "a"), Event(1.5, "i", "typed"), Event(11.0, "o", "b"), Event(11.0, "m", "marker"),
    Event(12.0, "o", "c"),
])


def test_speed_and_idle_limit() -> None:
    clock, out = FakeClock(), io.BytesIO()
    assert play(CAST, out, speed=2, idle_limit=4, clock=clock.now, sleep=clock.sleep)
    assert clock.slept == [0.5, 2.0, 0.5]  # 1s, 10s capped to 4s, 1s; all halved
    assert out.getvalue() == b"abc\x1b[0m"
    clock, out = FakeClock(), io.BytesIO()
    assert play(CAST, out, clock=clock.now, sleep=clock.sleep)
    assert clock.slept == [1.0, 10.0, 1.0] and clock.t == 12.0
    with pytest.raises(ValueError):
        play(CAST, out, speed=0)


def test_input_stream() -> None:
    clock, out = FakeClock(), io.BytesIO()
    assert play(CAST, out, stream="i", clock=clock.now, sleep=clock.sleep)
    assert out.getvalue() == b"typed\x1b[0m" and clock.slept == [1.5]


def test_q_quits_early() -> None:
    clock, out = FakeClock(), io.BytesIO()
    keys = FakeKeys(clock, [None, "q"], hold=0.5)
    assert not play(CAST, out, keys=keys, clock=clock.now, sleep=clock.sleep)
    assert out.getvalue() == b"a\x1b[0m"  # quit while waiting for "b"
    assert keys.polls == [1.0, 10.0] and clock.t == 1.5


def test_keys_are_read_even_between_events_without_a_gap() -> None:
    burst = Cast({"version": 2, "width": 20, "height": 3}, [Event(0.0, "o", str(i)) for i in range(5)])
    clock, out = FakeClock(), io.BytesIO()
    assert not play(burst, out, keys=FakeKeys(clock, [None, None, "q"]), clock=clock.now, sleep=clock.sleep)
    assert out.getvalue() == b"01\x1b[0m"


def test_pause_stops_time() -> None:
    clock, out = FakeClock(), io.BytesIO()
    # (key, seconds until it comes): pause 0.5s into the first 1s wait, resume 100s later
    script = iter([(" ", 0.5), (" ", 100.0)])
    polls: list[float] = []

    def poll(timeout: float) -> str | None:
        polls.append(round(timeout, 3))
        key, dt = next(script, (None, timeout))
        clock.t += dt
        return key

    assert play(CAST, out, keys=poll, clock=clock.now, sleep=clock.sleep)
    assert polls == [1.0, 3600.0, 0.5, 10.0, 1.0]  # paused: wait for a key; resumed: 0.5s of the first wait left
    # paused: a status line on the last row; resumed: the screen is repainted, then play goes on
    assert b"\x1b[3;1H" in out.getvalue() and b"paused" in out.getvalue()
    assert out.getvalue().endswith(CLEAR.encode() + b"abc\x1b[0m")
    assert clock.t == pytest.approx(112.0)


def test_plus_and_minus_change_speed() -> None:
    clock, out = FakeClock(), io.BytesIO()
    keys = FakeKeys(clock, ["+", None, "-", "-", None], hold=0.0)
    assert play(CAST, out, keys=keys, clock=clock.now, sleep=clock.sleep)
    # 1s at x2 -> 0.5s; then 10s at x2 -> 5s, "-" twice -> x0.5 -> 20s; then 1s at x0.5 -> 2s
    assert keys.polls == [1.0, 0.5, 5.0, 10.0, 20.0, 2.0]
    assert clock.t == pytest.approx(22.5)


def test_play_from_file_and_bad_file(tmp_path: Path) -> None:
    p = tmp_path / "p.cast"
    w = CastWriter(p, 20, 3, title="t", clock=iter([0.0, 0.25, 0.5, 0.5]).__next__)
    w.output("héllo ".encode())
    w.input(b"x")
    w.output(b"world")
    w.close()
    clock, out = FakeClock(), io.BytesIO()
    assert play(p, out, clock=clock.now, sleep=clock.sleep)
    assert out.getvalue() == "héllo world\x1b[0m".encode() and clock.slept == [0.25, 0.25]
    bad = tmp_path / "bad.cast"
    bad.write_text('{"version": 1}\n')
    out = io.BytesIO()
    with pytest.raises(CastError, match=rf"{bad}:1:"):
        play(bad, out)
    assert out.getvalue() == b""


def test_real_terminal_keys_and_restore(tmp_path: Path) -> None:
    p = tmp_path / "long.cast"
    w = CastWriter(p, 20, 3, title="t", clock=iter([0.0, 0.0, 30.0]).__next__)
    w.output(b"first")
    w.output(b"never")  # 30 s later
    w.close()
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        proc = subprocess.Popen([sys.executable, "-c", f"from recorder.player import play; play({str(p)!r})"],
                                stdin=slave, stdout=slave, stderr=subprocess.PIPE, start_new_session=True)
        got = b""
        deadline = time.monotonic() + 20
        while b"first" not in got and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                got += os.read(master, 1024)
        assert b"first" in got
        time.sleep(0.2)  # in cbreak mode now: one key, no Enter
        assert not termios.tcgetattr(slave)[3] & termios.ICANON
        os.write(master, b"q")
        assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
        while select.select([master], [], [], 0.2)[0]:
            got += os.read(master, 1024)
        assert b"never" not in got and got.endswith(b"\x1b[0m")
        assert termios.tcgetattr(slave) == before  # terminal restored
    finally:
        os.close(master)
        os.close(slave)


def test_render_screen(tmp_path: Path) -> None:
    p = tmp_path / "s.cast"
    w = CastWriter(p, 20, 3, title="t")
    w.output(b"hello\r\nworld\x1b[2K\rplanet")
    w.input(b"ignored")
    w.marker("ignored too")
    w.close()
    assert render_screen(p) == "hello\nplanet\n"
    assert render_screen(p, width=10, height=2) == "hello\nplanet"


def test_render_screen_follows_resizes(tmp_path: Path) -> None:
    p = tmp_path / "r.cast"
    w = CastWriter(p, 10, 2, title="t")
    w.resize(30, 2)
    w.output(b"a line wider than ten columns")
    w.close()
    assert render_screen(p) == "a line wider than ten columns\n"
