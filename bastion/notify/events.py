"""Which audit events are notifications, what they say, and which targets they are for.

Notifications are derived from the audit log, not raised by a second set of calls beside it: every event worth
telling someone about (a request held, decided, ended; access granted or revoked; a session terminated; a command
blocked) is already audited at the one place it happens, so deriving them there cannot miss a code path, and the
outbox rows are written in the very transaction that appends the audit event (:meth:`Enqueuer.__call__`).

The payload (:func:`payload`) is the stable JSON schema documented in docs/notifications.md; Slack and email
texts are rendered from it at delivery. Command texts come from the approval request (what the reviewers' queue
shows) or from the audit event; a line typed with echo off is never sent (its text is withheld).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session as OrmSession

from bastion.config import Config
from bastion.config.notify import Route
from bastion.store.approvals import ACCESS_RULE
from bastion.store.models import ApprovalDecision, ApprovalRequest, AuditEvent, NotifyOutbox

log = logging.getLogger(__name__)
VERSION = 1  # of the JSON body; a change that breaks receivers gets a new number
BLOCKED = ("block", "blocked")
WITHHELD = "(typed with echo off: withheld)"
_REQUEST_ENDS = {"approval.expired": "request.expired", "approval.withdrawn": "request.withdrawn",
                 "approval.cancelled": "request.cancelled"}


def event_name(ev: AuditEvent, request: ApprovalRequest | None) -> str | None:
    """The notification an audit event is, or None (most audit events are none)."""
    action, outcome = ev.action, ev.outcome
    if action == "approval.request" and outcome == "pending":
        return "request.created"
    if action == "approval.decision" and outcome in ("approve", "deny"):
        access = request is not None and request.rule == ACCESS_RULE
        return "access.granted" if access and request is not None and request.status == "approved" \
            else "request.decided"
    if action in _REQUEST_ENDS:
        return _REQUEST_ENDS[action]
    if action == "access.revoke" and outcome == "revoked":
        return "access.revoked"
    if action == "session.terminate" and outcome == "ok":
        return "session.terminated"
    if action == "session.moderate" and outcome == "waiting":
        return "moderation.needed"
    if outcome in BLOCKED:
        return "command.blocked"
    return None


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).isoformat().replace("+00:00", "Z")


def hint(server: str, event: str, request_id: int | None, status: str | None = "pending",
         session_id: str | None = None) -> str | None:
    """What a reviewer types to act on it: only while a request waits for a decision (or a session for its
    moderators)."""
    if event == "moderation.needed" and session_id:
        return f"ssh -t {server} observe {session_id}"
    if request_id is None or status != "pending" or event not in ("request.created", "request.decided"):
        return None
    return f"ssh -t {server} review {request_id}"


def server_of(cfg: Config) -> str:
    """How reviewers reach this bastion (``notify.server``, else as the operators' own texts say it)."""
    port = cfg.listen.port
    return cfg.notify.server or ("bastion" if port == 22 else f"-p {port} bastion")


def _request_fields(r: ApprovalRequest, decisions: list[ApprovalDecision]) -> dict[str, Any]:
    return {
        "request_id": r.id, "request_kind": "access" if r.rule == ACCESS_RULE else "command",
        "user": r.requester, "resource": r.resource, "session_id": r.session_id, "text": r.text, "rule": r.rule,
        "reason": r.reason, "status": r.status, "status_reason": r.status_reason,
        "approvals": {"given": sum(1 for d in decisions if d.approve), "needed": r.approvals_needed},
        "approver_roles": list(r.approver_roles or ()), "created_at": _iso(r.created_at),
        "expires_at": _iso(r.expires_at),
        "decisions": [{"reviewer": d.reviewer, "approve": d.approve, "reason": d.reason, "at": _iso(d.ts)}
                      for d in decisions],
    }


def payload(ev: AuditEvent, name: str, request: ApprovalRequest | None, decisions: list[ApprovalDecision],
            *, node: str, server: str, resource_kind: str | None) -> dict[str, Any]:
    """The JSON body of a notification: every key is always present (null when it does not apply)."""
    detail = ev.detail or {}
    body: dict[str, Any] = {
        "version": VERSION, "id": ev.hash, "event": name, "time": _iso(ev.ts), "node": node, "actor": ev.actor,
        "user": None, "resource": ev.resource, "resource_kind": resource_kind, "session_id": ev.session_id,
        "request_id": None, "request_kind": None, "text": None, "rule": None, "reason": None, "status": None,
        "status_reason": None, "approvals": None, "approver_roles": [], "created_at": None, "expires_at": None,
        "decisions": [], "hint": None,
    }
    if request is not None:
        body |= _request_fields(request, decisions)
    elif name == "session.terminated":
        body |= {"user": detail.get("user"), "reason": detail.get("reason"), "status": "terminated"}
    elif name == "moderation.needed":  # who may moderate: routed like the reviewers of a request
        roles = detail.get("roles")
        body |= {"user": ev.actor, "text": detail.get("command"), "status": "waiting",
                 "reason": f"needs {detail.get('count', 1)} moderator(s) watching before it opens",
                 "approver_roles": list(roles) if isinstance(roles, list) else []}
    elif name == "command.blocked":
        text = WITHHELD if detail.get("echo") == "off" else detail.get("text")
        body |= {"user": ev.actor, "text": text, "rule": detail.get("rule"), "status": "blocked",
                 "reason": ev.action}
    body["hint"] = hint(server, name, body["request_id"], body["status"], ev.session_id)
    return body


def reviewer_roles(body: Mapping[str, Any], roles: Mapping[str, Any]) -> set[str]:
    """The roles that review what the event is about: the request's approver roles, else every role that
    reviews its resource."""
    named = set(body.get("approver_roles") or ())
    if named:
        return named
    resource = body.get("resource") or ""
    return {n for n, r in roles.items() if r.reviews(resource)}


def routed(target: Route, body: Mapping[str, Any], roles: Mapping[str, Any]) -> bool:
    """Whether ``target`` is sent this event: its name is listed, and the role and resource filters pass."""
    if body["event"] not in target.events:
        return False
    resource = body.get("resource") or ""
    if target.resources and not any(fnmatch.fnmatchcase(resource, p) for p in target.resources):
        return False
    return not target.roles or bool(set(target.roles) & reviewer_roles(body, roles))


class Enqueuer:
    """The store's audit hook: turns a notifiable audit event into one outbox row per routed target, inside the
    audit event's own transaction (one insert on the operator's path; delivery is the worker's)."""

    def __init__(self, config: Callable[[], Config], node: str, wake: Callable[[], None] = lambda: None):
        self.config, self.node, self.wake = config, node, wake

    def __call__(self, s: OrmSession, ev: AuditEvent) -> None:
        cfg = self.config()
        targets = cfg.notify.targets()
        if not targets or not _maybe(ev):
            return
        try:
            rows = self._rows(s, ev, cfg, targets)
        except Exception as e:  # a notification must never cost the audit event: say so in one line
            log.error("notify: cannot build the notification of %s: %s: %s", ev.action, type(e).__name__, e)
            return
        s.add_all(rows)
        if rows:  # after the commit: a worker woken before it would not see the rows yet
            event.listen(s, "after_commit", lambda _s: self.wake(), once=True)

    def _rows(self, s: OrmSession, ev: AuditEvent, cfg: Config, targets: list[Any]) -> list[NotifyOutbox]:
        request = None
        rid = (ev.detail or {}).get("request_id")
        if ev.action.startswith(("approval.", "access.")) and isinstance(rid, int):
            request = s.get(ApprovalRequest, rid)
        name = event_name(ev, request)
        if name is None:
            return []
        decisions = list(s.scalars(select(ApprovalDecision).where(ApprovalDecision.request_id == rid)
                                   .order_by(ApprovalDecision.id))) if request is not None else []
        res = cfg.resources.get(ev.resource or "")
        body = payload(ev, name, request, decisions, node=self.node, server=server_of(cfg),
                       resource_kind=res.kind if res is not None else None)
        at = ev.ts
        return [NotifyOutbox(event_id=ev.hash, target=t.name, event=name, payload=body, created_at=at,
                             status="pending", next_at=at, attempts=0)
                for t in targets if routed(t, body, cfg.roles)]


def _maybe(ev: AuditEvent) -> bool:
    """A cheap first look (most audit events are logins and session ends, never notified)."""
    return ev.action.startswith(("approval.", "access.")) or ev.action in ("session.terminate", "session.moderate") \
        or ev.outcome in BLOCKED
