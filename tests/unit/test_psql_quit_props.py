"""Properties of the restricted-psql quit watch (bastion/terminal/psqlquit.py): the recogniser agrees with a
transcription of psql's own rules (mainloop.c for exit/quit, the backslash lexer for \\q), and whatever the
operator types and psql prints, the watch forwards the typed bytes unchanged or, once, cuts them at an Enter and
sends the end of input instead: it can end the session and do nothing else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.terminal.psqlquit import QUIT_KEYS, QuitWatch, ends_psql

SPACE = " \t\n\r\f\v"
STATES = "=-(^!@'\"$*"
TOKENS = ["\\q", "\\quit", "\\qecho", "\\Q", "\\", "q", "quit", "exit", "QUIT", "Exit", "EXIT", "u", "i", "t", " ",
          "\t", "\n", ";", ";;", "x", "'", "`", "\u00a0", "select 1", "--", "/*"]
lines = st.lists(st.sampled_from(TOKENS), max_size=6).map("".join) | st.text(max_size=12)


def psql_quits(line: str, state: str) -> bool:
    """psql's rules, written out the way psql's C code reads them."""
    if state in "=^!" and len(line) >= 4 and line[:4].isascii() and line[:4].lower() in ("exit", "quit"):
        j = 4
        while j < len(line) and line[j] in SPACE:
            j += 1
        if j < len(line) and line[j] == ";":
            j += 1
        while j < len(line) and line[j] in SPACE:
            j += 1
        if j == len(line):
            return True
    if state not in "=-(^!":
        return False
    j = 0
    while j < len(line) and line[j] in SPACE:
        j += 1
    if line[j:j + 1] != "\\":
        return False
    k = j + 1
    while k < len(line) and line[k] not in SPACE + "\\":
        k += 1
    return line[j + 1:k] in ("q", "quit")


@given(lines, st.sampled_from(STATES))
@settings(max_examples=2000)
def test_the_recogniser_is_psqls_rule(line: str, state: str) -> None:
    assert ends_psql(line, state) == psql_quits(line, state)


class Recorder:
    def __init__(self) -> None:
        self.sent = bytearray()
        self.quits: list[str] = []


def watch(rec: Recorder) -> QuitWatch:
    return QuitWatch("demo", rec.sent.extend, rec.quits.append, cols=40)


events = st.lists(st.tuples(st.booleans(), st.binary(max_size=24) | st.sampled_from(
    [b"\\q", b"\\quit", b"exit", b"\r", b"\n", b"\x03", b"\x1b[200~", b"\x1b[201~", b"demo=> ", b"demo-> ",
     b"demo'> ", b"\r\n", b"\x1b[A", b"\t", b"\x7f", b"\x15"])), max_size=30)


@given(events)
@settings(max_examples=400)
def test_only_ever_the_typed_bytes_or_the_end_of_input(script: list[tuple[bool, bytes]]) -> None:
    rec = Recorder()
    w = watch(rec)
    typed = bytearray()
    for is_input, data in script:
        if is_input:
            typed += data
            w.input(data)
        else:
            w.output(data)
    sent = bytes(rec.sent)
    if not w.done:
        assert sent == bytes(typed) and rec.quits == []
        return
    assert len(rec.quits) == 1 and sent.endswith(QUIT_KEYS)
    k = len(sent) - len(QUIT_KEYS)
    assert sent[:k] == bytes(typed[:k]) and typed[k] in b"\r\n"  # an Enter, replaced; nothing after it


@given(lines.filter(lambda s: s.isprintable()), st.sampled_from(STATES), st.booleans())
@settings(max_examples=500)
def test_a_line_at_a_prompt(line: str, state: str, echo: bool) -> None:
    """A line typed at a prompt ends psql exactly when psql would quit on it; otherwise it goes through as typed."""
    rec = Recorder()
    w = watch(rec)
    w.output(f"\r\ndemo{state}> ".encode())
    w.input(line.encode())
    if echo:
        w.output(line.encode())
    w.input(b"\r")
    quits = psql_quits(line, state)
    assert bytes(rec.sent) == line.encode() + (QUIT_KEYS if quits else b"\r")
    assert rec.quits == ([line] if quits else [])


@given(st.binary(max_size=40).filter(lambda b: b"\x1b[20" not in b and b"\x03" not in b))
def test_an_enter_inside_a_paste_ends_nothing(pasted: bytes) -> None:
    rec = Recorder()
    w = watch(rec)
    w.output(b"demo=> ")
    data = b"\x1b[200~" + pasted + b"\x1b[201~"
    w.input(data)
    assert bytes(rec.sent) == data and not w.done
