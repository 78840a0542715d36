"""The player: timing with --speed and --idle-limit, pause and quit keys, screen rendering."""

from __future__ import annotations

import io
from pathlib import Path

from recorder.asciicast import Cast, Event
from recorder.player import play, render_screen


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(round(s, 3))
        self.t += s


CAST = Cast({"version": 2, "width": 20, "height": 3}, [
    Event(1.0, "o", "a"), Event(1.5, "i", "typed"), Event(11.0, "o", "b"), Event(11.0, "m", "marker"),
    Event(12.0, "o", "c"),
])


def test_speed_and_idle_limit() -> None:
    clock, out = FakeClock(), io.BytesIO()
    assert play(CAST, out, speed=2, idle_limit=4, clock=clock.now, sleep=clock.sleep)
    assert clock.slept == [0.5, 2.0, 0.5]  # 1s, 10s capped to 4s, 1s; all halved
    assert out.getvalue() == b"abc\x1b[0m"


def test_input_stream_and_quit_and_pause() -> None:
    clock, out = FakeClock(), io.BytesIO()
    play(CAST, out, stream="i", clock=clock.now, sleep=clock.sleep)
    assert out.getvalue() == b"typed\x1b[0m"
    keys = iter(["q"])

    def poll(timeout: float) -> str | None:
        return next(keys, None)

    out = io.BytesIO()
    assert not play(CAST, out, keys=poll, clock=clock.now, sleep=clock.sleep)
    assert out.getvalue() == b"\x1b[0m"
    # space pauses: time spent paused does not count, a second space resumes
    script = iter([" ", " ", None, None, None, None, None, None])
    clock2 = FakeClock()

    def poll2(timeout: float) -> str | None:
        k = next(script, None)
        clock2.t += 100 if k == " " else timeout
        return k

    out = io.BytesIO()
    assert play(CAST, out, keys=poll2, clock=clock2.now, sleep=clock2.sleep)
    assert out.getvalue() == b"abc\x1b[0m"


def test_render_screen(tmp_path: Path) -> None:
    from recorder.asciicast import CastWriter

    p = tmp_path / "s.cast"
    w = CastWriter(p, 20, 3, title="t")
    w.output(b"hello\r\nworld\x1b[2K\rplanet")
    w.close()
    assert render_screen(p) == "hello\nplanet\n"
