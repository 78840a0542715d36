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


async def test_the_list_pages_in_as_the_cursor_reaches_its_end(bastion: TuiDaemon) -> None:
    """A store of any size: the first screen is one page, the next comes when the auditor scrolls to the end."""
    from tests.unit.test_recordings_paging import fill

    fill(bastion.daemon.store, 230)
    app = MenuApp(bastion.connect("eve"))
    async with app.run_test(size=(130, 30)) as pilot:
        await until(pilot, lambda: app.auditor)
        await pilot.press("f5")
        await until(pilot, lambda: "100 session(s) (more below)" in status(app))
        table = app.screen.query_one(DataTable)
        assert table.row_count == 100
        await pilot.press("end")
        await until(pilot, lambda: "200 session(s) (more below)" in status(app))
        await pilot.press("end")
        await until(pilot, lambda: "230 session(s) ·" in status(app))
        assert table.row_count == 230 and len(set(app.screen.rows[i]["id"] for i in range(230))) == 230
        await pilot.press("end")
        await pilot.pause()
        assert table.row_count == 230  # the end of the list: nothing more is asked for
