"""Auditors' work on recordings, kept beside them: bookmarks (a moment and a note), verdicts on whole sessions (ok,
follow-up, incident, with a comment), and each session's risk, read from what the store already knows of it.

Nothing here touches a recording: its file is hashed and chained when it closes, and ``bastion audit verify`` must
keep passing; players and exports merge the bookmarks in as markers when they show a recording. Each write is also
an audit event (the callers', who know the auditor's connection).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import aliased

from bastion.store.db import Store, _aware, now
from bastion.store.models import ApprovalRequest, AuditEvent, Bookmark, Recording, Session, SessionReview

VERDICTS = ("ok", "follow-up", "incident")
# what makes a session worth an auditor's look, from what the store knows of it (the same facts its markers say)
RISKS = ("blocked", "held", "denied", "terminated", "masking", "transfers")
MAX_NOTE = 2000


class ReviewError(ValueError):
    """A bookmark or a verdict that cannot be kept as given (unknown verdict, a note that is not text)."""


@dataclass(frozen=True)
class BookmarkRecord:
    id: int
    session_id: str
    author: str
    t: float
    note: str
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "session_id": self.session_id, "author": self.author, "t": self.t, "note": self.note,
                "at": self.at.isoformat()}


@dataclass(frozen=True)
class ReviewRecord:
    id: int
    session_id: str
    reviewer: str
    verdict: str
    comment: str
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "session_id": self.session_id, "reviewer": self.reviewer, "verdict": self.verdict,
                "comment": self.comment, "at": self.at.isoformat()}


def _text(value: object, what: str, *, required: bool) -> str:
    if not isinstance(value, str):
        raise ReviewError(f"the {what} must be text")
    value = value.strip()
    if required and not value:
        raise ReviewError(f"give a {what}")
    if len(value) > MAX_NOTE or not value.replace("\n", " ").isprintable():
        raise ReviewError(f"the {what} must be printable text (lines allowed), at most {MAX_NOTE} characters")
    return value


def risk_condition(risk: str) -> Any:
    """A condition on ``Session`` rows: the session has this risk (``any``: one of :data:`RISKS`)."""
    blocked = exists().where(AuditEvent.session_id == Session.id, AuditEvent.outcome.in_(("block", "blocked")))
    held = exists().where(ApprovalRequest.session_id == Session.id)
    rec = aliased(Recording)  # the listing joins Recording already: its own copy, correlated on Session only
    conditions = {
        "blocked": blocked,
        "held": held,
        "denied": held.where(ApprovalRequest.status == "denied"),
        "terminated": Session.outcome.in_(("terminated", "unmoderated")),
        "masking": exists().where(AuditEvent.session_id == Session.id, AuditEvent.outcome.in_(("block", "blocked")),
                                  AuditEvent.detail["rule"].as_string().like("masking-%")),
        "transfers": or_(Session.mode == "sftp", exists().where(rec.session_id == Session.id,
                                                              rec.path.like("%.jsonl"))),
    }
    if risk == "any":
        return or_(*conditions.values())
    if risk not in conditions:
        raise ReviewError(f"risk must be one of any, {', '.join(RISKS)}")
    return conditions[risk]


def reviewed_condition(reviewed: bool) -> Any:
    cond = exists().where(SessionReview.session_id == Session.id)
    return cond if reviewed else ~cond


class ReviewStore:
    """Bookmarks, verdicts and risks in the store."""

    def __init__(self, store: Store):
        self.store = store

    def bookmark(self, sid: str, author: str, t: float, note: str) -> BookmarkRecord:
        if not isinstance(t, int | float) or not 0 <= t < 10 * 365 * 86400:
            raise ReviewError("the moment must be seconds from the recording's start")
        note = _text(note, "note", required=True)
        with self.store.tx() as s:
            if s.get(Session, sid) is None:
                raise ReviewError(f"no session {sid!r}")
            row = Bookmark(session_id=sid, author=author, t=float(t), note=note, at=now())
            s.add(row)
            s.flush()
            return _bookmark(row)

    def bookmarks(self, sid: str) -> list[BookmarkRecord]:
        with self.store.tx() as s:
            return [_bookmark(b) for b in s.scalars(select(Bookmark).where(Bookmark.session_id == sid)
                                                    .order_by(Bookmark.t, Bookmark.id))]

    def review(self, sid: str, reviewer: str, verdict: str, comment: str = "") -> ReviewRecord:
        if verdict not in VERDICTS:
            raise ReviewError(f"the verdict must be one of {', '.join(VERDICTS)}")
        comment = _text(comment, "comment", required=verdict != "ok")
        with self.store.tx() as s:
            if s.get(Session, sid) is None:
                raise ReviewError(f"no session {sid!r}")
            row = SessionReview(session_id=sid, reviewer=reviewer, verdict=verdict, comment=comment, at=now())
            s.add(row)
            s.flush()
            return _review(row)

    def reviews(self, sid: str) -> list[ReviewRecord]:
        """Newest first: the first is the verdict that stands."""
        with self.store.tx() as s:
            return [_review(r) for r in s.scalars(select(SessionReview).where(SessionReview.session_id == sid)
                                                  .order_by(SessionReview.id.desc()))]

    def risks(self, sids: list[str]) -> dict[str, list[str]]:
        """Each session's risks (those of :data:`RISKS` it has), in one query per risk for the whole list."""
        out: dict[str, list[str]] = {sid: [] for sid in sids}
        if not sids:
            return out
        with self.store.tx() as s:
            for risk in RISKS:
                for sid in s.scalars(select(Session.id).where(Session.id.in_(sids), risk_condition(risk))):
                    out[sid].append(risk)
        return out

    def verdicts(self, sids: list[str]) -> dict[str, str]:
        """The standing verdict of each session that has one."""
        out: dict[str, str] = {}
        if not sids:
            return out
        with self.store.tx() as s:
            for r in s.scalars(select(SessionReview).where(SessionReview.session_id.in_(sids))
                               .order_by(SessionReview.id)):
                out[r.session_id] = r.verdict
        return out


def _bookmark(b: Bookmark) -> BookmarkRecord:
    return BookmarkRecord(b.id, b.session_id, b.author, b.t, b.note, _aware(b.at))


def _review(r: SessionReview) -> ReviewRecord:
    return ReviewRecord(r.id, r.session_id, r.reviewer, r.verdict, r.comment, _aware(r.at))
