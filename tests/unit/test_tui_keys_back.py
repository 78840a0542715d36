"""One rule for leaving a screen (issue 24): on every screen pushed over the menu ``q`` and ``Esc`` go back, and the
footer says so; only the menu's own ``q`` quits (it used to quit from the reviewer queue too, logging the reviewer
out). Where a text box has the keys ``q`` is a letter. And a dialog's question wraps inside its box on an 80x24
terminal (it was cut at the edge: "… Why do"). Driven with Textual's Pilot against a scripted broker, waiting on
what the screen shows."""

from __future__ import annotations

import re
from typing import Any

import pytest
from textual.app import App
from textual.containers import Vertical
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label
from textual.widgets._footer import FooterKey

from bastion.rpc.proto import RpcError
from tests.support.tui_daemon import until
from tui.app import MenuApp
from tui.approvals import ApprovalsScreen, ConfirmApproval, MyRequestsScreen, ReasonModal
from tui.live import LiveScreen
from tui.recordings import RecordingScreen, RecordingsScreen, TimelineScreen

ON_REQUEST = {"name": "db-prod", "kind": "postgres", "description": "production database", "access": "request",
              "ttl": 3600}
RECORDING = {"id": "20261203-010000-abcdefabcdef", "user": "alice", "resource": "web", "kind": "ssh",
             "mode": "interactive", "started_at": "2026-12-03T01:00:00", "duration": 42.0, "outcome": "normal",
             "risk": [], "verdict": None}
REQUEST = {"id": 7, "requester": "alice", "resource": "web", "rule": "chmod-needs-approval", "approvals_needed": 1,
           "decisions": [], "created_at": "2026-12-03T01:00:00+00:00", "status": "pending", "status_reason": "",
           "text": "chmod 600 /srv/app/config && systemctl restart app-server-with-a-long-name --no-block"}


class Broker:
    """Answers as the daemon would for a reviewer and auditor (rita); what a screen does not need is refused, as the
    daemon refuses what it cannot find (every screen shows such an answer and stays)."""

    def __init__(self, pending: list[dict[str, Any]] | None = None):
        self.pending = pending or []

    def call(self, method: str, **params: Any) -> Any:
        answers: dict[str, Any] = {
            "hello": {"user": "rita", "roles": ["reviewers", "auditors"], "review": True, "audit": True},
            "resources.list": {"resources": [ON_REQUEST]},
            "queue.list": {"pending": self.pending, "history": []},
            "requests.mine": {"requests": []},
            "sessions.live": {"sessions": []},
            "recordings.list": {"sessions": [RECORDING]},
        }
        if method in answers:
            return answers[method]
        raise RpcError("not_found", f"{method}: nothing here")


def footer(screen: Screen[Any]) -> list[str]:
    """The footer's keys as shown: ``KEY description``."""
    return [f"{k.key_display} {k.description}" for k in screen.query(FooterKey)]


def shown(app: App[Any], widget: Widget) -> list[str]:
    """The text the terminal shows in ``widget``'s region, row by row (the screen as composed, so what the box
    around it cuts off is not there)."""
    lines = ["".join(strip.text for strip in line) for line in app.screen._compositor.render_full_update().strips]
    r = widget.region
    return [lines[y][r.x:r.right] for y in range(r.y, r.bottom)]


def words(text: str) -> str:
    return " ".join(text.split())


async def back_with(pilot: Pilot[Any], key: str, below: type[Screen[Any]] | None = None) -> None:
    """Press ``key`` and wait until the screen below is up again (``below``; None: the menu)."""
    app = pilot.app
    was = app.screen
    await pilot.press(key)
    await until(pilot, lambda: app.screen is not was)
    assert app.is_running, f"{key} quit the menu from {type(was).__name__}"
    if below is None:
        assert app.screen is app.screen_stack[0]
    else:
        assert isinstance(app.screen, below)


@pytest.mark.parametrize("key", ["q", "escape"])
async def test_q_and_esc_go_back_from_every_sub_screen_and_the_footer_says_so(key: str) -> None:
    app = MenuApp(Broker())  # type: ignore[arg-type]
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.reviewer and app.auditor and footer(app.screen) != [])
        assert "q Quit" in footer(app.screen)  # the menu's own q quits
        for fkey, kind in (("f2", ApprovalsScreen), ("f3", MyRequestsScreen), ("f4", LiveScreen),
                           ("f5", RecordingsScreen)):
            await pilot.press(fkey)
            await until(pilot, lambda kind=kind: isinstance(app.screen, kind))  # type: ignore[misc]
            await until(pilot, lambda: footer(app.screen) != [])
            keys = footer(app.screen)
            assert "Esc/q Back" in keys and not any("Quit" in k for k in keys), (kind.__name__, keys)
            await back_with(pilot, key)
        await pilot.press("f5")  # one recording, and a timeline, are pushed over the recordings list
        await until(pilot, lambda: isinstance(app.screen, RecordingsScreen) and app.screen.rows != [])
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RecordingScreen) and footer(app.screen) != [])
        assert "Esc/q Back" in footer(app.screen)
        await back_with(pilot, key, RecordingsScreen)
        app.push_screen(TimelineScreen(app.rpc, user="alice"))
        await until(pilot, lambda: isinstance(app.screen, TimelineScreen) and footer(app.screen) != [])
        assert "Esc/q Back" in footer(app.screen)
        await back_with(pilot, key, RecordingsScreen)
        await back_with(pilot, key)
        await pilot.press("q")  # and on the menu, q still quits
        await until(pilot, lambda: not app.is_running)
    assert app.return_value == 0


async def test_in_a_text_box_q_is_a_letter() -> None:
    app = MenuApp(Broker([REQUEST]))  # type: ignore[arg-type]
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.auditor)
        await pilot.press("f5", "slash")
        await until(pilot, lambda: isinstance(app.screen, RecordingsScreen) and isinstance(app.screen.focused, Input))
        box = app.screen.query_one("#rec-filter", Input)
        await pilot.press("q", "u", "q")
        await until(pilot, lambda: box.value == "quq")
        assert isinstance(app.screen, RecordingsScreen)
        await pilot.press("escape")  # Esc leaves the box first...
        await until(pilot, lambda: isinstance(app.screen.focused, DataTable))
        await back_with(pilot, "q")  # ...then q goes back
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, ApprovalsScreen) and app.screen.pending != [])
        await pilot.press("d")  # deny asks for a reason, in a dialog
        await until(pilot, lambda: isinstance(app.screen, ReasonModal))
        reason = app.screen.query_one("#reason", Input)
        await pilot.press("q")
        await until(pilot, lambda: reason.value == "q")
        await back_with(pilot, "escape", ApprovalsScreen)  # Esc cancels the dialog
        await pilot.press("a")  # the approval dialog: any key but y cancels it, q too
        await until(pilot, lambda: isinstance(app.screen, ConfirmApproval))
        await back_with(pilot, "q", ApprovalsScreen)
        await back_with(pilot, "q")


async def test_the_access_request_question_wraps_in_its_dialog_on_80x24() -> None:
    app = MenuApp(Broker())  # type: ignore[arg-type]
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.visible_resources() != [])
        await pilot.press("enter")  # db-prod is granted on request: the dialog asks why
        await until(pilot, lambda: isinstance(app.screen, ReasonModal))
        await pilot.pause()
        question = app.screen.query_one("#reason-box", Vertical).query_one(Label)
        box = app.screen.query_one("#reason-box")
        assert box.region.right <= 80 and question.region.right <= box.region.right
        assert question.region.height >= 2  # it wraps rather than runs on past the edge
        text = words(" ".join(shown(app, question)))
        assert text == ("Access to db-prod needs a reviewer's approval (it lasts 1h00m). Why do you need it?"), text


@pytest.mark.parametrize("title", [
    "Verdict on 20261203-010000-abcdefabcdef: ok | follow-up | incident, then a comment "
    "(e.g. follow-up ask alice about the chmod)",
    "Revoke alice's access to a-resource-with-a-rather-long-name (request #12345): why?",
])
async def test_every_reason_dialog_wraps_its_question(title: str) -> None:
    app = MenuApp(Broker())  # type: ignore[arg-type]
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.visible_resources() != [])
        app.push_screen(ReasonModal(title))
        await until(pilot, lambda: isinstance(app.screen, ReasonModal))
        await pilot.pause()
        question = app.screen.query_one("#reason-box", Vertical).query_one(Label)
        assert question.region.right <= 80
        assert words(" ".join(shown(app, question))) == words(title)


async def test_the_approval_dialog_fits_80x24() -> None:
    app = MenuApp(Broker([REQUEST]))  # type: ignore[arg-type]
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.reviewer)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, ApprovalsScreen) and app.screen.pending != [])
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmApproval))
        await pilot.pause()
        box = app.screen.query_one("#confirm-box")
        assert box.region.x >= 0 and box.region.right <= 80, box.region
        what = words(" ".join(shown(app, app.screen.query_one("#confirm-what"))))
        assert re.search(r"command: chmod 600 /srv/app/config && systemctl restart app-server-with-a-long-name "
                         r"--no-block", what), what
        keys = words(" ".join(shown(app, app.screen.query_one("#confirm-keys"))))
        assert keys == "y: approve · any other key: cancel", keys
