"""Leaving a restricted psql with ``\\q`` (bastion/terminal/psqlquit.py): the line recogniser judges quit forms as
psql 15 does (each case below was checked against psql on a terminal), and the watch between the operator and psql
turns only the Enter of such a line, typed at a prompt where psql would quit, into the end of psql's input."""

from __future__ import annotations

import pytest

from bastion.terminal.psqlquit import QUIT_KEYS, QuitWatch, ends_psql, prompt_state, quit_form

META = ["\\q", "\\quit", "  \\q", "\t\\q", "\\q   ", "\\q foo", "\\quit now", "\\q\\x", "  \\q\\x", "\\q \\! rm -rf /",
        "\\q\nselect 1", "\\quit\t"]
WORD = ["exit", "quit", "EXIT", "Quit", "exit;", "quit ;", "quit ; ", "exit\t", "exit;\t ", "quit\n"]
NEITHER = ["", " ", "\\q;", "\\qecho hi", "\\Q", "\\QUIT", "\\quitx", "\\qx", "select 1 \\q", "\\\\q", "q", "\\",
           " exit", "\texit", "exit;;", "exitx", "exit 1", "quit please", "exit ; ;", "quit()", "help",
           "\\unrestrict k", "'\\q'", "-- \\q", "/* \\q */", "\\!", "\\e", "exi", "ex it",
           "\\q`id`", "\\q'x'", "\\q\u00a0"]  # a command name ends only at whitespace or a backslash


@pytest.mark.parametrize("line", META)
def test_meta_quit_forms(line: str) -> None:
    assert quit_form(line) == "meta"


@pytest.mark.parametrize("line", WORD)
def test_word_quit_forms(line: str) -> None:
    assert quit_form(line) == "word"


@pytest.mark.parametrize("line", NEITHER)
def test_not_quit_forms(line: str) -> None:
    assert quit_form(line) is None


@pytest.mark.parametrize(("state", "meta", "word"), [
    ("=", True, True),  # the main prompt: an empty query buffer
    ("-", True, False),  # inside a statement: \q quits (the statement is dropped), exit is a word of it
    ("(", True, False),
    ("^", True, True), ("!", True, True),  # single-line mode, disconnected: PROMPT1, an empty buffer
    ("@", False, False),  # an inactive \if branch (never in restricted psql): left alone
    ("'", False, False), ('"', False, False), ("$", False, False), ("*", False, False),  # in a string or comment
])
def test_where_psql_quits(state: str, meta: bool, word: bool) -> None:
    assert ends_psql("\\q", state) is meta
    assert ends_psql("\\quit now", state) is meta
    assert ends_psql("exit", state) is word
    assert ends_psql("QUIT;", state) is word
    assert not ends_psql("select 1", state)


@pytest.mark.parametrize(("shown", "expected"), [
    ("demo=> ", ("=", "")), ("demo=>", ("=", "")), ("demo=> \\q", ("=", "\\q")), ("demo-> \\q", ("-", "\\q")),
    ("demo(> ", ("(", "")), ("demo'> ", ("'", "")), ('demo"> ', ('"', "")), ("demo$> ", ("$", "")),
    ("demo*> ", ("*", "")), ("demo=*> exit", ("=", "exit")), ("demo=!> ", ("=", "")), ("demo**> ", ("*", "")),
    ("demo-*> ", ("-", "")), ("demo=# \\q", ("=", "\\q")), ("demo!> ", ("!", "")),
    ("other=> \\q", None), ("", None), ("demo", None), ("demo> ", None), ("demo=x> ", None),
    ("select 1; demo=> ", None), ("demo_2=> ", None),
])
def test_prompt_state(shown: str, expected: tuple[str, str] | None) -> None:
    assert prompt_state(shown, "demo") == expected


def test_prompt_of_a_database_with_prompt_characters() -> None:
    assert prompt_state("a=*b=> \\q", "a=*b") == ("=", "\\q")
    assert prompt_state("a=*b'> \\q", "a=*b") == ("'", "\\q")


class Psql:
    """A watch with what it forwarded and the lines it ended the session on."""

    def __init__(self, prompt: bytes | None = b"demo=> ") -> None:
        self.sent = bytearray()
        self.quits: list[str] = []
        self.watch = QuitWatch("demo", self.sent.extend, self.quits.append)
        if prompt is not None:
            self.watch.output(b"psql (15)\r\nType \"help\" for help.\r\n\r\n\x1b[?2004h" + prompt)

    def type(self, data: bytes, echo: bool = True) -> None:
        self.watch.input(data)
        if echo:
            self.watch.output(data.replace(b"\r", b"\r\n"))


def test_q_at_the_main_prompt_ends_psql() -> None:
    p = Psql()
    p.type(b"\\q\r", echo=False)
    assert bytes(p.sent) == b"\\q" + QUIT_KEYS
    assert p.quits == ["\\q"]
    p.type(b"select 1;\r")  # nothing after the end of psql's input reaches it
    assert bytes(p.sent) == b"\\q" + QUIT_KEYS


def test_a_line_typed_key_by_key() -> None:
    p = Psql()
    for key in b"\\quit":
        p.type(bytes([key]))
    p.type(b"\r", echo=False)
    assert bytes(p.sent) == b"\\quit" + QUIT_KEYS


def test_other_lines_pass_unchanged() -> None:
    p = Psql()
    for line in (b"select 1;\r", b"\\d\r", b"\\qecho x\r", b"\\q;\r", b" exit\r"):
        p.type(line)
        p.watch.output(b"demo=> ")
    assert bytes(p.sent) == b"select 1;\r\\d\r\\qecho x\r\\q;\r exit\r"
    assert p.quits == []


def test_q_inside_a_statement_ends_psql_and_inside_a_string_does_not() -> None:
    p = Psql()
    p.type(b"select 'a\r")
    p.watch.output(b"demo'> ")
    p.type(b"\\q\r")
    p.watch.output(b"Use control-D to quit.\r\ndemo'> ")
    p.type(b"';\r")  # the string (and the statement) closes
    p.watch.output(b" ?column? \r\n(1 row)\r\n\r\ndemo=> ")
    p.type(b"select 1\r")
    p.watch.output(b"demo-> ")
    p.type(b"exit\r")  # psql: "Use \q to quit." -- part of the statement
    p.watch.output(b"Use \\q to quit.\r\ndemo-> ")
    assert p.quits == []
    p.type(b"\\q\r")
    assert bytes(p.sent) == b"select 'a\r\\q\r';\rselect 1\rexit\r\\q" + QUIT_KEYS
    assert p.quits == ["\\q"]


def test_exit_and_quit_at_the_main_prompt() -> None:
    for line in (b"exit", b"QUIT", b"quit;", b"exit ; "):
        p = Psql(b"demo=*> ")  # in a transaction: still the main prompt
        p.type(line + b"\r")
        assert bytes(p.sent) == line + QUIT_KEYS, line


def test_typed_ahead_of_the_prompt() -> None:
    """Keys typed before psql drew the prompt: judged at Enter from the line then on the screen, if psql has shown
    it, else forwarded as today."""
    p = Psql(prompt=None)
    p.watch.input(b"\\q")
    p.watch.output(b"demo=> \\q")
    p.watch.input(b"\r")
    assert bytes(p.sent) == b"\\q" + QUIT_KEYS
    p = Psql(prompt=None)
    p.watch.input(b"\\q\r")
    assert bytes(p.sent) == b"\\q\r" and p.quits == []
    p = Psql(prompt=None)
    p.watch.input(b"\\quit")
    p.watch.output(b"demo=> \\qu")  # the echo is behind
    p.watch.input(b"\r")
    assert bytes(p.sent) == b"\\quit\r"


def test_the_prompt_is_the_one_before_the_line() -> None:
    """After an Enter the old screen line is gone: a stale prompt never judges the next line."""
    p = Psql()
    p.type(b"select '\r", echo=False)  # psql has not answered yet
    p.watch.input(b"\\q")
    p.watch.output(b"select '\r\ndemo'> \\q")
    p.watch.input(b"\r")
    assert p.quits == []


def test_ctrl_c_starts_a_new_line() -> None:
    p = Psql()
    p.type(b"select")
    p.watch.input(b"\x03")
    p.watch.output(b"\r\ndemo=> ")
    p.type(b"\\q\r")
    assert bytes(p.sent) == b"select\x03\\q" + QUIT_KEYS


def test_edited_and_recalled_lines() -> None:
    p = Psql()
    p.type(b"\\qx\x7f  \x1b[D\x1b[D\x15\\quit\r", echo=False)  # backspace, left, ^U: the editor follows
    assert p.quits == ["\\quit  "]
    p = Psql()
    p.watch.input(b"\\qu\t")  # completion: the line is read from the screen
    p.watch.output(b"\\quit ")
    p.watch.input(b"\r")
    assert bytes(p.sent).endswith(QUIT_KEYS) and p.quits == [""]
    p = Psql()
    p.watch.input(b"\x1b[A")  # history: the screen shows something else
    p.watch.output(b"select 1;")
    p.watch.input(b"\r")
    assert bytes(p.sent) == b"\x1b[A\r"


def test_a_pasted_block() -> None:
    p = Psql()
    p.type(b"\x1b[200~\\q\nselect 1\x1b[201~\r", echo=False)  # readline hands psql both lines; \q comes first
    assert bytes(p.sent).endswith(QUIT_KEYS)
    p = Psql()
    p.type(b"\x1b[200~select 1\n\\q\x1b[201~\r", echo=False)
    assert bytes(p.sent) == b"\x1b[200~select 1\n\\q\x1b[201~\r"
    p = Psql()
    p.type(b"select 1;\r\\q\r", echo=False)  # a paste without brackets: two lines, the second typed ahead
    assert bytes(p.sent) == b"select 1;\r\\q\r"
