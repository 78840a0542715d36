"""asciicast v2 writer/reader and the echo guard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.asciicast import CastError, CastWriter, EchoGuard, read_cast


def lines(p: Path) -> list[str]:
    return p.read_text().split("\n")


def test_header_events_flush_and_no_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "a.cast"
    w = CastWriter(p, 100, 30, title="alice@web", env={"TERM": "xterm"})
    w.output(b"hello\r\n")
    assert json.loads(lines(p)[1])[1:] == ["o", "hello\r\n"]  # flushed while still open
    w.input(b"ls\r")
    w.resize(120, 40)
    w.marker("policy: allow")
    w.output(b"")  # nothing to write: no event
    digest = w.close()
    assert w.close() == digest
    text = p.read_text()
    assert text.endswith("\n") and "\n\n" not in text
    header = json.loads(lines(p)[0])
    assert header["version"] == 2 and header["width"] == 100 and header["height"] == 30
    assert header["title"] == "alice@web" and header["env"] == {"TERM": "xterm"}
    events = [json.loads(x) for x in lines(p)[1:] if x]
    assert [e[1] for e in events] == ["o", "i", "r", "m"]
    assert events[2][2] == "120x40"
    assert all(a[0] <= b[0] for a, b in zip(events, events[1:], strict=False))
    import hashlib

    assert digest == hashlib.sha256(p.read_bytes()).hexdigest()
    with pytest.raises(FileExistsError):
        CastWriter(p, 80, 24, title="again")


def test_multibyte_split_across_chunks(tmp_path: Path) -> None:
    p = tmp_path / "u.cast"
    w = CastWriter(p, 80, 24, title="t")
    data = "é😀ok".encode()
    for i in range(len(data)):
        w.output(data[i:i + 1])
    w.close()
    assert "".join(e.data for e in read_cast(p).events if e.code == "o") == "é😀ok"


def test_truncated_last_line_and_garbled_middle(tmp_path: Path) -> None:
    p = tmp_path / "t.cast"
    w = CastWriter(p, 80, 24, title="t")
    w.output(b"one")
    w.output(b"two")
    w.close()
    raw = p.read_text().split("\n")
    p.write_text("\n".join([raw[0], "[garbage", raw[2]]) + '\n[3.0,"o","cut')
    cast = read_cast(p)
    assert [e.data for e in cast.events] == ["two"]
    assert cast.truncated
    assert any(f"{p}:2:" in e for e in cast.errors) and any("truncated" in e for e in cast.errors)
    bad = tmp_path / "bad.cast"
    bad.write_text('{"version": 1}\n')
    with pytest.raises(CastError, match=rf"{bad}:1:"):
        read_cast(bad)


def test_asciinema_cat_accepts_our_files(tmp_path: Path) -> None:
    p = tmp_path / "c.cast"
    w = CastWriter(p, 80, 24, title="t")
    w.output("héllo from the target\r\n".encode())
    w.marker("m")
    w.close()
    out = subprocess.run([str(Path(sys.executable).parent / "asciinema"), "cat", str(p)], capture_output=True,
                         timeout=30)
    assert out.returncode == 0 and "héllo from the target" in out.stdout.decode()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=20), max_size=20))
def test_reader_returns_what_the_writer_wrote(tmp_path_factory: pytest.TempPathFactory,
                                              chunks: list[bytes]) -> None:
    p = tmp_path_factory.mktemp("h") / "x.cast"
    w = CastWriter(p, 80, 24, title="t")
    for c in chunks:
        w.output(c)
    w.close()
    got = "".join(e.data for e in read_cast(p).events)
    assert got == b"".join(chunks).decode("utf-8", "replace")


def test_echo_guard_records_echoed_input_and_drops_passwords() -> None:
    g = EchoGuard()
    assert g.feed_input(b"ls\r") == []
    assert g.feed_output(b"ls\r\n") == [b"ls", b"\r"]
    g.feed_output(b"file\r\n$ sudo -k id\r\n[sudo] password for alice: ")
    assert g.feed_input(b"hunter2\r") == []
    assert g.feed_output(b"\r\n") == [] and g.hidden_count == 1
    g.feed_output(b"uid=0(root)\r\n$ ")
    # pwfeedback: asterisks are echoed, but the prompt says password
    g.feed_output(b"[sudo] password for alice: ")
    g.feed_input(b"s3cret")
    assert g.feed_output(b"******") == []
    g.feed_input(b"\r")
    g.feed_output(b"\r\n$ ")
    assert g.hidden_count == 2
    # arrows and control keys alone are released by any output
    assert g.feed_input(b"\x1b[A") == [] and g.feed_output(b"ls") == [b"\x1b[A"]


def test_echo_guard_known_echo_and_bounded_pending() -> None:
    g = EchoGuard(limit=16)
    g.set_echo_known(True)
    assert g.feed_input(b"abc") == [b"abc"]
    g.set_echo_known(None)
    g.feed_input(b"x" * 40)
    assert g.hidden_count >= 1
