"""asciicast v2 writer/reader and the echo guard."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.asciicast import CastError, CastWriter, EchoGuard, Event, iter_events, read_cast, read_header

ASCIINEMA = str(Path(sys.executable).parent / "asciinema")


class Clock:
    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def lines(p: Path) -> list[str]:
    return p.read_text(encoding="utf-8").split("\n")


# ------------------------------------------------------------------------------------------------------ writer


def test_header_events_flush_and_no_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "deep" / "dir" / "a.cast"
    # the clock goes backwards once: event times must not
    w = CastWriter(p, 100, 30, title="alice@web", env={"TERM": "xterm"}, timestamp=1700000000.7,
                   clock=Clock(10.0, 10.1234567891, 10.5, 10.3, 11.0, 12.0))
    assert stat.S_IMODE(os.stat(p).st_mode) & ~0o640 == 0
    header = json.loads(lines(p)[0])
    assert header == {"version": 2, "width": 100, "height": 30, "timestamp": 1700000000, "env": {"TERM": "xterm"},
                      "title": "alice@web"}
    w.output(b"hello\r\n")
    assert json.loads(lines(p)[1]) == [0.123457, "o", "hello\r\n"]  # flushed while still open
    w.input(b"ls\r")
    w.resize(120, 40)
    w.marker("policy: allow")
    w.output(b"")  # nothing to write: no event
    assert w.bytes_written == p.stat().st_size and not w.closed
    digest = w.close()
    assert w.closed and w.close() == digest
    w.output(b"after close")  # ignored
    w.marker("after close")
    assert digest == hashlib.sha256(p.read_bytes()).hexdigest()
    text = p.read_text()
    assert text.endswith("\n") and "\n\n" not in text and "after close" not in text
    events = [json.loads(x) for x in lines(p)[1:] if x]
    assert [e[1:] for e in events] == [["o", "hello\r\n"], ["i", "ls\r"], ["r", "120x40"], ["m", "policy: allow"]]
    times = [e[0] for e in events]
    assert times == sorted(times) and times[:3] == [0.123457, 0.5, 0.5]
    with pytest.raises(FileExistsError):
        CastWriter(p, 80, 24, title="again")
    assert hashlib.sha256(p.read_bytes()).hexdigest() == digest  # the exclusive open did not truncate it


def test_context_manager_and_unicode_marker(tmp_path: Path) -> None:
    p = tmp_path / "m.cast"
    with CastWriter(p, 80, 24, title="tïtle ✓") as w:
        w.marker("sql: select 'ü'")
        w.marker("bad \udcff surrogate")
    assert w.closed
    cast = read_cast(p)
    assert cast.header["title"] == "tïtle ✓" and not cast.errors
    assert [e.data for e in cast.events] == ["sql: select 'ü'", "bad ? surrogate"]
    assert '"ü"' not in p.read_text() and "'ü'" in p.read_text()  # ensure_ascii=False


def test_multibyte_split_across_chunks_per_stream(tmp_path: Path) -> None:
    p = tmp_path / "u.cast"
    w = CastWriter(p, 80, 24, title="t")
    out, inp = "é😀ok".encode(), "😀é".encode()
    for i in range(max(len(out), len(inp))):  # interleaved: each stream has its own decoder
        w.output(out[i:i + 1])
        w.input(inp[i:i + 1])
    w.output(b"\xe2\x82")  # cut short at close: one replacement character
    w.close()
    cast = read_cast(p)
    assert "".join(e.data for e in cast.events if e.code == "o") == "é😀ok\ufffd"
    assert "".join(e.data for e in cast.events if e.code == "i") == "😀é"
    assert all(e.data for e in cast.events)  # no event for a chunk that decoded to nothing
    assert [e.data for e in cast.events if e.code == "o"][:2] == ["é", "😀"]


def test_file_is_valid_after_kill_9(tmp_path: Path) -> None:
    p = tmp_path / "k.cast"
    code = (
        "import sys, time\n"
        "from recorder.asciicast import CastWriter\n"
        f"w = CastWriter({str(p)!r}, 80, 24, title='k')\n"
        "for i in range(50):\n"
        "    w.output(f'line {i}\\r\\n'.encode())\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    cast = read_cast(p)
    assert not cast.errors and not cast.truncated and len(cast.events) == 50
    out = subprocess.run([ASCIINEMA, "cat", str(p)], capture_output=True, timeout=30)
    assert out.returncode == 0 and b"line 49" in out.stdout


def test_asciinema_cat_accepts_our_files(tmp_path: Path) -> None:
    p = tmp_path / "c.cast"
    w = CastWriter(p, 80, 24, title="t", env={"SHELL": "/bin/bash", "TERM": "xterm-256color"})
    w.output("héllo from the target\r\n".encode())
    w.input(b"exit\r")
    w.marker("m")
    w.resize(100, 30)
    w.output("bye 👋\r\n".encode())
    w.close()
    out = subprocess.run([ASCIINEMA, "cat", str(p)], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode() == "héllo from the target\r\nbye 👋\r\n"


# ------------------------------------------------------------------------------------------------------ reader


def write_cast(p: Path, *events: str, header: str | None = None) -> None:
    h = header if header is not None else '{"version":2,"width":80,"height":24,"timestamp":0,"env":{},"title":"t"}'
    p.write_text("\n".join([h, *events]), encoding="utf-8")


def test_truncated_last_line_is_reported_not_raised(tmp_path: Path) -> None:
    p = tmp_path / "t.cast"
    w = CastWriter(p, 80, 24, title="t")
    w.output(b"one")
    w.output(b"two")
    w.close()
    data = p.read_bytes()
    p.write_bytes(data[:-5])  # kill -9 in the middle of the last write
    cast = read_cast(p)
    assert [e.data for e in cast.events] == ["one"]
    assert cast.truncated and len(cast.errors) == 1
    assert cast.errors[0].startswith(f"{p}:3: truncated last line")
    # a garbled last line that does end with a newline is cut short too (e.g. NUL bytes after a crash)
    write_cast(p, '[0.1,"o","a"]', "\x00\x00\x00", "")
    cast = read_cast(p)
    assert cast.truncated and [e.data for e in cast.events] == ["a"] and f"{p}:3:" in cast.errors[0]


def test_garbled_middle_line_is_skipped_with_its_line_number(tmp_path: Path) -> None:
    p = tmp_path / "g.cast"
    write_cast(p, '[0.1,"o","one"]', "[garbage", '[0.2,"o","two"]', "", '[true,"o","x"]', '[0.3,"o",3]',
               '[0.4,"o","three"]', "")
    cast = read_cast(p)
    assert [e.data for e in cast.events] == ["one", "two", "three"]
    assert not cast.truncated
    assert [e.split(":")[1] for e in cast.errors] == ["3", "5", "6", "7"]
    assert all(e.startswith(f"{p}:") for e in cast.errors)
    assert "blank line" in cast.errors[1] and "bad event time" in cast.errors[2] and "bad event data" in cast.errors[3]
    errors: list[str] = []
    assert [e.data for e in iter_events(p, errors)] == ["one", "two", "three"]
    assert errors == cast.errors
    assert isinstance(next(iter_events(p)), Event)


@pytest.mark.parametrize(("header", "message"), [
    ('{"version": 1, "width": 80, "height": 24}', "unsupported asciicast version 1"),
    ("not json", "not an asciicast header"),
    ("[2, 80, 24]", "expected a JSON object"),
    ('{"version": 2, "width": true, "height": 24}', "'width' must be a positive integer"),
    ('{"version": 2, "width": 80, "height": 0}', "'height' must be a positive integer"),
    ("", "empty file"),
])
def test_invalid_header_raises_with_file_and_line(tmp_path: Path, header: str, message: str) -> None:
    p = tmp_path / "bad.cast"
    write_cast(p, '[0.1,"o","one"]', header=header)
    for fn in (read_cast, read_header, lambda x: list(iter_events(x))):
        with pytest.raises(CastError, match=rf"^{p}:1: .*{message}"):
            fn(p)


def test_missing_file_is_a_cast_error(tmp_path: Path) -> None:
    with pytest.raises(CastError, match=rf"^{tmp_path}/nope.cast: cannot read"):
        read_cast(tmp_path / "nope.cast")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("oi"), st.binary(max_size=24) | st.text(max_size=8).map(str.encode)),
                max_size=25))
def test_reader_returns_what_the_writer_wrote(tmp_path_factory: pytest.TempPathFactory,
                                              chunks: list[tuple[str, bytes]]) -> None:
    p = tmp_path_factory.mktemp("h") / "x.cast"
    w = CastWriter(p, 80, 24, title="t")
    for code, data in chunks:
        (w.output if code == "o" else w.input)(data)
    w.close()
    raw = p.read_text(encoding="utf-8")
    assert "\n\n" not in raw and raw.endswith("\n")
    for line in raw.splitlines():
        json.loads(line)
    cast = read_cast(p)
    assert not cast.errors and not cast.truncated
    assert all(a.time <= b.time for a, b in zip(cast.events, cast.events[1:], strict=False))
    for code in "oi":
        got = "".join(e.data for e in cast.events if e.code == code)
        assert got == b"".join(d for c, d in chunks if c == code).decode("utf-8", "replace")


# -------------------------------------------------------------------------------------------------- echo guard


def run(g: EchoGuard, *steps: tuple[str, bytes]) -> bytes:
    """Feed ("i"|"o", bytes) steps; return everything released, concatenated."""
    out = b""
    for kind, data in steps:
        out += b"".join(g.feed_input(data, 0.0) if kind == "i" else g.feed_output(data, 0.0))
    return out


def test_echoed_input_is_released_in_order() -> None:
    g = EchoGuard()
    assert g.feed_input(b"ls -l\r") == []
    assert g.feed_output(b"ls -") == []
    assert g.feed_output(b"l\r\n") == [b"ls -l\r"]
    # typed key by key, echoed key by key (readline)
    keys = [("i", b"p"), ("o", b"p"), ("i", b"w"), ("o", b"w"), ("i", b"d"), ("o", b"d"), ("i", b"\r"),
            ("o", b"\r\n/home/alice\r\n$ ")]
    assert run(g, *keys) == b"pwd\r"
    # typed ahead: two lines at once, echoed later in one chunk
    assert run(g, ("i", b"echo a\recho b\r"), ("o", b"echo a\r\na\r\n$ echo b\r\nb\r\n")) == b"echo a\recho b\r"
    # multibyte input split across chunks
    assert run(g, ("i", b"\xc3"), ("i", b"\xa9"), ("o", "é".encode())) == "é".encode()
    assert g.hidden_count == 0 and g.pending == 0


def test_sudo_password_typed_without_echo_is_dropped() -> None:
    g = EchoGuard()
    assert run(g, ("i", b"sudo -k id\r"), ("o", b"sudo -k id\r\n[sudo] password for alice: ")) == b"sudo -k id\r"
    assert g.feed_input(b"hunter2\r") == []
    assert g.hidden_count == 1  # dropped at Enter
    assert g.feed_output(b"\r\nuid=0(root) gid=0(root) groups=0(root)\r\n$ ") == []
    assert run(g, ("i", b"id\r"), ("o", b"id\r\n")) == b"id\r"
    assert g.hidden_count == 1


def test_unechoed_line_without_a_known_prompt_is_dropped_at_the_next_newline() -> None:
    g = EchoGuard()
    g.feed_output(b"Enter the magic word: ")
    # the letters of the secret appear later in the output: they prove nothing once the newline came first
    assert run(g, ("i", b"root\r"), ("o", b"\r\nuid=0(root) gid=0(root)\r\n$ ")) == b""
    assert g.hidden_count == 1 and g.pending == 0
    assert run(g, ("i", b"whoami\r"), ("o", b"whoami\r\nroot\r\n")) == b"whoami\r"


def test_pwfeedback_asterisks_are_not_an_echo() -> None:
    g = EchoGuard()
    g.feed_output(b"\x1b[1m[sudo] password for alice: \x1b[0m")
    for ch in b"s3cret!":
        assert g.feed_input(bytes([ch])) == []
        assert g.feed_output(b"*") == []
    assert g.feed_input(b"\r") == [] and g.hidden_count == 1
    assert g.feed_output(b"\r\n") == []
    g.feed_output(b"Enter passphrase for key '/home/alice/.ssh/id_ed25519': ")
    assert run(g, ("i", b"correct horse\r"), ("o", b"\r\n")) == b""
    assert g.hidden_count == 2


def test_password_typed_ahead_of_its_prompt_is_dropped() -> None:
    g = EchoGuard()
    # "pass" appears in the prompt text, which must not count as its echo
    assert g.feed_input(b"sudo id\rpassw0rd\r") == []
    assert g.feed_output(b"sudo id\r\n[sudo] password for alice: ") == [b"sudo id\r"]
    assert g.hidden_count == 1 and g.pending == 0


def test_a_command_that_prints_like_a_prompt_is_still_recorded() -> None:
    g = EchoGuard()
    steps = [("i", b"echo Password:"), ("o", b"echo Password:"), ("i", b" x"), ("o", b" x"), ("i", b"\r"),
             ("o", b"\r\nPassword: x\r\n$ ")]
    assert run(g, *steps) == b"echo Password: x\r"
    assert run(g, ("i", b"printf 'PIN? '\r"), ("o", b"printf 'PIN? '\r\nPIN? $ ")) == b"printf 'PIN? '\r"
    assert g.hidden_count == 0


def test_arrow_keys_and_control_characters() -> None:
    g = EchoGuard()
    # keys with nothing printable go out with any output, even output without printable text
    assert run(g, ("i", b"\x1b[A"), ("o", b"\x1b[K")) == b"\x1b[A"
    assert run(g, ("i", b"\x1bOB\t"), ("o", b"\x07")) == b"\x1bOB\t"
    # an escape sequence split across chunks is not taken for printable text
    assert run(g, ("i", b"\x1b"), ("i", b"[D"), ("o", b"\x1b[D")) == b"\x1b[D"
    # left arrows and an insertion: readline redraws, the letters still come in order
    assert run(g, ("i", b"ls\x1b[D\x1b[Dx\r"), ("o", b"ls\b\bxls\b\b\x1b[C\x1b[C\r\n")) == b"ls\x1b[D\x1b[Dx\r"
    # backspace and ^U
    assert run(g, ("i", b"lss\x7f\x15pwd\r"), ("o", b"lss\b \b\r\x1b[K$ pwd\r\n")) == b"lss\x7f\x15pwd\r"
    # bracketed paste
    assert run(g, ("i", b"\x1b[200~echo hi\x1b[201~\r"), ("o", b"\x1b[7mecho hi\x1b[27m\r\nhi\r\n")) \
        == b"\x1b[200~echo hi\x1b[201~\r"
    assert g.hidden_count == 0 and g.pending == 0


def test_ctrl_c_at_a_password_prompt_ends_the_hidden_line() -> None:
    g = EchoGuard()
    g.feed_output(b"Password: ")
    assert g.feed_input(b"hunt\x03") == [] and g.hidden_count == 1
    assert run(g, ("o", b"^C\r\n$ "), ("i", b"ls\r"), ("o", b"ls\r\n")) == b"ls\r"


def test_long_line_wrapped_with_a_newline_is_released() -> None:
    g = EchoGuard()
    cmd = b"echo " + b"x" * 100
    assert run(g, ("i", cmd + b"\r"), ("o", cmd[:80] + b"\r\n" + cmd[80:] + b"\r\n")) == cmd + b"\r"


def test_known_echo_state_overrides_the_heuristic() -> None:
    g = EchoGuard()
    g.set_echo_known(True)
    assert g.feed_input(b"abc") == [b"abc"]
    g.feed_output(b"Password: ")  # the caller knows better
    assert g.feed_input(b"\r") == [b"\r"]
    g.set_echo_known(False)
    assert g.feed_input(b"secret") == [] and g.feed_output(b"secret") == []
    g.set_echo_known(True)  # the line typed while echo was off stays unrecorded
    assert g.feed_input(b"!\r") == [] and g.hidden_count == 1
    assert g.feed_input(b"ls\r") == [b"ls\r"]
    # pending heuristic input is released once the caller says echo is on
    g.set_echo_known(None)
    assert g.feed_input(b"pwd") == []
    g.set_echo_known(True)
    assert g.feed_input(b"\r") == [b"pwd", b"\r"]
    # ... and hidden once the caller says echo is off
    g.set_echo_known(None)
    g.feed_input(b"typed")
    g.set_echo_known(False)
    assert g.feed_input(b"\r") == [] and g.hidden_count == 2


def test_pending_input_is_bounded() -> None:
    g = EchoGuard(limit=16)
    g.feed_input(b"x" * 40)
    assert g.pending <= 16 and g.hidden_count == 1
    g.feed_input(b"y" * 10)
    assert g.pending <= 16 and g.hidden_count == 1  # one line, counted once
    g.feed_input(b"\r")
    assert g.feed_output(b"\r\n") == [] and g.hidden_count == 1
    for i in range(10):
        g.feed_input(b"cmd%d\r" % i)
    assert g.pending <= 16 and g.hidden_count == 8  # the oldest lines went
    assert g.feed_output(b"cmd7\r\n$ cmd8\r\n$ cmd9\r\n") == [b"cmd7\r", b"cmd8\r", b"cmd9\r"]


def test_large_output_while_input_is_pending_is_fast() -> None:
    g = EchoGuard()
    g.feed_input(b"zzz")  # not echoed (a full-screen app)
    start = time.perf_counter()
    for _ in range(200):
        g.feed_output(b"a" * 50_000 + b"\r\n")
    assert time.perf_counter() - start < 2.0
    assert g.pending == 3


def is_subsequence(small: bytes, big: bytes) -> bool:
    it = iter(big)
    return all(b in it for b in small)


INPUT_CHUNKS = st.lists(st.sampled_from([b"a", b"b", b"ls", b"\r", b"\r\n", b"\x1b[A", b"\x1b", b"[", b"\x03",
                                         b"\x7f", b"\xc3", b"\xa9", b"pw"]), min_size=1, max_size=4).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("io"), INPUT_CHUNKS), max_size=30),
       st.sampled_from([None, True, False]))
def test_echo_guard_releases_input_in_order_and_never_invents_bytes(steps: list[tuple[str, bytes]],
                                                                    known: bool | None) -> None:
    g = EchoGuard(limit=32)
    g.set_echo_known(known)
    typed = b"".join(d for k, d in steps if k == "i")
    released = run(g, *steps)
    assert is_subsequence(released, typed)
    assert len(released) + g.pending <= len(typed)
    if known is False:
        assert released == b""
    if known is True:
        assert released == typed


TYPED = st.sampled_from([b"hunter2", b"pw", b"\r", b"x\ry", b"\x03", b"\x1b[A"])
# output that never shows all of any typed line: its letters prove no echo (P and a lowercase p differ)
SHOWN = st.sampled_from([b"\r\n", b"\x1b[0m", b"[sudo] Password: ", b"***", b"12345\r\n$ ", b"w", b"\x07"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("i"), TYPED), st.tuples(st.just("o"), SHOWN)), max_size=30))
def test_echo_guard_never_releases_letters_that_were_not_echoed(steps: list[tuple[str, bytes]]) -> None:
    g = EchoGuard()
    released = run(g, *steps)
    assert not any(chr(c).isalpha() for c in released.replace(b"\x1b[A", b""))
