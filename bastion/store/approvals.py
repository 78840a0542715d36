"""Approval requests and decisions in the store. Every rule that protects segregation of duties is checked here,
inside the transaction that records the decision (not merely hidden in a screen)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bastion.store.db import Store, _aware, now
from bastion.store.models import ApprovalDecision, ApprovalRequest
from bastion.store.rows import AccessGrant, DecisionRecord, RequestRecord

FINAL = {"approved", "denied", "withdrawn", "expired", "cancelled", "revoked"}
ACCESS_RULE = "access-request"  # the rule of a request for access to a resource (not for one command)


class DecisionRefused(Exception):
    """The reviewer may not decide this request; the message says why."""


def _record(r: ApprovalRequest, decisions: list[ApprovalDecision]) -> RequestRecord:
    return RequestRecord(
        id=r.id, requester=r.requester, resource=r.resource, session_id=r.session_id, text=r.text, rule=r.rule,
        reason=r.reason, approvals_needed=r.approvals_needed, approver_roles=tuple(r.approver_roles or ()),
        status=r.status, status_reason=r.status_reason, created_at=_aware(r.created_at),
        expires_at=_aware(r.expires_at), decided_at=_aware(r.decided_at),
        decisions=tuple(DecisionRecord(reviewer=d.reviewer, approve=d.approve, reason=d.reason, ts=_aware(d.ts))
                        for d in decisions))


class ApprovalStore:
    """Queries on approval requests."""

    def __init__(self, store: Store):
        self.store = store

    def create(self, *, requester: str, resource: str, session_id: str, text: str, rule: str, reason: str,
               approvals_needed: int, approver_roles: list[str], timeout: float, node: str) -> RequestRecord:
        with self.store.tx() as s:
            r = ApprovalRequest(requester=requester, resource=resource, session_id=session_id, text=text, rule=rule,
                                reason=reason, approvals_needed=approvals_needed, approver_roles=approver_roles,
                                status="pending", status_reason="", node=node, created_at=now(),
                                expires_at=now() + timedelta(seconds=timeout))
            s.add(r)
            s.flush()
            return _record(r, [])

    def get(self, rid: int) -> RequestRecord | None:
        with self.store.tx() as s:
            r = s.get(ApprovalRequest, rid)
            if r is None:
                return None
            return _record(r, self._decisions(s, rid))

    def decide(self, rid: int, reviewer: str, approve: bool, reason: str) -> RequestRecord:
        """Record one reviewer's decision; returns the request after it. Raises DecisionRefused."""
        expired = False
        try:
            with self.store.tx() as s:
                r = s.get(ApprovalRequest, rid, with_for_update=True)
                if r is None:
                    raise DecisionRefused(f"no request #{rid}")
                if r.requester == reviewer:
                    raise DecisionRefused("you cannot decide your own request (segregation of duties)")
                if r.status != "pending":
                    raise DecisionRefused(f"request #{rid} is already {r.status}")
                if _aware(r.expires_at) <= now():
                    expired = True
                    raise DecisionRefused(f"request #{rid} has expired")
                if not approve and not reason.strip():
                    raise DecisionRefused("a denial needs a reason")
                s.add(ApprovalDecision(request_id=rid, reviewer=reviewer, approve=approve, reason=reason[:1000],
                                       ts=now()))
                s.flush()
                decisions = list(s.scalars(select(ApprovalDecision).where(ApprovalDecision.request_id == rid)))
                if not approve:
                    r.status, r.status_reason, r.decided_at = "denied", f"denied by {reviewer}: {reason}", now()
                elif sum(d.approve for d in decisions) >= r.approvals_needed:
                    names = ", ".join(d.reviewer for d in decisions if d.approve)
                    r.status, r.status_reason, r.decided_at = "approved", f"approved by {names}", now()
                return _record(r, decisions)
        except IntegrityError:
            raise DecisionRefused(f"you have already decided request #{rid}") from None
        except DecisionRefused:
            if expired:  # the refusal rolled the transaction back: record the expiry on its own
                self.finish(rid, "expired", "expired before a decision")
            raise

    def finish(self, rid: int, status: str, reason: str) -> bool:
        """Move a pending request to a final status (withdrawn, expired, cancelled); False if it was not pending."""
        assert status in FINAL
        with self.store.tx() as s:
            r = s.get(ApprovalRequest, rid, with_for_update=True)
            if r is None or r.status != "pending":
                return False
            r.status, r.status_reason, r.decided_at = status, reason, now()
            return True

    def revoke(self, rid: int, by: str, reason: str) -> RequestRecord:
        """End granted access early: an approved access request becomes ``revoked``. Raises DecisionRefused."""
        if not reason.strip():
            raise DecisionRefused("a revocation needs a reason")
        with self.store.tx() as s:
            r = s.get(ApprovalRequest, rid, with_for_update=True)
            if r is None or r.rule != ACCESS_RULE:
                raise DecisionRefused(f"request #{rid} is not a request for access")
            if r.status != "approved":
                raise DecisionRefused(f"request #{rid} is {r.status}, not granted access")
            r.status, r.status_reason = "revoked", f"revoked by {by}: {' '.join(reason.split())[:500]}"
            s.flush()
            return _record(r, self._decisions(s, rid))

    def access_granted(self, requester: str, resource: str, ttl: float) -> AccessGrant | None:
        """The newest access request of ``requester`` for ``resource`` approved within the last ``ttl`` seconds, with
        when the access it grants ends."""
        with self.store.tx() as s:
            r = s.scalars(select(ApprovalRequest).where(
                ApprovalRequest.requester == requester, ApprovalRequest.resource == resource,
                ApprovalRequest.rule == ACCESS_RULE, ApprovalRequest.status == "approved",
                ApprovalRequest.decided_at >= now() - timedelta(seconds=ttl))
                .order_by(ApprovalRequest.decided_at.desc()).limit(1)).first()
            if r is None or r.decided_at is None:
                return None
            return AccessGrant(_record(r, self._decisions(s, r.id)), until=_aware(r.decided_at).timestamp() + ttl)

    def pending(self) -> list[RequestRecord]:
        with self.store.tx() as s:
            rows = list(s.scalars(select(ApprovalRequest).where(ApprovalRequest.status == "pending")
                                  .order_by(ApprovalRequest.id)))
            return [_record(r, self._decisions(s, r.id)) for r in rows]

    def recent(self, *, requester: str | None = None, session_id: str | None = None,
               limit: int = 50) -> list[RequestRecord]:
        with self.store.tx() as s:
            q = select(ApprovalRequest).order_by(ApprovalRequest.id.desc()).limit(limit)
            if requester is not None:
                q = q.where(ApprovalRequest.requester == requester)
            if session_id is not None:
                q = q.where(ApprovalRequest.session_id == session_id)
            return [_record(r, self._decisions(s, r.id)) for r in s.scalars(q)]

    def cancel_pending(self, *, node: str | None = None, session_id: str | None = None, reason: str) -> list[int]:
        """Cancel pending requests of a node (restart, crash) or of a session (it ended); returns their ids."""
        with self.store.tx() as s:
            q = select(ApprovalRequest).where(ApprovalRequest.status == "pending")
            if node is not None:
                q = q.where(ApprovalRequest.node == node)
            if session_id is not None:
                q = q.where(ApprovalRequest.session_id == session_id)
            ids = []
            for r in s.scalars(q):
                r.status, r.status_reason, r.decided_at = "cancelled", reason, now()
                ids.append(r.id)
            return ids

    @staticmethod
    def _decisions(s: Any, rid: int) -> list[ApprovalDecision]:
        return list(s.scalars(select(ApprovalDecision).where(ApprovalDecision.request_id == rid)
                              .order_by(ApprovalDecision.id)))
