"""How an idle close ends the menu (issue 24): it is asked to leave, so that Textual gives the terminal back before
the closing message is printed; only a menu that does not go in time is hung up, and then the terminal is given
back by the bastion, unless the menu had handed it over (a session occupies the channel: the menu is off its
screen, and leaving an alternate screen it is not on would move the cursor). The end-to-end view of the same is
tests/integration/test_idle_close_screen.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion.context import ConnectionContext
from bastion.ssh import channel
from bastion.ssh.channel import BastionSession


class Menu:
    """The menu's session process as the channel sees it: told to close, it leaves (or, ``stuck``, does not)."""

    def __init__(self, session: BastionSession, stuck: bool):
        self.session, self.stuck = session, stuck
        self.told: list[tuple[str, Any]] = []
        self.hung_up = False

    def notify(self, event: str, data: dict[str, str] | None = None) -> None:
        self.told.append((event, data))
        if not self.stuck:
            asyncio.get_running_loop().call_soon(self.session._menu_exited.set)  # its process exits

    def close(self) -> None:
        self.hung_up = True
        self.session._menu_exited.set()


class Client:
    def __init__(self, opening: bool):
        self.opening = opening


def session() -> BastionSession:
    return BastionSession(None, ConnectionContext("192.0.2.7:40000", "bastion"))  # type: ignore[arg-type]


async def test_the_menu_is_asked_to_leave_and_not_hung_up() -> None:
    s = session()
    menu = Menu(s, stuck=False)
    await s._close_menu(menu, Client(opening=False), "no input for 6 s")  # type: ignore[arg-type]
    assert menu.told == [("close", {"text": "no input for 6 s"})]
    assert not menu.hung_up and not s._restore_terminal


@pytest.mark.parametrize("opening", [False, True])
async def test_a_menu_that_does_not_leave_is_hung_up_and_the_terminal_given_back(
        monkeypatch: pytest.MonkeyPatch, opening: bool) -> None:
    monkeypatch.setattr(channel, "MENU_LEAVE_WAIT", 0.2)
    s = session()
    menu = Menu(s, stuck=True)
    await s._close_menu(menu, Client(opening=opening), "no input for 6 s")  # type: ignore[arg-type]
    assert menu.hung_up
    assert s._restore_terminal is (not opening)  # on its screen: the bastion leaves it; handed over: nothing to do


def test_the_restoring_sequence_undoes_what_the_menu_turns_on() -> None:
    for mode in ("?1049l", "?25h", "?1000l", "?1003l", "?1006l", "?2004l", "?1004l"):
        assert f"\x1b[{mode}" in channel.RESTORE_TERMINAL, mode
    assert channel.RESTORE_TERMINAL.index("\x1b[<u") < channel.RESTORE_TERMINAL.index("\x1b[?1049l")
