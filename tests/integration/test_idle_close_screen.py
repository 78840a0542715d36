"""What an idle close leaves on the operator's terminal (issue 24), through the stock OpenSSH client on a real pty:
the menu leaves as it does on ``q`` (the normal screen back, the cursor shown, mouse reporting and bracketed paste
off), and the bastion's closing message stands on a line of its own below. The menu used to be killed on its
screen: it stayed drawn, and the message was printed over its second row."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import pyte
import pytest

from tests.integration.conftest import BastionEnv, own_bastion
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import KEYS, Terminal

pytestmark = pytest.mark.slow
IDLE = 6  # seconds; the warning comes 1.5 s before
CLOSED = f"bastion: no input for {IDLE} s: connection closed"
ALT = 1049  # the alternate screen, as xterm, tmux and Textual know it


@pytest.fixture(scope="module")
def idle_env(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    with own_bastion(bastion_env, tmp_path_factory.mktemp("idle-screen"),
                     limits=f"limits: {{idle_timeout: {IDLE}}}\n") as env:
        yield env


class AltScreen(pyte.Screen):
    """A pyte screen with the alternate screen of a real terminal: entering it keeps the normal screen and the
    cursor aside, leaving it gives them back. Plain pyte draws a full-screen program's frames over the normal
    screen, so what the program leaves behind could not be told from what it drew."""

    def __init__(self, columns: int, lines: int):
        super().__init__(columns, lines)
        self.kept: tuple[Any, int, int] | None = None

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private") and ALT in modes:
            self.kept = (copy.deepcopy(self.buffer), self.cursor.x, self.cursor.y)
            self.erase_in_display(2)
            modes = tuple(m for m in modes if m != ALT)
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private") and ALT in modes:
            if self.kept is not None:
                buffer, x, y = self.kept
                self.buffer.clear()
                self.buffer.update(buffer)
                self.cursor.x, self.cursor.y = x, y
                self.dirty.update(range(self.lines))
                self.kept = None
            modes = tuple(m for m in modes if m != ALT)
        super().reset_mode(*modes, **kwargs)


def final_screen(raw: bytes, cols: int, rows: int) -> AltScreen:
    """The operator's terminal once everything is written, as a terminal with an alternate screen shows it."""
    screen = AltScreen(cols, rows)
    pyte.ByteStream(screen).feed(raw)
    return screen


def undone_before(raw: str, at: int, on: str, off: str) -> bool:
    """Whether the last ``on`` written before ``at`` was followed by an ``off``, also before ``at``."""
    last_on = raw.rfind(on, 0, at)
    return last_on == -1 or raw.find(off, last_on, at) != -1


@pytest.mark.parametrize("user,screen_key", [("alice", None), ("carol", "f2")])
def test_an_idle_close_leaves_the_message_on_a_clean_terminal(idle_env: BastionEnv, user: str,
                                                             screen_key: str | None) -> None:
    env, cols, rows = idle_env, 100, 30
    with Terminal(ssh_argv(env.keys[user], env.port, user, tty=True), cols=cols, rows=rows) as t:
        t.wait_for(r"real sshd on loopback")
        if screen_key is not None:  # a reviewer idle in the queue, a screen pushed over the menu
            t.send(KEYS[screen_key])
            t.wait_for(r"Pending approval requests")
        t.wait_for(r"no input for a while", timeout=IDLE + 5)  # the menu's warning
        t.wait_for_raw(re.escape(CLOSED), timeout=IDLE + 10)
        t.wait_exit()
        raw = bytes(t.raw)
    text = raw.decode("utf-8", "replace")
    at = text.rfind(CLOSED)
    assert text.find("\x1b[?1049h") != -1, "the menu never took the alternate screen"
    for on, off, what in (("\x1b[?1049h", "\x1b[?1049l", "the alternate screen"),
                          ("\x1b[?25l", "\x1b[?25h", "the hidden cursor"),
                          ("\x1b[?1000h", "\x1b[?1000l", "mouse reporting"),
                          ("\x1b[?1003h", "\x1b[?1003l", "mouse motion reporting"),
                          ("\x1b[?2004h", "\x1b[?2004l", "bracketed paste")):
        assert undone_before(text, at, on, off), f"{what} was still on when the message came"
    screen = final_screen(raw, cols, rows)
    shown = [line.rstrip() for line in screen.display]
    assert [line for line in shown if line] == [CLOSED], "\n".join(shown)  # no remnant of the menu, nothing over it
    y = shown.index(CLOSED)
    assert (screen.cursor.x, screen.cursor.y) == (0, y + 1), "the cursor is not at the start of a fresh line"
