"""Seeking in the player: arrows, markers, /text, --from/--to, and the keyframes that make it cost the same anywhere.

The player's output goes into a pyte screen; after each key the screen must be the one the recording showed at the
time the player says it is at (computed independently from the events)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pyte
import pytest

from recorder.asciicast import CastWriter, read_cast
from recorder.player import play
from recorder.seekindex import build, complete_events, load, load_or_build, save, sidecar


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


class Terminal:
    """What the viewer sees: a pyte screen fed with everything the player writes."""

    def __init__(self, cols: int = 40, rows: int = 6) -> None:
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.Stream(self.screen)
        self.written = 0

    def write(self, data: bytes) -> int:
        self.stream.feed(data.decode("utf-8"))
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def lines(self, upto: int | None = None) -> list[str]:
        return [ln.rstrip() for ln in self.screen.display[:upto]]


def screen_at(path: Path, t: float, cols: int = 40, rows: int = 6) -> list[str]:
    screen = pyte.Screen(cols, rows)
    stream = pyte.Stream(screen)
    for ev in read_cast(path).events:
        if ev.code == "o" and ev.time <= t:
            stream.feed(ev.data)
    return [ln.rstrip() for ln in screen.display]


def make_cast(path: Path, n: int = 100, *, payload: str = "") -> Path:
    """``line k`` at second k (k = 1..n), a marker at 25, 50, 75..., 'needle' printed at 60 and 'Needle' at 80."""
    lines = [json.dumps({"version": 2, "width": 40, "height": 6, "timestamp": 0, "env": {}, "title": "t"})]
    for k in range(1, n + 1):
        word = {60: " needle", 80: " Needle"}.get(k, "")
        lines.append(json.dumps([float(k), "o", f"line {k}{word}{payload}\r\n"]))
        if k % 25 == 0:
            lines.append(json.dumps([float(k), "m", f"mark {k}"]))
    path.write_text("\n".join(lines) + "\n")
    return path


class Keys:
    """Scripted key presses, each after the player has waited ``gap`` recording-ish seconds; then no more keys.
    After each key press the next poll snapshots the viewer's screen (what the key did)."""

    def __init__(self, clock: Clock, term: Terminal, script: Iterable[tuple[float, str]]) -> None:
        self.clock, self.term, self.script = clock, term, list(script)
        self.snaps: list[list[str]] = []
        self.pending = False

    def __call__(self, timeout: float) -> str | None:
        if self.pending:
            self.snaps.append(self.term.lines())
            self.pending = False
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
        self.pending = True
        return key


def run(path: Path, script: list[tuple[float, str]], **kw: object) -> tuple[Terminal, Keys]:
    clock, term = Clock(), Terminal()
    keys = Keys(clock, term, script)
    play(path, term, keys=keys, clock=clock.now, sleep=clock.sleep, **kw)  # type: ignore[arg-type]
    return term, keys


def test_arrows_seek_back_and_forward(tmp_path: Path) -> None:
    p = make_cast(tmp_path / "a.cast")
    # 20.5 s in: left (-> 15.5), then right twice (-> 25.5); the screen must be the recording's at those times
    term, keys = run(p, [(20.5, "\x1b[D"), (0.0, "\x1b[C"), (0.0, "\x1b[C"), (0.0, "q")])
    assert keys.snaps[0] == screen_at(p, 15.5) and "line 15" in keys.snaps[0][-2]
    assert keys.snaps[1] == screen_at(p, 20.5)
    assert keys.snaps[2] == screen_at(p, 25.5)


def test_markers_next_and_previous(tmp_path: Path) -> None:
    p = make_cast(tmp_path / "m.cast")
    term, keys = run(p, [(3.5, "]"), (0.0, "]"), (0.0, "["), (0.0, " "), (0.0, "q")])
    assert keys.snaps[0] == screen_at(p, 25.0)
    assert keys.snaps[1] == screen_at(p, 50.0)
    assert keys.snaps[2] == screen_at(p, 25.0)
    assert "mark 25" in keys.snaps[3][-1] and "paused" in keys.snaps[3][-1]  # the status line names the marker


def test_find_text_on_screen(tmp_path: Path) -> None:
    p = make_cast(tmp_path / "f.cast")
    term, keys = run(p, [(2.5, "/"), (0.0, "need"), (0.0, "le"), (0.0, "\r"), (0.0, "/"), (0.0, "needle\r"),
                         (0.0, "/"), (0.0, "needle\r"), (0.0, "q")])
    assert keys.snaps[1][-1].strip() == "/need"  # the prompt shows what is typed
    at_60 = keys.snaps[3]
    assert at_60 == screen_at(p, 60.0) and at_60[-2] == "line 60 needle"
    at_80 = keys.snaps[5]  # case-insensitive, and the next one after where we are
    assert at_80 == screen_at(p, 80.0)
    assert "does not appear again" in keys.snaps[7][-1]


def test_from_and_to(tmp_path: Path) -> None:
    p = make_cast(tmp_path / "ft.cast")
    clock, term = Clock(), Terminal()
    assert play(p, term, start=30.0, end=40.0, keys=lambda t: (setattr(clock, "t", clock.t + t), None)[1],
                clock=clock.now, sleep=clock.sleep)
    assert term.lines() == screen_at(p, 40.0)
    assert clock.t == pytest.approx(10.0)  # from 30 to 40 in real time, nothing after


def test_input_stream_seeks_too(tmp_path: Path) -> None:
    times = iter([0.0, 1.0, 2.0, 3.0])
    p = tmp_path / "i.cast"
    w = CastWriter(p, 40, 6, title="t", clock=lambda: next(times))
    w.output(b"$ ")
    w.input(b"ls\r")
    w.input(b"whoami\r")
    w.close()
    term, keys = run(p, [(2.5, "\x1b[D"), (0.0, "q")], stream="i")
    assert keys.snaps[0][0] == ""  # back to 0: nothing typed yet (the output stream is not shown)


def test_keyframes_bound_the_work_of_a_seek(tmp_path: Path) -> None:
    # a long recording: 3600 s, ~100 bytes of output a second; a seek far in writes about one keyframe interval
    p = make_cast(tmp_path / "long.cast", n=3600, payload=" " + "x" * 20)
    idx = build(p, every_bytes=4 * 1024)
    save(idx, p)
    assert load(p) is not None and len(idx.keyframes) >= 29  # every 4 KB of output or 120 s
    assert [t for t, _ in idx.markers][:3] == [25.0, 50.0, 75.0] and idx.duration == 3600.0
    term, keys = run(p, [(0.5, "]"), (0.0, "q")], start=3000.0)
    assert keys.snaps[0] == screen_at(p, 3025.0)
    assert term.written < 3 * 4 * 1024  # not the 100 KB before it


def test_sidecar_is_rebuilt_when_stale(tmp_path: Path) -> None:
    p = make_cast(tmp_path / "s.cast", n=10)
    save(build(p), p)
    assert load(p) is not None
    with open(p, "a") as f:
        f.write('[11.0, "o", "more\\r\\n"]\n')
    assert load(p) is None  # size changed: not trusted
    assert load_or_build(p).duration == 11.0 and load(p) is not None
    sidecar(p).write_text("{not json")
    assert load(p) is None and load_or_build(p).duration == 11.0


def test_following_a_recording_being_written_waits_for_whole_lines(tmp_path: Path) -> None:
    cast = tmp_path / "live.cast"
    header = json.dumps({"version": 2, "width": 80, "height": 24}) + "\n"
    first = json.dumps([0.5, "o", "one\r\n"]) + "\n"
    cast.write_text(header + first + '[0.7, "o", "tw')  # the writer is in the middle of its next line
    pos, events = complete_events(cast, len(header))
    assert pos == len(header) + len(first) and [e.data for e in events] == ["one\r\n"]
    with open(cast, "a") as f:
        f.write('o\\r\\n"]\n' + json.dumps([0.9, "o", "x" * 5000]) + "\n")
    pos2, events = complete_events(cast, pos, max_bytes=100)
    assert [e.data for e in events] == ["two\r\n"]
    pos3, events = complete_events(cast, pos2, max_bytes=100)  # a line longer than the window still comes whole
    assert [e.data for e in events] == ["x" * 5000] and pos3 == cast.stat().st_size
    assert complete_events(cast, pos3) == (pos3, [])
