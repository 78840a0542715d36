"""Reviewer queue and "my requests" screens. Live: the app reloads them when the daemon pushes ``queue.changed``,
and nothing else: their ages tick here, from the requests' timestamps, without asking the daemon."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Static

from bastion.rpc.proto import RpcClient, RpcError
from tui.keys import BACK
from tui.tables import ListTable, Row


class QueueChanged(Message):
    """The daemon says approval requests changed (posted to the app from the RPC reader thread). It does not
    bubble: the app reloads the screens that show requests, once per push."""

    bubble = False


def timestamp(iso: str) -> float | None:
    """Epoch seconds of an ISO timestamp (None if it is not one)."""
    try:
        when = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def fmt_duration(sec: float) -> str:
    """A length of time, compactly: 42s, 3m07s, 2h05m."""
    sec = int(round(sec))
    if sec < 60:
        return f"{sec}s"
    if sec < 3600:
        return f"{sec // 60}m{sec % 60:02d}s"
    return f"{sec // 3600}h{sec % 3600 // 60:02d}m"


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


SAID_FOR = 10.0  # seconds an action's outcome stays in the status line


class ReasonModal(ModalScreen[str | None]):
    """Ask for a reason (required to deny, revoke or ask for access). It stays open until a reason is given (Enter)
    or the question is cancelled (Esc): keys typed after an empty Enter must never fall through to the screen
    below, where they are shortcuts (``a`` approves)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str):
        super().__init__()
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="reason-box"):
            yield Label(Text(self.title_text), id="reason-question")  # operator-typed text: never markup
            yield Input(placeholder="reason (Enter to confirm, Esc to cancel)", id="reason", select_on_focus=False)
            yield Static("", id="reason-note")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        reason = event.value.strip()
        if not reason:
            self.query_one("#reason-note", Static).update("A reason is needed: type it, then Enter (Esc cancels).")
            return
        self.dismiss(reason)

    def action_cancel(self) -> None:
        self.dismiss(None)


APPROVE_KEY = "y"


def describe_request(req: dict[str, Any]) -> Text:
    """What a decision on ``req`` is about, in full and verbatim (operator-typed text is never markup)."""
    got = sum(1 for d in req.get("decisions", []) if d.get("approve"))
    text = Text()
    for label, value in (("request", f"#{req['id']}"), ("requester", str(req["requester"])),
                         ("resource", str(req["resource"])), ("command", str(req["text"])),
                         ("rule", f"{req['rule']} ({got}/{req['approvals_needed']} approvals so far)")):
        text.append(f"{label:>10}: ", style="bold")
        text.append(value + "\n")
    return text


class ConfirmApproval(ModalScreen[bool]):
    """Approving takes a deliberate key on a dialog that says what is approved; any other key cancels, and no key
    pressed here ever reaches the queue below."""

    def __init__(self, req: dict[str, Any]):
        super().__init__()
        self.req = req

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Label(Text(f"Approve request #{self.req['id']}?", style="bold"))
            yield Static(describe_request(self.req), id="confirm-what")
            yield Static(f"{APPROVE_KEY}: approve · any other key: cancel", id="confirm-keys")

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        self.dismiss(event.key == APPROVE_KEY)


class ApprovalsScreen(Screen[None]):
    """Pending requests this reviewer may decide, and recent decisions."""

    BINDINGS = [
        Binding("a", "approve", "Approve"),
        Binding("d", "deny", "Deny (reason)"),
        Binding("r", "revoke", "Revoke access (reason)"),
        BACK,
    ]

    def __init__(self, rpc: RpcClient, focus: int | None = None):
        super().__init__()
        self.rpc = rpc
        self.focus_request = focus  # put the cursor on this request once it is listed (ssh -t bastion review N)
        self.pending: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self._said_at = 0.0
        self._status_text = ""

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static("Pending approval requests", classes="section")
        yield ListTable(id="pending", cursor_type="row", zebra_stripes=True, age_at=5)
        yield Static("Decided", classes="section")
        yield ListTable(id="history", cursor_type="row", zebra_stripes=True)
        yield Static("", id="approvals-status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "approvals queue"
        self.query_one("#pending", DataTable).add_columns("#", "Requester", "Resource", "Command", "Rule", "Age",
                                                          "Approvals")
        self.query_one("#history", DataTable).add_columns("#", "Requester", "Resource", "Command", "Status", "By")
        self.reload()  # and then again only when the daemon says the requests changed (the app calls show)
        self.query_one("#pending", DataTable).focus()

    def reload(self) -> None:
        try:
            q = self.rpc.call("queue.list")
        except RpcError as e:
            self._status(f"cannot load the queue: {e}")
            return
        self.show(q)

    def show(self, q: dict[str, Any]) -> None:
        """Show a ``queue.list`` answer; a list is redrawn only if its rows changed."""
        self.pending, self.history = q["pending"], q["history"]
        self.query_one("#pending", ListTable).show([
            Row(str(r["id"]), (f"#{r['id']}", r["requester"], r["resource"], Text(_short(r["text"])), r["rule"],
                               f"{sum(1 for d in r['decisions'] if d['approve'])}/{r['approvals_needed']}"),
                timestamp(r["created_at"])) for r in self.pending])
        self.query_one("#history", ListTable).show([
            Row(str(r["id"]), (f"#{r['id']}", r["requester"], r["resource"], Text(_short(r["text"], 40)),
                               r["status"], ", ".join(d["reviewer"] for d in r["decisions"]) or "-"))
            for r in self.history])
        if self.focus_request is not None:
            self._focus(self.focus_request)
        if time.monotonic() - self._said_at < SAID_FOR:
            return  # the outcome of the reviewer's last action stays in sight a while
        if not self.pending:
            self._status("Nothing waits for you.")
        elif q.get("more_pending"):  # the oldest are shown whole; the rest come as these are decided
            self._status(f"{q['more_pending']} more request(s) wait behind these · a: approve · d: deny")
        elif self._status_text == "Nothing waits for you." or "more request(s)" in self._status_text:
            self._status("a: approve the selected request · d: deny it with a reason")

    def _focus(self, rid: int) -> None:
        """Put the cursor on request ``rid`` (once): the request ``ssh -t bastion review N`` named."""
        self.focus_request = None
        at = next((i for i, r in enumerate(self.pending) if r["id"] == rid), None)
        if at is not None:
            self.query_one("#pending", DataTable).move_cursor(row=at)
            self._say(f"request #{rid}: a: approve · d: deny it with a reason")
            return
        done = next((r for r in self.history if r["id"] == rid), None)
        self._say(f"request #{rid}: {done['status']}" if done is not None
                  else f"request #{rid} is not among those you may decide")

    def _selected(self) -> dict[str, Any] | None:
        table = self.query_one("#pending", DataTable)
        if not self.pending or not 0 <= table.cursor_row < len(self.pending):
            return None
        return self.pending[table.cursor_row]

    def _status(self, text: str) -> None:
        if text != self._status_text:  # an unchanged line is not redrawn
            self._status_text = text
            self.query_one("#approvals-status", Static).update(text)

    def _say(self, text: str) -> None:
        """The outcome of an action: kept over the queue's own hints for a while (pushes reload the queue)."""
        self._said_at = time.monotonic()
        self._status(text)

    def _decide(self, req: dict[str, Any], decision: str, reason: str) -> None:
        try:
            r = self.rpc.call("request.decide", id=str(req["id"]), decision=decision, reason=reason)
            said = f"request #{req['id']}: {r['status']}" + (f" ({r['status_reason']})"
                                                               if r["status"] != "pending" else "")
        except RpcError as e:
            said = f"request #{req['id']}: {e}"
        self._say(said)
        self.reload()

    def action_approve(self) -> None:
        req = self._selected()
        if req is None:
            return

        def done(sure: bool | None) -> None:
            if sure:
                self._decide(req, "approve", "")
            else:
                self._say(f"request #{req['id']}: not approved (press {APPROVE_KEY} on the dialog to approve)")

        self.app.push_screen(ConfirmApproval(req), done)

    def action_deny(self) -> None:
        req = self._selected()
        if req is None:
            return

        def done(reason: str | None) -> None:
            if reason is not None:
                self._decide(req, "deny", reason)

        self.app.push_screen(ReasonModal(f"Deny request #{req['id']} ({_short(req['text'], 40)}): why?"), done)

    def action_revoke(self) -> None:
        """End access granted on request early: the selected decided row, when it is granted access."""
        hist = self.query_one("#history", DataTable)
        if not hist.has_focus or not 0 <= hist.cursor_row < len(self.history):
            self._status("r revokes granted access: choose it in the Decided list (Tab) first")
            return
        req = self.history[hist.cursor_row]
        if req["rule"] != "access-request" or req["status"] != "approved":
            self._status(f"request #{req['id']} is not granted access")
            return

        def done(reason: str | None) -> None:
            if reason is None:
                return
            try:
                r = self.rpc.call("request.revoke", id=str(req["id"]), reason=reason)
                said = f"request #{req['id']}: {r['status_reason']}"
            except RpcError as e:
                said = f"request #{req['id']}: {e}"
            self._say(said)
            self.reload()

        self.app.push_screen(ReasonModal(f"Revoke {req['requester']}'s access to {req['resource']} "
                                         f"(request #{req['id']}): why?"), done)

    def action_back(self) -> None:
        self.app.pop_screen()


class MyRequestsScreen(Screen[None]):
    """The operator's own approval requests and their fate."""

    BINDINGS = [BACK]

    def __init__(self, rpc: RpcClient, focus: int | None = None):
        super().__init__()
        self.rpc = rpc
        self.focus_request = focus  # put the cursor on this request once it is listed (ssh -t bastion review N)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield ListTable(id="mine", cursor_type="row", zebra_stripes=True, age_at=6)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "my requests"
        self.query_one(DataTable).add_columns("#", "Resource", "Command", "Rule", "Status", "Detail", "Age")
        self.reload()  # and then again only when the daemon says the requests changed (the app calls it)
        self.query_one(DataTable).focus()

    def reload(self) -> None:
        try:
            rows = self.rpc.call("requests.mine")["requests"]
        except RpcError:
            rows = []
        self.query_one(ListTable).show([
            Row(str(r["id"]), (f"#{r['id']}", r["resource"], Text(_short(r["text"], 40)), r["rule"], r["status"],
                               Text(_short(r["status_reason"], 40))), timestamp(r["created_at"])) for r in rows])

    def action_back(self) -> None:
        self.app.pop_screen()
