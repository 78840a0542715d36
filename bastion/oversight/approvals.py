"""Just-in-time approvals in the daemon: hold a command, tell reviewers at once, release on their decision.

Decisions are checked against the *reviewer's connection* identity and grants; the store refuses
self-approval and a second decision by the same person inside the recording transaction.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from bastion import metrics
from bastion.context import ConnectionContext
from bastion.store.approvals import FINAL, ApprovalStore, DecisionRefused
from bastion.store.db import Store, now
from bastion.store.rows import RequestRecord
from policies.access import RoleLike, may_review
from policies.engine import Decision

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between store checks while waiting (decisions taken by another node show up this way)


Spawn = Callable[[Any], None]  # runs an awaitable in the background (errors logged, never lost)
Publish = Callable[[dict[str, Any]], None]  # tells the other processes and nodes (they get it as a remote event)


def ended(req: RequestRecord) -> None:
    """Count a request that has just left ``pending`` (metrics): its final status, how long it waited."""
    if req.status != "pending":
        metrics.approval_ended(req.status, ((req.decided_at or now()) - req.created_at).total_seconds())


def final_state(req: RequestRecord | None) -> tuple[str, str]:
    """What :meth:`ApprovalService.wait` ended with: the request's status and why (a request that vanished from the
    store counts as cancelled)."""
    return (req.status, req.status_reason) if req is not None else ("cancelled", "request vanished")


class ApprovalService:
    """One per daemon: given the store, this node's name, the running config's roles (a getter: they change on
    reload) and a way to run background work -- not the daemon."""

    def __init__(self, store: Store, node: str, roles: Callable[[], Mapping[str, RoleLike]], spawn: Spawn,
                 publish: Publish):
        self.store, self.node, self.roles, self.spawn, self.publish = store, node, roles, spawn, publish
        self.process = f"{node}/{os.getpid()}"  # what this process publishes, it does not hear back
        self.db = ApprovalStore(store)
        self._waiters: dict[int, asyncio.Event] = {}
        self.listeners: set[Callable[[], None]] = set()

    def _notify(self, rid: int | None = None) -> None:
        """Tell this node's reviewer screens, and (PostgreSQL) every other node, that requests changed."""
        if rid is not None:
            self.publish({"kind": "approval", "id": rid, "node": self.node, "process": self.process})
        self._changed()

    def remote_event(self, event: dict[str, Any]) -> None:
        """Another node, or another connection process of this one, created, decided or ended a request."""
        if event.get("kind") != "approval" or event.get("process") == self.process:
            return
        rid = event.get("id")
        if isinstance(rid, int):
            self._wake(rid)
        self._changed()

    def _changed(self) -> None:
        for cb in list(self.listeners):
            try:
                cb()
            except Exception:
                log.exception("approval listener failed")

    async def _audit(self, actor: str, action: str, outcome: str, req: RequestRecord, **detail: Any) -> None:
        await asyncio.to_thread(self.store.audit, actor, action, outcome, resource=req.resource,
                                session_id=req.session_id, request_id=req.id, rule=req.rule, **detail)

    async def request(self, ctx: ConnectionContext, resource: str, session_id: str,
                      decision: Decision) -> RequestRecord:
        """Create a pending request for ``decision.text`` and tell every reviewer."""
        req = await asyncio.to_thread(
            self.db.create, requester=ctx.username, resource=resource, session_id=session_id, text=decision.text,
            rule=decision.rule or "(default)", reason=decision.reason, approvals_needed=max(1, decision.approvals),
            approver_roles=list(decision.approver_roles), timeout=decision.timeout or 600.0, node=self.node)
        await self._audit(ctx.username, "approval.request", "pending", req, text=decision.text)
        log.info("%s: approval request #%d on %s (rule %s)", ctx.who, req.id, resource, req.rule)
        self._notify(req.id)
        return req

    async def wait(self, rid: int, timeout: float, withdraw: asyncio.Event) -> RequestRecord | None:
        """Wait for a final status; ``withdraw`` set by the requester (Ctrl-C, disconnect) withdraws it. The request
        as it ended (None if it vanished from the store: see :func:`final_state`)."""
        ev = self._waiters.setdefault(rid, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                req = await asyncio.to_thread(self.db.get, rid)
                if req is None or req.status in FINAL:
                    return req
                if withdraw.is_set():
                    await self.finish(rid, "withdrawn", "withdrawn by the requester", req.requester)
                    continue
                if loop.time() >= deadline:
                    await self.finish(rid, "expired", "no decision before the request expired", "bastion")
                    continue
                ev.clear()
                waits = [asyncio.ensure_future(ev.wait()), asyncio.ensure_future(withdraw.wait())]
                try:
                    await asyncio.wait(waits, timeout=min(POLL, max(0.0, deadline - loop.time())),
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:  # also when the waiter itself is cancelled (the session ended): no task left behind
                    for w in waits:
                        w.cancel()
        finally:
            self._waiters.pop(rid, None)

    async def finish(self, rid: int, status: str, reason: str, actor: str) -> bool:
        """Withdraw, expire or cancel a pending request."""
        done = await asyncio.to_thread(self.db.finish, rid, status, reason)
        if done:
            req = await asyncio.to_thread(self.db.get, rid)
            if req is not None:
                ended(req)
                await self._audit(actor, f"approval.{status}", status, req)
            self._wake(rid)
            self._notify(rid)
        return done

    async def decide(self, ctx: ConnectionContext, rid: int, approve: bool, reason: str) -> RequestRecord:
        """A reviewer's decision, checked against the reviewer's own grants. Raises DecisionRefused.

        The reason is shown on the requester's terminal: text only (no escape sequence, no newline), at most
        500 characters, whatever client the reviewer decided from."""
        if not isinstance(reason, str) or not reason.isprintable() or len(reason) > 500:
            raise DecisionRefused("the reason must be one line of printable text, at most 500 characters")
        req = await asyncio.to_thread(self.db.get, rid)
        if req is None or not may_review(ctx.grants, self.roles(), req.resource, req.approver_roles):
            if req is not None:
                await self._audit(ctx.username, "approval.decision", "refused", req, why="not a reviewer")
            raise DecisionRefused(f"you may not decide request #{rid}")
        try:
            decided = await asyncio.to_thread(self.db.decide, rid, ctx.username, approve, reason)
        except DecisionRefused as e:
            await self._audit(ctx.username, "approval.decision", "refused", req, why=str(e))
            after = await asyncio.to_thread(self.db.get, rid)
            if after is not None and after.status == "expired" and req.status == "pending":  # it expired just now
                ended(after)
                await self._audit("bastion", "approval.expired", "expired", after)
                self._wake(rid)
                self._notify(rid)
            raise
        ended(decided)  # approved or denied (pending still when more approvals are needed: not counted)
        await self._audit(ctx.username, "approval.decision", "approve" if approve else "deny", decided,
                          reason=reason, status=decided.status)
        log.info("%s: %s request #%d -> %s", ctx.who, "approved" if approve else "denied", rid, decided.status)
        self._wake(rid)
        self._notify(rid)
        return decided

    async def revoke(self, ctx: ConnectionContext, rid: int, reason: str) -> RequestRecord:
        """A reviewer of the resource ends granted access early (its live sessions go on: F4 terminates them).
        Raises DecisionRefused."""
        if not isinstance(reason, str) or not reason.isprintable() or len(reason) > 500:
            raise DecisionRefused("the reason must be one line of printable text, at most 500 characters")
        req = await asyncio.to_thread(self.db.get, rid)
        if req is None or not self.visible_to(ctx, req):
            raise DecisionRefused(f"you may not revoke request #{rid}")
        try:
            revoked = await asyncio.to_thread(self.db.revoke, rid, ctx.username, reason)
        except DecisionRefused as e:
            await self._audit(ctx.username, "access.revoke", "refused", req, why=str(e))
            raise
        await self._audit(ctx.username, "access.revoke", "revoked", revoked, reason=reason)
        log.warning("%s: revoked access request #%d of %s to %s: %s", ctx.who, rid, revoked.requester,
                    revoked.resource, reason)
        self._notify(rid)
        return revoked

    def _wake(self, rid: int) -> None:
        ev = self._waiters.get(rid)
        if ev is not None:
            ev.set()

    def visible_to(self, ctx: ConnectionContext, req: RequestRecord) -> bool:
        """Reviewers see the requests they may decide; never their own in the queue."""
        return req.requester != ctx.username and may_review(ctx.grants, self.roles(), req.resource,
                                                           req.approver_roles)

    async def queue(self, ctx: ConnectionContext) -> tuple[list[RequestRecord], list[RequestRecord]]:
        """A reviewer's queue: the pending requests they may decide, and the last 30 decided or ended ones."""
        pending = await asyncio.to_thread(self.db.pending)
        recent = await asyncio.to_thread(self.db.recent, limit=100)
        return ([r for r in pending if self.visible_to(ctx, r)],
                [r for r in recent if r.status != "pending" and self.visible_to(ctx, r)][:30])

    async def mine(self, ctx: ConnectionContext) -> list[RequestRecord]:
        """The operator's own last 50 requests, newest first."""
        return await asyncio.to_thread(self.db.recent, requester=ctx.username, limit=50)

    async def cancelled(self, ids: list[int]) -> None:
        """Requests cancelled in the store (their session ended, its process or node went away): one audit event
        each (so the reviewers' notifications say so too), and every queue told."""
        for rid in ids:
            req = await asyncio.to_thread(self.db.get, rid)
            if req is not None:
                ended(req)
                await self._audit("bastion", "approval.cancelled", "cancelled", req)
            self._wake(rid)
            self._notify(rid)

    async def cancel_node(self) -> None:
        """At start: requests left pending by a previous run of this node can never be released; cancel them."""
        ids = await asyncio.to_thread(self.db.cancel_pending, node=self.node,
                                      reason="the bastion restarted while the request was pending")
        await self.cancelled(ids)
        if ids:
            log.warning("cancelled %d approval request(s) left pending by a previous run", len(ids))
