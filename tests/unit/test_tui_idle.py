"""Screens that cost nothing while nothing happens (issue 19): a push reloads the reviewer's queue once (it used to
bounce between the app and the screen, reloading for as long as the queue was open), a burst of pushes is one
reload, a list is redrawn only when its rows change, ages tick without asking the daemon, and no screen polls the
daemon on a timer, except the live sessions (no push says who is on), which looks every few seconds. Driven with
Textual's Pilot against the daemon's own RPC handlers (tests/support/tui_daemon.py)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.message_pump import MessagePump
from textual.pilot import Pilot
from textual.widgets import Static

from bastion.oversight.live import LiveSession
from bastion.rpc.proto import RpcClient
from tests.support.tui_daemon import TuiDaemon, tui_daemon, until
from tui.app import MenuApp
from tui.approvals import ApprovalsScreen
from tui.live import POLL, LiveScreen
from tui.tables import ListTable, Row, ago


@pytest.fixture()
def bastion(tmp_path: Path) -> Iterator[TuiDaemon]:
    with tui_daemon(tmp_path) as b:
        yield b


def held(b: TuiDaemon, text: str = "chmod 600 /srv/app/config") -> int:
    """A command of alice's held for one reviewer, as the policy engine would have held it: its request number."""
    req: Any = b.requests.create(requester="alice", resource="web", session_id="20261201-000000-aaaaaaaaaaaa",
                                 text=text, rule="chmod-needs-approval", reason="", approvals_needed=1,
                                 approver_roles=["reviewers"], timeout=600, node=b.daemon.node)
    return int(req["id"] if isinstance(req, dict) else req.id)  # a record (or, before, a dict)


def counted(rpc: RpcClient) -> Counter[str]:
    """The calls the menu makes, by method, each counted once its answer is back."""
    calls: Counter[str] = Counter()
    call = rpc.call

    def counting(method: str, **params: Any) -> Any:
        try:
            return call(method, **params)
        finally:
            calls[method] += 1

    rpc.call = counting  # type: ignore[method-assign]
    return calls


def timers(pump: MessagePump) -> int:
    """Timers of this widget or screen that are set (not Textual's own screen refresh, paused while idle)."""
    return sum(1 for t in list(pump._timers)
               if t._task is not None and not t._task.done() and t.name != "screen_update")


def notice(app: MenuApp) -> str:
    return str(app.screen_stack[0].query_one("#notice", Static).render())


async def open_queue(app: MenuApp, pilot: Pilot[Any]) -> ApprovalsScreen:
    await until(pilot, lambda: app.reviewer)
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(app.screen, ApprovalsScreen)  # loaded: it says so, or shows requests
                and (bool(app.screen.pending) or "Nothing waits" in str(app.screen.query_one("#approvals-status",
                                                                                               Static).render())))
    assert isinstance(app.screen, ApprovalsScreen)
    return app.screen


async def test_a_push_reloads_the_open_queue_once_and_nothing_more(bastion: TuiDaemon) -> None:
    rpc = bastion.connect("bob")
    calls = counted(rpc)
    app = MenuApp(rpc)
    async with app.run_test(size=(120, 30)) as pilot:
        queue = await open_queue(app, pilot)
        calls.clear()
        rid = held(bastion)
        bastion.changed(rid)
        await until(pilot, lambda: [r["id"] for r in queue.pending] == [rid])
        assert notice(app) == "1 request awaits your review — F2"
        await pilot.pause(0.5)  # a reload that caused another (the bug) would go on for as long as the queue is open
        assert calls == {"queue.list": 1}  # one answer, for the notice and the queue both
        for _ in range(20):  # a burst: the menu reloads once for those that came while one waited
            bastion.changed(rid)
        await until(pilot, lambda: calls["queue.list"] > 1)
        await pilot.pause(0.5)
        assert calls["queue.list"] <= 3 and set(calls) == {"queue.list"}


async def test_the_queue_is_redrawn_only_when_its_rows_change(bastion: TuiDaemon) -> None:
    reqs = [held(bastion, f"chmod 60{i} /srv/f{i}") for i in range(3)]
    rpc = bastion.connect("bob")
    calls = counted(rpc)
    app = MenuApp(rpc)
    async with app.run_test(size=(120, 30)) as pilot:
        queue = await open_queue(app, pilot)
        pending = queue.query_one("#pending", ListTable)
        assert [r["id"] for r in queue.pending] == reqs
        assert pending.get_row_at(0)[5] == "<1m"  # the age, to the minute
        await pilot.press("down")
        chosen, rebuilds = pending.key_at_cursor(), pending.rebuilds
        assert chosen == str(reqs[1])
        calls.clear()
        bastion.changed(reqs[0])  # a push that changes nothing this reviewer sees
        await until(pilot, lambda: calls["queue.list"] == 1)
        assert pending.rebuilds == rebuilds and pending.key_at_cursor() == chosen
        bastion.requests.decide(reqs[0], "dave", True, "")  # decided by another reviewer: it leaves the queue
        bastion.changed(reqs[0])
        await until(pilot, lambda: [r["id"] for r in queue.pending] == reqs[1:])
        assert pending.rebuilds == rebuilds + 1
        assert pending.key_at_cursor() == chosen and pending.cursor_row == 0  # the cursor stays on its request
        assert "approved" in str(queue.query_one("#history", ListTable).get_row_at(0))


async def test_no_screen_adds_a_timer_of_its_own_but_the_live_sessions(bastion: TuiDaemon) -> None:
    held(bastion)
    rpc = bastion.connect("bob")
    calls = counted(rpc)
    app = MenuApp(rpc)
    async with app.run_test(size=(120, 30)) as pilot:
        for _ in range(3):  # open and close: nothing left behind, nothing added per opening
            queue = await open_queue(app, pilot)
            assert timers(queue) == 0  # no reload on a timer: pushes say when
            assert timers(queue.query_one("#pending", ListTable)) == 1  # the ages' one timer
            assert timers(queue.query_one("#history", ListTable)) == 0  # no age there
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.screen_stack[0])
        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, LiveScreen) and calls["sessions.live"] == 1)
        assert timers(app.screen) == 1 and POLL >= 5  # who is on: one look every few seconds


async def test_live_sessions_are_redrawn_only_when_they_change(bastion: TuiDaemon) -> None:
    live = LiveSession("20261201-000000-bbbbbbbbbbbb", "alice", "web", "ssh", "exec", "sleep 60", "127.0.0.1:2",
                       bastion.daemon.node, tee=None, relay=None, notify=lambda _: None,  # type: ignore[arg-type]
                       stop=lambda: None, started=time.time() - 3725)
    bastion.daemon.live.add(live)
    app = MenuApp(bastion.connect("eve"))
    async with app.run_test(size=(130, 30)) as pilot:
        await until(pilot, lambda: app.auditor)
        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, LiveScreen) and bool(app.screen.sessions))
        screen = app.screen
        assert isinstance(screen, LiveScreen)
        table = screen.query_one(ListTable)
        assert table.get_row_at(0)[6] == "1h02m"  # from when it started, ticking here
        rebuilds = table.rebuilds
        screen.reload()  # what the poll does: the same sessions redraw nothing
        assert table.rebuilds == rebuilds
        live.observers.add("bob")
        screen.reload()
        assert table.rebuilds == rebuilds + 1 and table.get_row_at(0)[7] == "bob"


class AgesApp(App[None]):
    def compose(self) -> ComposeResult:
        yield ListTable(age_at=1, age_text=lambda sec: f"{int(sec / 0.2)} steps", age_step=0.2)


async def test_ages_tick_on_one_timer_set_for_when_they_change() -> None:
    app = AgesApp()
    async with app.run_test() as pilot:
        table = app.query_one(ListTable)
        table.add_columns("Name", "Age")
        since = time.time()
        rows = [Row("a", ["first"], since), Row("b", ["second"], since - 0.1), Row("c", ["no age"])]
        assert table.show(rows)
        assert table.get_row_at(0) == ["first", "0 steps"] and table.get_row_at(2) == ["no age", "?"]
        for _ in range(10):
            assert not table.show(rows)  # nothing changed: nothing redrawn, and still one timer
        assert timers(table) == 1 and table.rebuilds == 1
        await until(pilot, lambda: table.get_row_at(0)[1] == "2 steps" and table.get_row_at(1)[1] == "2 steps")
        assert timers(table) == 1 and table.rebuilds == 1  # cells redrawn, the list not rebuilt
        table.show([Row("c", ["no age"])])
        await pilot.pause()
        assert timers(table) == 0  # no age shown: no timer


def test_ages_are_shown_to_the_minute() -> None:
    assert [ago(s) for s in (-5, 0, 59.9, 60, 3599, 3600, 7500)] == ["<1m", "<1m", "<1m", "1m", "59m", "1h00m",
                                                                       "2h05m"]
