"""The operator's menu: permitted resources, type-to-filter, Enter opens, q quits."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Static

from bastion.rpc.proto import RpcClient, RpcError
from tui.approvals import ApprovalsScreen, MyRequestsScreen, QueueChanged, ReasonModal, fmt_duration
from tui.live import LiveScreen
from tui.login import LoginScreen
from tui.recordings import RecordingsScreen

log = logging.getLogger(__name__)


class Notice(Message):
    """The daemon has something to tell the operator (posted from the RPC reader thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class Closing(Message):
    """The bastion closes this connection (posted from the RPC reader thread)."""


def access_note(r: dict[str, Any]) -> str:
    """What the menu says of a resource granted on request: ask for it, or until when it is granted."""
    if r.get("access") == "request":
        return "[on request] "
    if r.get("access") == "granted" and r.get("until"):
        return f"[granted until {time.strftime('%H:%M', time.gmtime(float(r['until'])))} UTC] "
    return ""


def describe_outcome(result: dict[str, Any]) -> str:
    """One line on how a brokered session ended."""
    msg = str(result.get("message", ""))
    if result.get("ok") and result.get("duration") is not None:
        msg += f" after {fmt_duration(float(result['duration']))}"
    if result.get("session_id"):
        msg += f" · recorded as {result['session_id']}"
    return msg


class MenuApp(App[int]):
    """The session process's Textual app. Holds no secret; asks the daemon for everything."""

    CSS_PATH = "menu.tcss"
    TITLE = "bastion"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit_menu", "Quit"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("enter", "open", "Open", show=True),
        Binding("f2", "approvals", "Approvals"),
        Binding("f3", "my_requests", "My requests"),
        Binding("f4", "live", "Live sessions"),
        Binding("f5", "recordings", "Recordings"),
    ]

    def __init__(self, rpc: RpcClient):
        super().__init__()
        self.rpc = rpc
        self.resources: list[dict[str, Any]] = []
        self.filter = ""
        self.user = ""
        self.reviewer = False
        self.auditor = False
        self._push_lock = threading.Lock()
        self._push_due = False  # a queue.changed push is posted and not handled yet
        self._notice_text = ""
        rpc.on_event = self._on_rpc_event

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static("", id="filter")
        yield DataTable(id="resources", cursor_type="row", zebra_stripes=True)
        yield Static("", id="notice")
        yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Resource", "Kind", "Description")
        try:
            hello = self.rpc.call("hello")
        except (RpcError, OSError) as e:
            self._status(f"cannot reach the bastion: {e}")
            return
        if hello.get("login_required"):
            self.push_screen(LoginScreen(self.rpc), self._signed_in)
            return
        self._load(hello)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Before sign-in only quitting makes sense (the daemon refuses the rest anyway)."""
        signing_in = isinstance(self.screen, LoginScreen)
        return not (signing_in and action in ("open", "approvals", "my_requests", "clear_filter", "live",
                                                "recordings"))

    def _signed_in(self, hello: dict[str, Any] | None) -> None:
        if hello is None:  # the user quit the sign-in
            self.exit(return_code=1)
            return
        self._load(hello)

    def _load(self, hello: dict[str, Any]) -> None:
        table = self.query_one(DataTable)
        try:
            self.resources = self.rpc.call("resources.list")["resources"]
        except (RpcError, OSError) as e:
            self._status(f"cannot reach the bastion: {e}")
            return
        self.user = hello["user"]
        self.reviewer = bool(hello["review"])
        self.auditor = bool(hello.get("audit"))
        self._update_notice()
        self.sub_title = f"{hello['user']} · roles: {', '.join(hello['roles']) or 'none'}"
        self._refresh_table()
        if not self.resources:
            self._status("You may not open any resource. Ask an admin to add you to a role.")
        else:
            self._status("Type to filter · ↑↓ to choose · Enter to open · q to quit")
        table.focus()
        start = hello.get("start")
        if isinstance(start, dict) and start.get("screen") == "approvals" and self.reviewer:
            request = start.get("request")  # ssh -t bastion review N: the queue, on request N
            self.push_screen(ApprovalsScreen(self.rpc, focus=request if isinstance(request, int) else None))

    # -- filtering --------------------------------------------------------------------------------------
    def visible_resources(self) -> list[dict[str, Any]]:
        """Resources whose name, kind or description contains the filter text (case-insensitive)."""
        f = self.filter.lower()
        return [r for r in self.resources
                if not f or f in r["name"].lower() or f in r["kind"].lower() or f in r["description"].lower()]

    def _refresh_table(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for r in self.visible_resources():
            table.add_row(r["name"], r["kind"], Text(access_note(r) + r["description"]), key=r["name"])  # no markup
        self.query_one("#filter", Static).update(f"Filter: {self.filter}▏" if self.filter else "")

    def on_key(self, event: events.Key) -> None:
        if self.screen is not self.screen_stack[0]:
            return
        if event.key == "backspace" and self.filter:
            self.filter = self.filter[:-1]
        elif event.character and event.is_printable and not (event.character == "q" and not self.filter):
            self.filter += event.character
        else:
            return
        event.stop()
        event.prevent_default()
        self._refresh_table()

    def action_clear_filter(self) -> None:
        self.filter = ""
        self._refresh_table()

    def action_quit_menu(self) -> None:
        self.exit(0)

    # -- approvals ----------------------------------------------------------------------------------------
    def _on_rpc_event(self, msg: dict[str, Any]) -> None:
        """Called on the RPC reader thread: hand over to the app's loop (post_message is thread-safe). Pushes that
        come while one waits to be handled are that one: the reload it causes reads them all."""
        if msg.get("event") == "queue.changed":
            with self._push_lock:
                due, self._push_due = self._push_due, True
            if not due:
                self.post_message(QueueChanged())
        elif msg.get("event") == "close":
            self.post_message(Closing())
        elif msg.get("event") == "notice":
            data = msg.get("data")
            text = data.get("text") if isinstance(data, dict) else None
            if isinstance(text, str) and text:
                self.post_message(Notice(text[:300]))

    def on_notice(self, message: Notice) -> None:
        """The bastion's word to the operator (a coming idle timeout): shown over whatever screen is up."""
        self.notify(message.text, title="bastion", severity="warning", timeout=120)

    def on_closing(self, message: Closing) -> None:
        """The bastion closes the connection (no input for too long): leave now, over whatever screen is up, so
        that Textual gives the terminal back as it found it (alternate screen left, cursor shown, mouse reporting
        and bracketed paste off) before the daemon prints why below it. Killed instead, the menu stayed drawn
        with the message over its second row. Not 0: the connection did not end by the operator's choice."""
        self.exit(return_code=1)

    def on_queue_changed(self, message: QueueChanged) -> None:
        """Approval requests changed: one ``queue.list`` for the notice and an open queue, and the operator's own
        requests if they are open. Nothing else reloads them."""
        with self._push_lock:
            self._push_due = False  # a push from now on is news: it is handled after this one
        if not self.screen_stack:  # a push that arrives while the app shuts down
            return
        q = self._update_notice()
        for screen in self.screen_stack:
            if isinstance(screen, ApprovalsScreen) and q is not None:
                screen.show(q)
            elif isinstance(screen, MyRequestsScreen):
                screen.reload()

    def _update_notice(self) -> dict[str, Any] | None:
        """The reviewer's notice of waiting requests; the ``queue.list`` answer it was made from."""
        if not self.reviewer:
            return None
        try:
            q: dict[str, Any] = self.rpc.call("queue.list")
        except RpcError:
            return None
        n = len(q["pending"])
        text = f"{n} request{'s' if n != 1 else ''} await{'s' if n == 1 else ''} your review — F2" if n else ""
        if text != self._notice_text:
            self._notice_text = text
            self.query_one("#notice", Static).update(text)
        return q

    def action_approvals(self) -> None:
        if not self.reviewer:
            self._status("You have no reviewer role.")
            return
        if not isinstance(self.screen, ApprovalsScreen):
            self.push_screen(ApprovalsScreen(self.rpc))

    def action_live(self) -> None:
        if not (self.reviewer or self.auditor):
            self._status("Live sessions are for reviewers and auditors.")
            return
        if not isinstance(self.screen, LiveScreen):
            self.push_screen(LiveScreen(self.rpc))

    def action_recordings(self) -> None:
        if not self.auditor:
            self._status("Recordings are for auditors.")
            return
        if not isinstance(self.screen, RecordingsScreen):
            self.push_screen(RecordingsScreen(self.rpc))

    def action_my_requests(self) -> None:
        if not isinstance(self.screen, MyRequestsScreen):
            self.push_screen(MyRequestsScreen(self.rpc))

    def _status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    # -- opening ----------------------------------------------------------------------------------------
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.open_resource(str(event.row_key.value))

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        rows = self.visible_resources()
        if rows and 0 <= table.cursor_row < len(rows):
            self.open_resource(rows[table.cursor_row]["name"])

    def open_resource(self, name: str) -> None:
        """Hand the terminal to the brokered session; the daemon relays it and replies when it ends. A resource
        granted on request first asks why (the reviewers see it); the daemon then waits for them."""
        r = next((x for x in self.resources if x["name"] == name), None)
        if r is not None and r.get("access") == "request":
            def asked(reason: str | None) -> None:
                if reason is not None and reason.strip():
                    self._open(name, reason.strip())
                elif reason is not None:
                    self._status(f"{name}: give a reason: the reviewers decide on it")

            self.push_screen(ReasonModal(f"Access to {name} needs a reviewer's approval (it lasts "
                                         f"{fmt_duration(float(r.get('ttl') or 0))}). Why do you need it?"), asked)
            return
        self._open(name, "")

    def _open(self, name: str, reason: str) -> None:
        log.info("opening %s", name)
        params = {"name": name, **({"reason": reason} if reason else {})}
        try:
            try:
                with self.suspend():
                    result = self.rpc.call("resource.open", **params)
            except SuspendNotSupported:  # headless (tests): no terminal to hand over
                result = self.rpc.call("resource.open", **params)
        except RpcError as e:
            self._status(f"{name}: {e}")
            return
        self._status(describe_outcome(result))
        self.refresh(layout=True)
        try:  # a grant may have come or gone
            self.resources = self.rpc.call("resources.list")["resources"]
            self._refresh_table()
        except RpcError:
            pass
