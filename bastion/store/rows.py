"""What the store's reads hand to the rest of the bastion: frozen records with typed fields, detached from the
database session (the ORM rows of :mod:`bastion.store.models` never leave the store's transactions).

Named ``...Record`` so as not to be taken for the ORM models (``Session``, ``ApprovalRequest``, ...) or for a policy
:class:`policies.engine.Decision`. Times are timezone-aware UTC datetimes. Where a record goes out as JSON (the menu's
RPC replies, the CLI's ``--json``, the audit report), ``as_dict()`` gives its wire form: times as ISO 8601 strings,
sequences as lists, keys in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["AccessGrant", "BindingRecord", "BoundKey", "DecisionRecord", "RequestRecord", "SearchHit",
           "SessionRecord"]


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


@dataclass(frozen=True)
class SessionRecord:
    """A brokered session with its recording: ``recording`` is a local path or an ``s3://`` reference (None if the
    session has no recording row), ``sha256`` its hash once the session closed."""

    id: str
    user: str
    resource: str
    kind: str
    mode: str  # interactive | exec
    command: str | None
    client_addr: str
    node: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str  # active, exited, terminated, interrupted, ...
    exit_status: int | None
    message: str
    recording: str | None
    sha256: str | None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (to the millisecond); None while the session is active."""
        if self.started_at and self.ended_at:
            return round((self.ended_at - self.started_at).total_seconds(), 3)
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "user": self.user, "resource": self.resource, "kind": self.kind, "mode": self.mode,
            "command": self.command, "client_addr": self.client_addr, "node": self.node,
            "started_at": _iso(self.started_at), "ended_at": _iso(self.ended_at), "duration": self.duration,
            "outcome": self.outcome, "exit_status": self.exit_status, "message": self.message,
            "recording": self.recording, "sha256": self.sha256,
        }


@dataclass(frozen=True)
class DecisionRecord:
    """One reviewer's decision on an approval request."""

    reviewer: str
    approve: bool
    reason: str
    ts: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"reviewer": self.reviewer, "approve": self.approve, "reason": self.reason, "ts": _iso(self.ts)}


@dataclass(frozen=True)
class RequestRecord:
    """An approval request (a held command, or access to a resource: ``rule`` is then ``access-request``) with its
    decisions, oldest first."""

    id: int
    requester: str
    resource: str
    session_id: str
    text: str
    rule: str
    reason: str
    approvals_needed: int
    approver_roles: tuple[str, ...]
    status: str  # pending, or one of the final statuses (bastion.store.approvals.FINAL)
    status_reason: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decisions: tuple[DecisionRecord, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "requester": self.requester, "resource": self.resource, "session_id": self.session_id,
            "text": self.text, "rule": self.rule, "reason": self.reason, "approvals_needed": self.approvals_needed,
            "approver_roles": list(self.approver_roles), "status": self.status, "status_reason": self.status_reason,
            "created_at": _iso(self.created_at), "expires_at": _iso(self.expires_at),
            "decided_at": _iso(self.decided_at), "decisions": [d.as_dict() for d in self.decisions],
        }


@dataclass(frozen=True)
class AccessGrant:
    """Access to a resource granted on request: the approved request, and when the access ends (a POSIX time)."""

    request: RequestRecord
    until: float


@dataclass(frozen=True)
class BoundKey:
    """The live binding of an SSH key to an OIDC identity: who a login with that key is."""

    binding: int  # the key binding's id
    name: str
    groups: tuple[str, ...]  # as of the identity's last OIDC login
    issuer: str | None
    subject: str | None
    expires_at: datetime | None


@dataclass(frozen=True)
class BindingRecord:
    """A key binding as ``bastion keys list`` shows it; ``state`` is active, expired or revoked."""

    id: int
    user: str
    issuer: str | None
    subject: str | None
    fingerprint: str
    created_at: datetime
    expires_at: datetime | None
    state: str
    last_used_at: datetime | None
    client_addr: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "user": self.user, "issuer": self.issuer, "subject": self.subject,
            "fingerprint": self.fingerprint, "created_at": _iso(self.created_at), "expires_at": _iso(self.expires_at),
            "state": self.state, "last_used_at": _iso(self.last_used_at), "client_addr": self.client_addr,
        }


@dataclass(frozen=True)
class SearchHit:
    """A line of a recording that matched a search: ``t`` is its offset in seconds, ``kind`` ``screen`` (what the
    operator saw) or ``marker`` (a judged command); the session's user and resource are empty if it is gone."""

    session: str
    user: str
    resource: str
    started_at: datetime | None
    t: float
    kind: str
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"session": self.session, "user": self.user, "resource": self.resource,
                "started_at": _iso(self.started_at), "t": self.t, "kind": self.kind, "text": self.text}


def cursor_of(row: SessionRecord) -> str:
    """Where a page of sessions ended, for asking for the next one (opaque to the menu)."""
    return f"{row.started_at.isoformat()}|{row.id}"


def parse_cursor(text: str) -> tuple[datetime, str]:
    """A :func:`cursor_of` string back (ValueError if it is not one)."""
    at, sep, sid = text.partition("|")
    if not sep or not sid or len(sid) > 64:
        raise ValueError("not a page cursor")
    when = datetime.fromisoformat(at)
    if when.tzinfo is None:
        raise ValueError("not a page cursor")
    return when, sid
