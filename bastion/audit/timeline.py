"""One ordered account of a person, a grant or a resource: sign-ins, access requests and grants, sessions of every
kind (ssh, psql, kubectl, transfers), decisions, approvals, observations, moderation and terminations, each with
where to replay it (``bastion replay SESSION --from T``).

It is read from the audit chain, which already holds every one of these facts in order (its ``seq``), joined with
the sessions (for replay offsets) and the approval requests (whose requester a grant's decisions name). A grant's
timeline is everything done under it: the request, its decisions, and every session whose ``session.start`` names
the grant, with all that happened in them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from bastion.store.db import Store, _aware
from bastion.store.models import ApprovalRequest, AuditEvent, Session

MAX_EVENTS = 20000


@dataclass(frozen=True)
class Entry:
    """One line of a timeline."""

    time: datetime
    seq: int
    actor: str
    action: str
    outcome: str
    resource: str | None
    session: str | None
    what: str
    replay: str | None  # ``SESSION --from T``, for `bastion replay` (None: no recording to show it in)

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "seq": self.seq, "actor": self.actor, "action": self.action,
                "outcome": self.outcome, "resource": self.resource, "session": self.session, "what": self.what,
                "replay": self.replay}


def _what(ev: AuditEvent) -> str:
    """The event in words, from the details that matter for it (never more than the audit event holds)."""
    d = ev.detail or {}
    parts = [f"{k}={d[k]}" for k in ("mode", "user", "request_id", "grant", "rule", "verdict", "status", "reason",
                                      "why", "exit_status") if d.get(k) not in (None, "")]
    text = d.get("text") or d.get("command")
    if text:
        parts.append(str(text)[:300].replace("\n", "\\n"))
    return " ".join(parts)


def _offset(t: float) -> str:
    t = max(0, int(t))
    return f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}" if t >= 3600 else f"{t // 60}:{t % 60:02d}"


def timeline(store: Store, *, user: str | None = None, grant: int | None = None, resource: str | None = None,
             since: datetime | None = None) -> list[Entry]:
    """The entries for one person, one grant (an access request's number) or one resource, oldest first."""
    if sum(x is not None for x in (user, grant, resource)) != 1:
        raise ValueError("give exactly one of user, grant, resource")
    with store.tx() as s:
        q = select(AuditEvent)
        if since is not None:
            q = q.where(AuditEvent.ts >= since)
        sessions: dict[str, datetime] = {}
        if resource is not None:
            q = q.where(AuditEvent.resource == resource)
        elif user is not None:
            own = select(Session.id).where(Session.user == user)
            q = q.where(or_(AuditEvent.actor == user, AuditEvent.session_id.in_(own)))
        events = list(s.scalars(q.order_by(AuditEvent.seq).limit(MAX_EVENTS)))
        if user is not None:  # decisions on this person's requests (made by others, in no session of theirs)
            mine = {r for (r,) in s.execute(select(ApprovalRequest.id).where(ApprovalRequest.requester == user))}
            seen = {e.id for e in events}
            extra = select(AuditEvent).where(AuditEvent.action.like("approval.%") | AuditEvent.action.like("access.%"))
            if since is not None:
                extra = extra.where(AuditEvent.ts >= since)
            events += [e for e in s.scalars(extra) if e.id not in seen and (e.detail or {}).get("request_id") in mine]
        if grant is not None:
            events = _under_grant(s, grant, since)
        ids = {e.session_id for e in events if e.session_id}
        for sid, started in s.execute(select(Session.id, Session.started_at).where(Session.id.in_(ids))):
            sessions[sid] = _aware(started)
        return [_entry(e, sessions) for e in sorted(events, key=lambda e: e.seq or 0)]


def _under_grant(s: Any, grant: int, since: datetime | None) -> list[AuditEvent]:
    """The grant's request and decisions, and every event of the sessions opened under it."""
    q = select(AuditEvent)
    if since is not None:
        q = q.where(AuditEvent.ts >= since)
    about = [e for e in s.scalars(q.where(or_(AuditEvent.action.like("approval.%"),
                                               AuditEvent.action.like("access.%"),
                                               AuditEvent.action == "session.start")))
             if (e.detail or {}).get("request_id") == grant or (e.detail or {}).get("grant") == grant]
    sids = [e.session_id for e in about if e.action == "session.start" and e.session_id]
    inside = list(s.scalars(q.where(AuditEvent.session_id.in_(sids)))) if sids else []
    return list({e.id: e for e in (*about, *inside)}.values())


def _entry(ev: AuditEvent, sessions: dict[str, datetime]) -> Entry:
    started = sessions.get(ev.session_id or "")
    ts = _aware(ev.ts)
    replay = f"{ev.session_id} --from {_offset((ts - started).total_seconds())}" if started is not None else None
    return Entry(ts, ev.seq or 0, ev.actor, ev.action, ev.outcome, ev.resource, ev.session_id, _what(ev), replay)


def render(entries: Iterable[Entry]) -> str:
    """The timeline as lines for a terminal: time, who, what, where to replay it."""
    out = []
    for e in entries:
        where = f" [{e.resource}]" if e.resource else ""
        replay = f"  (bastion replay {e.replay})" if e.replay else ""
        out.append(f"{e.time:%Y-%m-%d %H:%M:%S}  {e.actor:<12} {e.action} {e.outcome}{where} {e.what}{replay}"
                   .rstrip())
    return "\n".join(out) + ("\n" if out else "")
