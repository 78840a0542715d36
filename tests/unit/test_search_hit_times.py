"""A screen hit of `bastion audit search` points at the moment its text became visible, not at the moment its row
was first written (issue 24: `replay ID --from AT` landed on a bare prompt, or on the line before). The index keeps
when each character of a line last changed; the hit takes the latest time of its own characters. Checked against a
terminal emulator fed the recording's events: at the hit's time the text is on screen, one event earlier it is not.
"""

from __future__ import annotations

from pathlib import Path

import pyte
import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from bastion.cli.audit import _offset
from bastion.cli.common import parse_offset
from bastion.store.db import MIGRATIONS, Store
from bastion.store.search import index_recording, search
from bastion.store.textquery import decode_times, encode_times, normalise, normalise_times, visible_at
from recorder.asciicast import CastWriter, read_cast
from recorder.textindex import ScreenLines

SID = "20261201-000001-aaaaaaaaaaaa"


def lines(*events: tuple[float, str]) -> list[tuple[str, tuple[float, ...]]]:
    sl = ScreenLines()
    out = [ln for t, data in events for ln in sl.feed_lines(t, data)] + sl.flush_lines()
    return [(ln.text, ln.times) for ln in out]


def test_each_character_keeps_when_it_last_changed() -> None:
    # a prompt, then a command typed on it later
    assert lines((1.0, "$ "), (2.0, "ls"), (3.0, " -l\r\n")) == [("$ ls -l", (1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0))]
    # a line finished after a pause
    assert lines((1.0, "wait..."), (5.0, " DONE\r\n"))[0][1][-4:] == (5.0,) * 4
    # rewritten with the same characters (a progress line redrawn): they keep their time; changed ones do not
    assert lines((1.0, "50% abc"), (2.0, "\r60% abc\n")) == [("60% abc", (2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0))]
    # erased and drawn again in one write (a shell redrawing its line): nothing the viewer could see changed
    assert lines((1.0, "$ ls"), (2.0, "\r\x1b[K$ ls\n")) == [("$ ls", (1.0,) * 4)]
    # erased in one event, drawn again in the next: gone in between, so it appeared again
    assert lines((1.0, "$ ls"), (2.0, "\r\x1b[K"), (3.0, "$ ls\n")) == [("$ ls", (3.0,) * 4)]
    # an insert or a delete moves what follows: each column shows something new (a piece spanning the join is new)
    assert lines((1.0, "ac"), (2.0, "\x1b[1D\x1b[@b"), (3.0, "\n")) == [("abc", (1.0, 2.0, 2.0))]
    assert lines((1.0, "ac"), (2.0, "\x1b[1D\x1b[@b"), (3.0, "\r\x1b[P\n")) == [("bc", (3.0, 3.0))]
    assert lines((1.0, "abc"), (2.0, "\r\x1b[Pa\n")) == [("ac", (1.0, 2.0))]  # the same at a column: kept


TEXT = st.text(st.sampled_from(list("ab AB\t ßSΣσςİé\u00a0\u2003")), min_size=1, max_size=20)


@given(TEXT, st.data())
def test_normalised_times_follow_normalise(s: str, data: st.DataObject) -> None:
    times = data.draw(st.lists(st.floats(0, 100), min_size=len(s), max_size=len(s)))
    norm, per_char = normalise_times(s, times)
    assert norm == normalise(s) and len(per_char) == len(norm)
    if per_char:
        assert decode_times(encode_times(per_char), len(norm)) == per_char


def test_visible_at_takes_the_latest_of_the_hits_characters_and_the_earliest_place() -> None:
    norm, times = "$ echo one", [1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0, 4.0, 4.0]
    enc = encode_times(times)
    assert visible_at(norm, enc, "echo", 0.5) == 2.0 and visible_at(norm, enc, "one", 0.5) == 4.0
    assert visible_at(norm, enc, "$", 0.5) == 1.0 and visible_at(norm, enc, "zzz", 0.5) == 0.5
    assert visible_at("ab ab", encode_times([5.0, 5.0, 5.0, 1.0, 1.0]), "ab", 0.0) == 1.0
    for bad in ("", "x", "0:1,0:2", "1:1.0", "0:1.0,99:2.0"):
        assert visible_at(norm, bad, "one", 0.5) == 0.5  # anything else: the row's time


def emulated(path: Path, upto: float, *, before: bool = False) -> str:
    """The screen after the output events up to ``upto`` (or strictly before it)."""
    cast = read_cast(path)
    screen = pyte.Screen(cast.header["width"], cast.header["height"])
    stream = pyte.Stream(screen)
    for ev in cast.events:
        if ev.code == "o" and (ev.time < upto if before else ev.time <= upto):
            stream.feed(ev.data)
    return "\n".join(ln.rstrip() for ln in screen.display)


def shell_session(path: Path) -> Path:
    """A prompt drawn seconds before the command typed on it; a line that a program finishes after a pause."""
    times = iter([0.0, 0.5, 3.25, 3.4, 3.6, 4.1, 9.123456, 10.0])
    w = CastWriter(path, 60, 10, title="t", env={"TERM": "xterm"}, clock=lambda: next(times))
    w.output(b"$ ")                                  # 0.5
    w.output(b"echo hel")                            # 3.25
    w.output(b"lo-w")                                # 3.4
    w.output(b"orld\r\nhello-world\r\n$ ")           # 3.6
    w.output(b"make\r\nbuilding...")                 # 4.1
    w.output(b" done in 5s\r\n$ ")                   # 9.123456
    return path if w.close() else path


@pytest.fixture()
def indexed(tmp_path: Path) -> tuple[Store, Path]:
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.migrate()
    p = shell_session(tmp_path / "s.cast")
    store.start_session(SID, user="alice", resource="web", kind="ssh", mode="shell", command=None, client_addr="",
                        node="n1", recording_path=p)
    store.end_session(SID, outcome="exited", exit_status=0, message="", sha256="0" * 64, size=p.stat().st_size)
    index_recording(store, SID, p)
    return store, p


@pytest.mark.parametrize(("query", "expected"), [
    ("hello-world", [3.6, 3.6]),  # the typed line is whole only when "orld" is echoed; then the output line
    ("echo hel", [3.25]), ("lo-w", [3.4, 3.6]), ("$ echo", [3.25]), ("done in 5s", [9.123456]), ("building", [4.1]),
])
def test_a_hit_is_the_moment_its_text_appeared(indexed: tuple[Store, Path], query: str,
                                               expected: list[float]) -> None:
    store, p = indexed
    hits = search(store, query)
    assert [h.t for h in hits] == expected
    for h in hits:  # on screen at the hit, and one event earlier not (as many times)
        assert emulated(p, h.t).count(query) > emulated(p, h.t, before=True).count(query)
        at = parse_offset(_offset(h.t))  # what the table prints, as `replay --from` reads it
        assert h.t <= at + 1e-6 and at - h.t < 0.001


def test_the_offset_printed_rounds_up_to_the_millisecond() -> None:
    assert [_offset(t) for t in (0.0, 3.6, 9.123456, 83.457, 3725.0001)] == \
        ["0:00.000", "0:03.600", "0:09.124", "1:23.457", "1:02:05.001"]


def test_rows_indexed_before_migration_0010_keep_their_time_and_are_queued_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    store = Store(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0009")
    p = shell_session(tmp_path / "old.cast")
    store.start_session(SID, user="alice", resource="web", kind="ssh", mode="shell", command=None, client_addr="",
                        node="n1", recording_path=p)
    store.end_session(SID, outcome="exited", exit_status=0, message="", sha256="0" * 64, size=p.stat().st_size)
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO recording_text (session_id, t, kind, text, norm) VALUES "
                          "(:sid, 0.5, 'screen', '$ echo hello-world', '$ echo hello-world')"), {"sid": SID})
        conn.execute(text("UPDATE recordings SET indexed_at = CURRENT_TIMESTAMP"))
    assert store.unindexed() == []
    store.migrate()
    assert [(h.t, h.text) for h in search(store, "hello")] == [(0.5, "$ echo hello-world")]  # as before
    assert store.unindexed() == [(SID, str(p))]  # the daemon's worker indexes it again at its next start
    index_recording(store, SID, p)
    assert [h.t for h in search(store, "hello")] == [3.4, 3.6] and store.unindexed() == []


PIECES = st.sampled_from(["a", "b", "ab", " ", "\r", "\b", "\x1b[K", "\x1b[1K", "\x1b[P", "\x1b[@", "\x1b[X",
                          "\x1b[2D", "\x1b[3C", "\t"])


@given(st.lists(st.lists(PIECES, min_size=1, max_size=5).map("".join), min_size=1, max_size=8), st.data())
def test_at_a_hits_time_its_text_is_on_the_line(events: list[str], data: st.DataObject) -> None:
    """Any piece of a line, at the time its characters say it became visible, is on that line as it was then."""
    final = lines(*((float(i), e) for i, e in enumerate(events, 1)))
    if not final:
        return
    (line, times), = final
    norm, per_char = normalise_times(line, times)
    start = data.draw(st.integers(0, len(norm) - 1))
    needle = norm[start:data.draw(st.integers(start + 1, len(norm)))].strip()
    if not needle:
        return
    at = visible_at(norm, encode_times(per_char), needle, -1.0)
    then = lines(*((float(i), e) for i, e in enumerate(events, 1) if i <= at))
    assert then and needle in normalise(then[0][0]), (needle, at, then)
