"""The reviewer's queue (F2) decides nothing by stray keys, driven with Textual's Pilot against the daemon's own RPC
handlers, store and approval service (a real Daemon on a SQLite file, served on a loop of its own, as the session
process's broker would be)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from bastion.store.rows import RequestRecord
from tests.support.tui_daemon import TuiDaemon, tui_daemon, until
from tui.app import MenuApp
from tui.approvals import ApprovalsScreen, ConfirmApproval, ReasonModal

COMMAND = "chmod 600 /srv/app/[bold]config[/bold] && echo done"  # operator-typed text: shown verbatim


@pytest.fixture()
def bastion(tmp_path: Path) -> Iterator[TuiDaemon]:
    with tui_daemon(tmp_path) as b:
        yield b


def held(b: TuiDaemon, text: str = COMMAND) -> RequestRecord:
    """A command of alice's held for one reviewer, as the policy engine would have held it."""
    return b.requests.create(requester="alice", resource="web", session_id="20261201-000000-aaaaaaaaaaaa", text=text,
                             rule="chmod-needs-approval", reason="", approvals_needed=1,
                             approver_roles=["reviewers"], timeout=600, node=b.daemon.node)


def shown(app: MenuApp, wid: str) -> str:
    return str(app.screen.query_one(wid, Static).render())


async def open_queue(app: MenuApp, pilot: Pilot[Any], rid: int) -> ApprovalsScreen:
    await until(pilot, lambda: app.reviewer)
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(app.screen, ApprovalsScreen)
                and any(r["id"] == rid for r in app.screen.pending))
    assert isinstance(app.screen, ApprovalsScreen)
    return app.screen


async def test_a_reason_typed_after_an_empty_enter_stays_in_the_dialog(bastion: TuiDaemon) -> None:
    req = held(bastion)
    app = MenuApp(bastion.connect("bob"))
    async with app.run_test(size=(120, 30)) as pilot:
        queue = await open_queue(app, pilot, req.id)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ReasonModal))
        await pilot.press("enter")  # no reason yet: the dialog stays, and says why
        await until(pilot, lambda: "reason is needed" in shown(app, "#reason-note"))
        assert isinstance(app.screen, ReasonModal)
        await pilot.press(*"a bad idea, ask again")  # every key a queue shortcut: a, d, r ... and y
        assert isinstance(app.screen, ReasonModal)
        assert app.screen.query_one(Input).value == "a bad idea, ask again"
        assert bastion.requests.get(req.id).status == "pending"
        await pilot.press("escape")  # cancelled: still nothing decided
        await until(pilot, lambda: app.screen is queue)
        assert bastion.requests.get(req.id).status == "pending"
        await pilot.press("d", "enter", *"   ", "enter")  # blanks are no reason either
        assert isinstance(app.screen, ReasonModal) and "reason is needed" in shown(app, "#reason-note")
        await pilot.press(*"not now", "enter")
        await until(pilot, lambda: app.screen is queue and "denied" in shown(app, "#approvals-status"))
    r = bastion.requests.get(req.id)
    assert r.status == "denied" and [(d.reviewer, d.approve, d.reason) for d in r.decisions] == \
        [("bob", False, "not now")]


async def test_approving_names_what_it_approves_and_takes_a_deliberate_key(bastion: TuiDaemon) -> None:
    req = held(bastion)
    app = MenuApp(bastion.connect("bob"))
    async with app.run_test(size=(120, 30)) as pilot:
        queue = await open_queue(app, pilot, req.id)
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmApproval))
        what = shown(app, "#confirm-what")
        for fact in (f"#{req.id}", "alice", "web", COMMAND, "chmod-needs-approval"):
            assert fact in what  # the command verbatim: its brackets are not markup
        await pilot.press("x")  # any other key cancels, and is not a queue shortcut
        await until(pilot, lambda: app.screen is queue and "not approved" in shown(app, "#approvals-status"))
        for stray in ("a", "enter", "d"):  # not even the shortcut twice, Enter, or another shortcut
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, ConfirmApproval))
            await pilot.press(stray)
            await until(pilot, lambda: app.screen is queue)
        assert bastion.requests.get(req.id).status == "pending"
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmApproval))
        await pilot.press("y")
        await until(pilot, lambda: f"request #{req.id}: approved" in shown(app, "#approvals-status"))
    r = bastion.requests.get(req.id)
    assert r.status == "approved" and [(d.reviewer, d.approve) for d in r.decisions] == [("bob", True)]
