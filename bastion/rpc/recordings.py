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
from bastion.store.reviews import RISKS, ReviewError, ReviewStore
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
        risk = params.get("risk") or None
        if risk is not None and risk not in ("any", *RISKS):
            raise RefusedRequest("bad_request", f"risk= takes one of any, {', '.join(RISKS)}")
        reviewed = {"yes": True, "no": False, "": None}.get(params.get("reviewed", ""), "bad")
        if reviewed == "bad":
            raise RefusedRequest("bad_request", "reviewed= takes yes or no")
        rows = await asyncio.to_thread(
            self.services.store.sessions, PAGE + 1, user=params.get("user") or None,
            resource=params.get("resource") or None, since=since, outcome=params.get("outcome") or None,
            policy=policy, before=before, risk=risk, reviewed=reviewed if isinstance(reviewed, bool) else None)
        items = [_listed(r) for r in rows[:PAGE]]  # one more was read only to know whether there is a next page
        notes = await asyncio.to_thread(self.services.store.session_notes, [i["id"] for i in items])
        for i in items:
            i |= notes.get(i["id"], {"risk": [], "verdict": ""})
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
        notes = ReviewStore(store)
        bookmarks = [b.as_dict() for b in await asyncio.to_thread(notes.bookmarks, row.id)][:200]
        reviews = [r.as_dict() for r in await asyncio.to_thread(notes.reviews, row.id)][:20]
        risk = (await asyncio.to_thread(notes.risks, [row.id]))[row.id]
        return {"session": _pick(row, DETAIL_KEYS), "markers": marks, "approvals": held, "events": said,
                "bookmarks": bookmarks, "reviews": reviews, "risk": risk,
                "more": {"markers": more_markers, "approvals": more_approvals, "events": more_events}}

    async def play(self, params: dict[str, Any]) -> dict[str, Any]:
        row, recording = await self._row(params.get("id"))
        client, ctx = self.client, self.ctx
        if client.opening or client.term_type is None:
            raise RefusedRequest("busy", "a session is already open on this connection")
        client.opening = True
        await asyncio.to_thread(self.services.store.audit, ctx.username, "recording.replay", "ok",
                                resource=row.resource, session_id=row.id, client_addr=ctx.peer)
        reviews = ReviewStore(self.services.store)
        marks = [(b.t, f"bookmark by {b.author}: {b.note}") for b in await asyncio.to_thread(reviews.bookmarks, row.id)]
        try:
            _, made = await play(self.services, client, recording, marks)
        except OSError as e:  # an active session on a node whose disk is not shared, or a vanished file
            raise RefusedRequest("unavailable", f"the recording of {row.id} cannot be read: {e.strerror}") from None
        finally:
            client.opening = False
        for t, note in made:  # `b` in the player: the auditor's, like `b` here
            await self._bookmark(row, t, note)
        kept = f"; {len(made)} bookmark(s) kept" if made else ""
        return {"ok": True, "message": f"replay of {row.id} closed{kept}", "session_id": row.id}

    async def _bookmark(self, row: SessionRecord, t: float, note: str) -> dict[str, Any]:
        ctx = self.ctx
        try:
            b = await asyncio.to_thread(ReviewStore(self.services.store).bookmark, row.id, ctx.username, t, note)
        except ReviewError as e:
            raise RefusedRequest("bad_request", str(e)) from None
        await asyncio.to_thread(self.services.store.audit, ctx.username, "recording.bookmark", "ok",
                                resource=row.resource, session_id=row.id, client_addr=ctx.peer, t=b.t,
                                note=b.note[:500])
        return b.as_dict()

    async def bookmark(self, params: dict[str, Any]) -> dict[str, Any]:
        """``b`` in F5's recording view: a moment (seconds from the start) and a note, kept beside the recording."""
        row, _ = await self._row(params.get("id"))
        t = params.get("t")
        if not isinstance(t, int | float) or isinstance(t, bool):
            raise RefusedRequest("bad_request", "t is seconds from the recording's start")
        return await self._bookmark(row, float(t), params.get("note", ""))

    async def review(self, params: dict[str, Any]) -> dict[str, Any]:
        """A verdict on the whole session (ok, follow-up, incident) with a comment: the newest stands."""
        row, _ = await self._row(params.get("id"))
        ctx = self.ctx
        try:
            r = await asyncio.to_thread(ReviewStore(self.services.store).review, row.id, ctx.username,
                                        params.get("verdict", ""), params.get("comment", ""))
        except ReviewError as e:
            raise RefusedRequest("bad_request", str(e)) from None
        await asyncio.to_thread(self.services.store.audit, ctx.username, "recording.review", r.verdict,
                                resource=row.resource, session_id=row.id, client_addr=ctx.peer,
                                comment=r.comment[:500])
        return r.as_dict()


    async def timeline(self, params: dict[str, Any]) -> dict[str, Any]:
        """One ordered account of a user, a grant or a resource (bastion.audit.timeline), newest last."""
        from bastion.audit.timeline import timeline

        self._auditor()
        user, resource, grant = params.get("user"), params.get("resource"), params.get("grant")
        if grant is not None and (not isinstance(grant, int) or isinstance(grant, bool)):
            raise RefusedRequest("bad_request", "grant is an access request's number")
        if any(v is not None and (not isinstance(v, str) or not v or len(v) > 255) for v in (user, resource)):
            raise RefusedRequest("bad_request", "user and resource are names")
        try:
            entries = await asyncio.to_thread(timeline, self.services.store, user=user, grant=grant,
                                              resource=resource)
        except ValueError as e:
            raise RefusedRequest("bad_request", str(e)) from None
        shown, more = fit([e.as_dict() for e in entries[-2000:]][::-1], 0.8)  # the newest first, as fits
        return {"entries": shown[::-1], "more": more + max(0, len(entries) - 2000)}


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
