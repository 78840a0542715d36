"""`bastion replay --stream i` shows what was typed one line per Enter, keys that are not text by name, and never
hands the recorded keys to the viewer's terminal (issue 24: every Enter was a bare \\r, each line overwrote the one
before)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pyte
from hypothesis import given
from hypothesis import strategies as st

from recorder.asciicast import Cast, CastWriter, Event
from recorder.player import play
from recorder.typed import DIM, UNDIM, TypedKeys

ROOT = Path(__file__).resolve().parents[2]


def shown(*events: str) -> str:
    """What the viewer reads (names undimmed) after ``events`` of typed data."""
    keys = TypedKeys()
    return "".join(keys.feed(e) for e in events).replace(DIM, "").replace(UNDIM, "")


def screen(data: bytes, cols: int = 60, rows: int = 12) -> list[str]:
    s = pyte.Screen(cols, rows)
    pyte.ByteStream(s).feed(data)
    return [ln.rstrip() for ln in s.display]


def test_each_enter_starts_a_line_whatever_it_sent() -> None:
    assert shown("ls\r", "pwd\n", "id\r\n", "who\r", "\nuptime\r") == "ls\r\npwd\r\nid\r\nwho\r\nuptime\r\n"


def test_keys_that_are_not_text_are_named() -> None:
    assert shown("rmx\x7f -r\t\r") == "rmx<BS> -r<Tab>\r\n"
    assert shown("\x1b[A\x1b[B\x1b[1;5C\x1bOD\x1b[3~\x1b[15~\x1b[5;2~\x1b[Z") == \
        "<Up><Down><C-Right><Left><Del><F5><S-PgUp><S-Tab>"
    assert shown("\x1bb\x1b", "x") == "<M-b><Esc>x"  # Alt+b; Esc alone (vi users)
    assert shown("sleep 9\x03", "exit\x04") == "sleep 9^C\r\nexit^D\r\n"  # they end a line at a tty too
    assert shown("\x01\x15\x17\x00") == "^A^U^W^@"


def test_a_paste_keeps_its_text_and_lines() -> None:
    assert shown("cat <<EOF\r", "\x1b[200~a\tb\nc d\r\n\x1b[201~", "EOF\r") == \
        "cat <<EOF\r\n<paste>a\tb\r\nc d\r\n</paste>EOF\r\n"


def test_what_the_terminal_answered_and_other_controls_are_spelled_out() -> None:
    assert shown("\x1b[24;80R\x1b]11;rgb:0000/0000/0000\x1b\\\x1bP1$r0m\x1b\\") == \
        "<Esc[24;80R><Esc]11;rgb:0000/0000/0000^[\\><EscP1$r0m^[\\>"
    assert shown("\x9b2J\u202eevil\x85") == "<U+009B>2J<U+202E>evil<U+0085>"


@given(st.lists(st.text(st.sampled_from(list("ab \r\n\t\x03\x04\x7f\x1b[O;~1523ABP]\\\x07\x9b\u202e")),
                        max_size=12), max_size=6))
def test_nothing_recorded_reaches_the_terminal_as_a_control(events: list[str]) -> None:
    """Whatever was typed, the output holds printable text, tabs, CR LF pairs and the dim/undim pair only."""
    out = "".join(TypedKeys().feed(e) for e in events).replace(DIM, "").replace(UNDIM, "").replace("\r\n", "")
    assert all(c.isprintable() or c == "\t" for c in out), repr(out)


def typed_cast(path: Path) -> Path:
    times = iter(float(i) for i in range(20))
    w = CastWriter(path, 60, 12, title="t", clock=lambda: next(times))
    w.output(b"$ ")
    for keys in (b"echo one\r", b"echo twoX\x7f\r", b"\x1b[A\r", b"sleep 9\x03", b"exit\r"):
        w.input(keys)
    w.close()
    return path


EXPECTED = ["echo one", "echo twoX<BS>", "<Up>", "sleep 9^C", "exit"]


def test_the_player_shows_one_typed_line_per_row(tmp_path: Path) -> None:
    out = io.BytesIO()
    assert play(typed_cast(tmp_path / "t.cast"), out, stream="i", clock=lambda: 0.0, sleep=lambda s: None)
    assert screen(out.getvalue())[:6] == [*EXPECTED, ""]
    assert b"\x1b[A" not in out.getvalue() and b"\x7f" not in out.getvalue()
    # the recorded cast of a Cast object plays the same
    cast = Cast({"version": 2, "width": 60, "height": 12}, [Event(0.5, "i", "a\r"), Event(1.0, "i", "b\r")])
    out = io.BytesIO()
    assert play(cast, out, stream="i", clock=lambda: 0.0, sleep=lambda s: None)
    assert screen(out.getvalue())[:3] == ["a", "b", ""]


def test_bastion_replay_stream_i(tmp_path: Path) -> None:
    """The real CLI (`bastion replay FILE --stream i`), its output taken by a terminal emulator."""
    p = typed_cast(tmp_path / "cli.cast")
    out = subprocess.run([sys.executable, "-m", "bastion.cli", "replay", str(p), "--stream", "i", "--speed", "64"],
                         capture_output=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert screen(out.stdout)[:6] == [*EXPECTED, ""]


def test_the_input_of_a_session_without_a_terminal_keeps_its_tabs(tmp_path: Path) -> None:
    """`ssh bastion RES -- python3 - < job.py`: the recorded input is a program, its tabs are text."""
    assert TypedKeys(data=True).feed("if x:\n\tprint(1)\n") == "if x:\r\n\tprint(1)\r\n"
    p = tmp_path / "stdin.cast"
    w = CastWriter(p, 60, 12, title="t", env={"TERM": "dumb"})
    w.input(b"if x:\n\tprint(1)\n")
    w.close()
    out = io.BytesIO()
    assert play(p, out, stream="i", clock=lambda: 0.0, sleep=lambda s: None)
    assert screen(out.getvalue())[:3] == ["if x:", "        print(1)", ""]
