"""The menu's recordings handlers, for auditors: list with filters, one session's detail (markers, approvals,
audit events), and a replay on the auditor's own terminal."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bastion.context import ConnectionContext
from bastion.rpc.budget import fit
from bastion.rpc.server import RefusedRequest
from bastion.services import Services
from bastion.sessions.client import ClientSide
from bastion.sessions.player import play
from bastion.store.db import POLICY_FILTERS
from bastion.store.rows import SessionRecord, cursor_of, parse_cursor
from bastion.store.when import parse_when
from recorder.asciicast import CastError, iter_events
from recorder.storage import StorageError

log = logging.getLogger(__name__)

PAGE = 100  # sessions per reply at most: a screenful or two
LIST_COMMAND = 500  # characters of a session's command in the list
LIST_KEYS = ("id", "user", "resource", "kind", "mode", "command", "started_at", "duration", "outcome", "exit_status")
DETAIL_KEYS = ("id", "user", "resource", "kind", "mode", "command", "client_addr", "started_at", "ended_at",
               "duration", "outcome", "exit_status", "message", "sha256")


class RecordingHandlers:
    """Recordings, for the auditors of one connection."""

    def __init__(self, services: Services, ctx: ConnectionContext, client: ClientSide):
        self.services, self.ctx, self.client = services, ctx, client

    def _auditor(self) -> None:
        if not self.ctx.grants.audit:
            raise RefusedRequest("forbidden", "recordings are for auditors")

    async def listing(self, params: dict[str, Any]) -> dict[str, Any]:
        self._auditor()
        if any(not isinstance(v, str) or len(v) > 255 for v in params.values()):
            raise RefusedRequest("bad_request", "filters are strings of at most 255 characters")
        since = None
        if params.get("since"):
            try:
                since = parse_when(str(params["since"]))
            except (ValueError, TypeError) as e:
                raise RefusedRequest("bad_request", str(e)) from None
        policy = params.get("policy") or None
        if policy is not None and policy not in POLICY_FILTERS:
            raise RefusedRequest("bad_request", f"policy= takes one of {', '.join(POLICY_FILTERS)}")
        before = None
        if params.get("cursor"):
            try:
                before = parse_cursor(params["cursor"])
            except ValueError:
                raise RefusedRequest("bad_request", "cursor is not one this list gave") from None
        rows = await asyncio.to_thread(
            self.services.store.sessions, PAGE + 1, user=params.get("user") or None,
            resource=params.get("resource") or None, since=since, outcome=params.get("outcome") or None,
            policy=policy, before=before)
        items = [_listed(r) for r in rows[:PAGE]]  # one more was read only to know whether there is a next page
        page, _ = fit(items, 0.5)  # long commands or names: the page ends before the frame limit
        more = len(page) < len(rows)
        return {"sessions": page, "next": cursor_of(rows[len(page) - 1]) if more else ""}

    async def _row(self, sid: Any) -> tuple[SessionRecord, str]:
        """The session's row and its recording as a local file (a bucket's object is fetched and checked)."""
        self._auditor()
        store = self.services.store
        row = await asyncio.to_thread(store.session, str(sid)[:64]) if isinstance(sid, str) else None
        if row is None or not row.recording:
            raise RefusedRequest("not_found", f"no recording of session {str(sid)[:64]!r}")
        if row.outcome == "active":
            return row, row.recording  # being written here (a live session's file is local)
        try:
            path = await asyncio.to_thread(self.services.storage.local, row.recording, row.sha256)
        except (OSError, StorageError) as e:
            log.warning("recording of session %s unavailable: %s", row.id, e)
            raise RefusedRequest("unavailable", f"the recording of {row.id} cannot be read: {e}") from None
        return row, str(path)

    async def detail(self, params: dict[str, Any]) -> dict[str, Any]:
        row, recording = await self._row(params.get("id"))
        store = self.services.store

        def markers() -> tuple[list[list[Any]], int]:
            out: list[list[Any]] = []
            total = 0
            try:
                for ev in iter_events(recording):
                    if ev.code == "m":
                        total += 1
                        if len(out) < 2000:
                            out.append([round(ev.time, 3), ev.data[:500]])
            except (CastError, OSError):  # an active session on a node whose disk is not shared
                pass
            return out, total

        approvals = await asyncio.to_thread(self.services.approvals.db.recent, session_id=row.id, limit=200)
        events = await asyncio.to_thread(store.audit_events, 200, session_id=row.id)
        found, total = await asyncio.to_thread(markers)
        marks, _ = fit(found, 0.4)
        more_markers = total - len(marks)
        held, more_approvals = fit([{"id": a.id, "text": a.text[:500], "rule": a.rule, "status": a.status,
                                     "status_reason": a.status_reason[:300],
                                     "decisions": [{"reviewer": d.reviewer, "approve": d.approve,
                                                    "reason": d.reason[:300]} for d in a.decisions]}
                                    for a in approvals], 0.2)
        said, more_events = fit([{"ts": e.ts.isoformat(), "actor": e.actor, "action": e.action,
                                  "outcome": e.outcome} for e in reversed(events)], 0.1)
        # the rest is in the replay (markers) and in `bastion audit` (approvals, events): the counts say so
        return {"session": _pick(row, DETAIL_KEYS), "markers": marks, "approvals": held, "events": said,
                "more": {"markers": more_markers, "approvals": more_approvals, "events": more_events}}

    async def play(self, params: dict[str, Any]) -> dict[str, Any]:
        row, recording = await self._row(params.get("id"))
        client, ctx = self.client, self.ctx
        if client.opening or client.term_type is None:
            raise RefusedRequest("busy", "a session is already open on this connection")
        client.opening = True
        await asyncio.to_thread(self.services.store.audit, ctx.username, "recording.replay", "ok",
                                resource=row.resource, session_id=row.id, client_addr=ctx.peer)
        try:
            await play(self.services, client, recording)
        except OSError as e:  # an active session on a node whose disk is not shared, or a vanished file
            raise RefusedRequest("unavailable", f"the recording of {row.id} cannot be read: {e.strerror}") from None
        finally:
            client.opening = False
        return {"ok": True, "message": f"replay of {row.id} closed", "session_id": row.id}


def _listed(r: SessionRecord) -> dict[str, Any]:
    """A session as F5 lists it (the whole command is in its detail)."""
    item = _pick(r, LIST_KEYS) | {"recorded": bool(r.recording)}
    if r.command is not None:
        item["command"] = r.command[:LIST_COMMAND]
    return item


def _pick(row: SessionRecord, keys: tuple[str, ...]) -> dict[str, Any]:
    """Some fields of a session in their JSON form (times as ISO 8601 strings)."""
    wire = row.as_dict()
    return {k: wire[k] for k in keys}
