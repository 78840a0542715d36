"""Recordings, for auditors: sessions filtered by user, resource, time and outcome; one opened shows its facts, the
policy decisions and approvals beside it, and replays inside this ssh session."""

from __future__ import annotations

import shlex
from typing import Any

from rich.text import Text
from textual.actions import SkipAction
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from bastion.rpc.proto import RpcClient, RpcError
from tui.approvals import ReasonModal, _short
from tui.keys import BACK

FILTER_HELP = ("filter: user=alice resource=web* since=7d outcome=terminated policy=blocked|warned|held|denied "
               "risk=any|blocked|held|denied|terminated|masking|transfers reviewed=no (Enter applies)")


def parse_filter(text: str) -> dict[str, str]:
    """``key=value`` words into RPC parameters; a bare word is a user name."""
    out: dict[str, str] = {}
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    for w in words:
        key, sep, value = w.partition("=")
        if not sep:
            key, value = "user", w
        if key in ("user", "resource", "since", "outcome", "policy", "risk", "reviewed") and value:
            out[key] = value
    return out


def _clock(t: float) -> str:
    t = int(t)
    return f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}" if t >= 3600 else f"{t // 60}:{t % 60:02d}"


class RecordingsScreen(Screen[None]):
    # "/" is a priority binding: the app runs it as the key arrives, before it hands the next keys to the focused
    # widget. As an ordinary binding it ran only once "/" had gone through the list and back up to the app, and
    # keys typed with it ("/user=bob" in one read: a paste, a fast typist on a slow link) had already gone to the
    # list and were lost. End and Home are priority bindings too: the list's own End scrolls without moving the
    # cursor, and the cursor on the last row is what asks the daemon for the next page.
    BINDINGS = [Binding("enter", "open", "Open"), Binding("/", "focus_filter", "Filter", priority=True),
                BACK, Binding("end", "last", "Last", show=False, priority=True),
                Binding("home", "first", "First", show=False, priority=True)]
    AUTO_FOCUS = "#recordings"  # the list, not the filter box above it (which would say it has focus, briefly)

    def __init__(self, rpc: RpcClient):
        super().__init__()
        self.rpc = rpc
        self.rows: list[dict[str, Any]] = []
        self.next = ""  # the daemon's cursor for the page after the rows shown ("": none)
        self.params: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        # no select-all on focus: it runs after a refresh and would eat what is typed right after "/"
        yield Input(placeholder=FILTER_HELP, id="rec-filter", select_on_focus=False)
        yield DataTable(id="recordings", cursor_type="row", zebra_stripes=True)
        yield Static("", id="rec-status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "recordings"
        self.query_one(DataTable).add_columns("Session", "User", "Resource", "Kind", "Mode", "Started (UTC)",
                                              "Duration", "Outcome", "Risk", "Verdict")
        self.reload()

    def reload(self) -> None:
        """The first page of the list (the daemon sends a page at a time: the store may hold millions)."""
        try:
            reply = self.rpc.call("recordings.list", **self.params)
        except RpcError as e:
            self._status(str(e))
            return
        self.rows, self.next = [], ""
        self.query_one(DataTable).clear()
        self._append(reply)

    def _more(self) -> None:
        """The next page, below the rows shown (the cursor reached the last one)."""
        if not self.next:
            return
        try:
            reply = self.rpc.call("recordings.list", **self.params, cursor=self.next)
        except RpcError as e:
            self._status(str(e))
            return
        self._append(reply)

    def _append(self, reply: dict[str, Any]) -> None:
        table = self.query_one(DataTable)
        for r in reply["sessions"]:
            dur = f"{r['duration']:.0f}s" if r["duration"] is not None else "-"
            table.add_row(r["id"], r["user"], r["resource"], r["kind"], r["mode"],
                          (r["started_at"] or "")[:19].replace("T", " "), dur, r["outcome"],
                          ",".join(r.get("risk") or []) or "-", r.get("verdict") or "-", key=r["id"])
        self.rows += reply["sessions"]
        self.next = str(reply.get("next") or "")
        shown = " ".join(f"{k}={v}" for k, v in self.params.items())
        more = " (more below)" if self.next else ""
        self._status(f"{len(self.rows)} session(s){more}" + (f" · {shown}" if shown else "") +
                     " · Enter opens · / filters")

    def action_last(self) -> None:
        """To the last row shown (which asks for the next page, if there is one)."""
        if self.focused is self.query_one("#rec-filter", Input):
            raise SkipAction()  # End in the filter box moves its cursor
        table = self.query_one(DataTable)
        if table.row_count:
            table.move_cursor(row=table.row_count - 1)

    def action_first(self) -> None:
        if self.focused is self.query_one("#rec-filter", Input):
            raise SkipAction()
        self.query_one(DataTable).move_cursor(row=0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "recordings" and self.next and event.cursor_row >= len(self.rows) - 1:
            self._more()

    def _status(self, text: str) -> None:
        self.query_one("#rec-status", Static).update(text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.params = parse_filter(event.value)
        self.reload()
        self.set_focus(self.query_one(DataTable))  # now: a "/" typed next opens a fresh filter

    def action_focus_filter(self) -> None:
        """A fresh filter each time, like a pager's search (the current one is in the status line). Focus moves
        now, not after a refresh (``Widget.focus``), so the keys that follow "/" are the filter's. In the filter
        box "/" is a character like any other."""
        box = self.query_one("#rec-filter", Input)
        if self.focused is box:
            raise SkipAction()  # the key goes on to the box, in order with what was typed before it
        box.value = ""
        self.set_focus(box)

    def on_descendant_focus(self, event: object) -> None:
        if self.focused is self.query_one("#rec-filter", Input):
            self._status("filter: type, Enter applies, Esc goes back to the list")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.app.push_screen(RecordingScreen(self.rpc, str(event.row_key.value)))

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if self.rows and 0 <= table.cursor_row < len(self.rows):
            self.app.push_screen(RecordingScreen(self.rpc, self.rows[table.cursor_row]["id"]))

    def action_back(self) -> None:
        if self.focused is self.query_one("#rec-filter", Input):
            self.set_focus(self.query_one(DataTable))
            return
        self.app.pop_screen()


class RecordingScreen(Screen[None]):
    """One recording: what happened (facts, decisions, approvals, audit events, auditors' bookmarks and verdicts);
    p replays it here, b bookmarks the selected marker's moment, v gives a verdict, t shows the user's timeline."""

    BINDINGS = [Binding("p", "play", "Replay"), Binding("b", "bookmark", "Bookmark"),
                Binding("v", "verdict", "Verdict"), Binding("t", "timeline", "Timeline"),
                BACK]

    def __init__(self, rpc: RpcClient, sid: str):
        super().__init__()
        self.rpc, self.sid = rpc, sid
        self.marks: list[float] = []  # the time of each row of the markers list
        self.user = ""

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static("", id="rec-facts")
        with Horizontal(id="rec-body"):
            with Vertical():
                yield Static("Policy decisions and markers", classes="section")
                yield DataTable(id="rec-markers", cursor_type="row", zebra_stripes=True)
            with Vertical():
                yield Static("Approvals", classes="section")
                yield DataTable(id="rec-approvals", cursor_type="row", zebra_stripes=True)
                yield Static("Audit events", classes="section")
                yield DataTable(id="rec-events", cursor_type="row", zebra_stripes=True)
        yield Static("p: replay here (space pause, ←/→ 5 s, [ ] markers, /text find, q stop)", id="rec-status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"recording {self.sid}"
        self.query_one("#rec-markers", DataTable).add_columns("At", "Marker")
        self.query_one("#rec-approvals", DataTable).add_columns("#", "Command", "Rule", "Status", "Decided by")
        self.query_one("#rec-events", DataTable).add_columns("Time (UTC)", "Actor", "Action", "Outcome")
        try:
            d = self.rpc.call("recording.detail", id=self.sid)
        except RpcError as e:
            self.query_one("#rec-facts", Static).update(str(e))
            return
        s = d["session"]
        facts = [f"{s['user']} on {s['resource']} ({s['kind']}, {s['mode']})",
                 f"from {s['client_addr'] or '?'} · started {(s['started_at'] or '')[:19].replace('T', ' ')} UTC",
                 f"ended: {s['outcome']}" + (f" · {s['message']}" if s["message"] else ""),
                 f"sha256 {s['sha256'] or '(not closed)'}"]
        if s["command"]:
            facts.insert(1, f"command: {_short(s['command'], 100)}")
        self.user = s["user"]
        verdict = (d.get("reviews") or [{}])[0]
        facts.append(f"risk: {', '.join(d.get('risk') or []) or 'none'} · verdict: "
                     + (f"{verdict['verdict']} by {verdict['reviewer']}: {verdict['comment']}" if verdict
                        else "not reviewed"))
        self.query_one("#rec-facts", Static).update(Text("\n".join(facts)))
        more = d.get("more") or {}
        markers = self.query_one("#rec-markers", DataTable)
        rows = [(t, label) for t, label in d["markers"]] + [
            (b["t"], f"bookmark by {b['author']}: {b['note']}") for b in d.get("bookmarks") or []]
        for t, label in sorted(rows, key=lambda r: r[0]):
            self.marks.append(t)
            markers.add_row(_clock(t), Text(_short(label, 90)))
        if more.get("markers"):
            markers.add_row("…", f"{more['markers']} more: the replay has them all ([ ] jump between markers)")
        approvals = self.query_one("#rec-approvals", DataTable)
        for a in d["approvals"]:
            by = ", ".join(f"{x['reviewer']} ({'yes' if x['approve'] else 'no'})" for x in a["decisions"]) or "-"
            approvals.add_row(f"#{a['id']}", _short(a["text"], 40), a["rule"], a["status"], by)
        if more.get("approvals"):
            approvals.add_row("…", f"{more['approvals']} more (bastion audit)", "", "", "")
        events = self.query_one("#rec-events", DataTable)
        for ev in d["events"]:
            events.add_row(ev["ts"][:19].replace("T", " "), ev["actor"], ev["action"], ev["outcome"])
        if more.get("events"):
            events.add_row("…", f"{more['events']} more (bastion audit)", "", "")
        markers.focus()

    def action_play(self) -> None:
        try:
            try:
                with self.app.suspend():
                    r = self.rpc.call("recording.play", id=self.sid)
            except SuspendNotSupported:
                r = self.rpc.call("recording.play", id=self.sid)
        except RpcError as e:
            self.query_one("#rec-status", Static).update(str(e))
            return
        self.query_one("#rec-status", Static).update(str(r.get("message", "")))
        self.app.refresh(layout=True)

    def _say(self, text: str) -> None:
        self.query_one("#rec-status", Static).update(Text(text))

    def action_bookmark(self) -> None:
        """A note at the selected marker's moment (the start when none is selected)."""
        table = self.query_one("#rec-markers", DataTable)
        t = self.marks[table.cursor_row] if self.marks and 0 <= table.cursor_row < len(self.marks) else 0.0

        def done(note: str | None) -> None:
            if note is None:
                return
            try:
                self.rpc.call("recording.bookmark", id=self.sid, t=t, note=note)
                self._say(f"bookmarked {_clock(t)}: {note}")
                table.add_row(_clock(t), Text(_short(f"bookmark (yours): {note}", 90)))
            except RpcError as e:
                self._say(str(e))

        self.app.push_screen(ReasonModal(f"Bookmark {self.sid} at {_clock(t)}: note?"), done)

    def action_verdict(self) -> None:
        def done(text: str | None) -> None:
            if text is None:
                return
            verdict, _, comment = text.partition(" ")
            try:
                r = self.rpc.call("recording.review", id=self.sid, verdict=verdict, comment=comment)
                self._say(f"verdict: {r['verdict']}")
            except RpcError as e:
                self._say(str(e))

        self.app.push_screen(ReasonModal(f"Verdict on {self.sid}: ok | follow-up | incident, then a comment "
                                         "(e.g. follow-up ask alice about the chmod)"), done)

    def action_timeline(self) -> None:
        if self.user:
            self.app.push_screen(TimelineScreen(self.rpc, user=self.user))

    def action_back(self) -> None:
        self.app.pop_screen()


class TimelineScreen(Screen[None]):
    """One ordered account of a user (a grant, a resource): sign-ins, requests, sessions, decisions, observations;
    Enter opens the session of the selected line."""

    BINDINGS = [Binding("enter", "open", "Open session"), BACK]

    def __init__(self, rpc: RpcClient, *, user: str | None = None, grant: int | None = None,
                 resource: str | None = None):
        super().__init__()
        self.rpc, self.who = rpc, {k: v for k, v in (("user", user), ("grant", grant), ("resource", resource))
                                   if v is not None}
        self.entries: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield DataTable(id="timeline", cursor_type="row", zebra_stripes=True)
        yield Static("", id="timeline-status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "timeline of " + " ".join(f"{k} {v}" for k, v in self.who.items())
        table = self.query_one(DataTable)
        table.add_columns("Time (UTC)", "Actor", "Action", "Outcome", "Resource", "What", "Replay")
        try:
            reply = self.rpc.call("timeline", **self.who)
        except RpcError as e:
            self.query_one("#timeline-status", Static).update(str(e))
            return
        self.entries = reply["entries"]
        for x in self.entries:
            table.add_row(x["time"][:19].replace("T", " "), x["actor"], x["action"], x["outcome"],
                          x["resource"] or "", Text(_short(x["what"], 60)), x["replay"] or "")
        more = f" · {reply['more']} older not shown" if reply.get("more") else ""
        self.query_one("#timeline-status", Static).update(f"{len(self.entries)} event(s){more} · Enter opens")
        if self.entries:
            table.move_cursor(row=len(self.entries) - 1)
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if self.entries and 0 <= table.cursor_row < len(self.entries):
            sid = self.entries[table.cursor_row].get("session")
            if sid:
                self.app.push_screen(RecordingScreen(self.rpc, sid))

    def action_back(self) -> None:
        self.app.pop_screen()
