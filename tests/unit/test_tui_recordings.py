"""The auditor's recordings screen (F5) loses no key typed with the "/" that opens its filter, driven with Textual's
Pilot against the daemon's own RPC handlers and store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual import events
from textual.widgets import DataTable, Input, Static

from tests.support.tui_daemon import TuiDaemon, tui_daemon, until
from tui.app import MenuApp
from tui.recordings import RecordingsScreen

KEY_NAMES = {"/": "slash", "=": "equals_sign", " ": "space", "*": "asterisk"}


@pytest.fixture()
def bastion(tmp_path: Path) -> Iterator[TuiDaemon]:
    with tui_daemon(tmp_path) as b:
        yield b


def burst(app: MenuApp, text: str) -> None:
    """Keys that arrive in one read (a paste, fast typing over a slow link): all queued before the app handles the
    first, unlike Pilot.press, which waits for the app to settle after each key."""
    for ch in text:
        app.post_message(events.Key(KEY_NAMES.get(ch, ch), ch))


def status(app: MenuApp) -> str:
    return str(app.screen.query_one("#rec-status", Static).render())


async def test_keys_typed_with_the_slash_go_to_the_filter(bastion: TuiDaemon) -> None:
    app = MenuApp(bastion.connect("eve"))
    async with app.run_test(size=(130, 30)) as pilot:
        await until(pilot, lambda: app.auditor)
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, RecordingsScreen) and app.screen.focused is not None)
        screen = app.screen
        await pilot.pause()
        assert screen.focused is screen.query_one(DataTable)  # the list has the keys, not the filter above it...
        assert "session(s)" in status(app)  # ...and the status line does not say the filter has them
        burst(app, "/user=bob")
        box = screen.query_one("#rec-filter", Input)
        await until(pilot, lambda: box.value == "user=bob")
        await pilot.press("enter")
        await until(pilot, lambda: "0 session(s) · user=bob" in status(app))
        assert screen.focused is screen.query_one(DataTable)
        burst(app, "/resource=web/* since=7d")  # a fresh filter; in it "/" is a character like any other
        await until(pilot, lambda: box.value == "resource=web/* since=7d")
        await pilot.press("enter")
        await until(pilot, lambda: "0 session(s) · resource=web/* since=7d" in status(app))
