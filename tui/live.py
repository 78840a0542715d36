"""Live sessions, for reviewers and auditors: who is on what right now; observe one read-only; terminate it with a
reason the operator sees.

No push says when a session starts or ends, so the screen asks every POLL seconds; the ages tick here (to the
minute), and a look that finds what is shown already redraws nothing."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from bastion.rpc.proto import RpcClient, RpcError
from tui.approvals import ReasonModal, _short
from tui.keys import BACK
from tui.tables import ListTable, Row

POLL = 5.0  # seconds between looks at the live sessions


class LiveScreen(Screen[None]):
    """Active brokered sessions on this node that this user may watch."""

    BINDINGS = [
        Binding("o", "observe", "Observe (or Enter)"),
        Binding("t", "terminate", "Terminate (reason)"),
        BACK,
    ]

    def __init__(self, rpc: RpcClient):
        super().__init__()
        self.rpc = rpc
        self.sessions: list[dict[str, Any]] = []
        self._sticky_until = 0.0
        self._status_text = ""
        self._more = ""  # how many live sessions the daemon left out of its answer (a frame holds so many)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static("Live sessions", classes="section")
        yield ListTable(id="live", cursor_type="row", zebra_stripes=True, age_at=6)
        yield Static("", id="live-status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "live sessions"
        self.query_one(DataTable).add_columns("Session", "User", "Resource", "Kind", "Mode", "Command", "Age",
                                              "Observers", "Node")
        self.reload()
        self.set_interval(POLL, self.reload)  # the one timer of this screen (its list's ages have their own)
        self.query_one(DataTable).focus()

    def reload(self) -> None:
        try:
            reply = self.rpc.call("sessions.live")
            self.sessions = reply["sessions"]
            self._more = f" · {reply['more']} more not listed" if reply.get("more") else ""
        except RpcError as e:
            self._status(f"cannot list live sessions: {e}")
            return
        now = time.time()
        self.query_one(ListTable).show([
            Row(s["id"], (s["id"], s["user"], s["resource"], s["kind"],
                          s["mode"] + (" · moderated" if s.get("moderated") else ""), _short(s["command"], 30),
                          ", ".join(s["observers"]) or "-", s.get("node", "")),
                s.get("started") or now - float(s["age"])) for s in self.sessions])
        if time.monotonic() > self._sticky_until:  # an answer to the user stays a while
            self._status(("Enter: observe (read-only; q stops) · t: terminate with a reason" if self.sessions
                          else "No live session you may watch.") + self._more)

    def _selected(self) -> dict[str, Any] | None:
        table = self.query_one(DataTable)
        if not self.sessions or not 0 <= table.cursor_row < len(self.sessions):
            return None
        return self.sessions[table.cursor_row]

    def _status(self, text: str, *, sticky: bool = False) -> None:
        if sticky:
            self._sticky_until = time.monotonic() + 5
        if text != self._status_text:  # an unchanged line is not redrawn
            self._status_text = text
            self.query_one("#live-status", Static).update(text)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_observe()

    def action_observe(self) -> None:
        s = self._selected()
        if s is None:
            return
        try:
            try:
                with self.app.suspend():
                    r = self.rpc.call("session.observe", id=s["id"])
            except SuspendNotSupported:  # headless (tests)
                r = self.rpc.call("session.observe", id=s["id"])
        except RpcError as e:
            self._status(f"{s['id']}: {e}", sticky=True)
            return
        self.app.refresh(layout=True)
        self.reload()
        self._status(str(r.get("message", "")), sticky=True)

    def action_terminate(self) -> None:
        s = self._selected()
        if s is None:
            return

        def done(reason: str | None) -> None:
            if reason is None:
                return
            try:
                message = str(self.rpc.call("session.terminate", id=s["id"], reason=reason).get("message", ""))
            except RpcError as e:
                message = f"{s['id']}: {e}"
            self.reload()
            self._status(message, sticky=True)

        self.app.push_screen(ReasonModal(f"Terminate {s['user']}@{s['resource']} ({s['id']}): the operator sees "
                                         "this reason"), done)

    def action_back(self) -> None:
        self.app.pop_screen()
