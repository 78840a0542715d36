"""Opening a target for an operator: access (asking reviewers where access is granted on request), the exec-form
command's policy, then the brokered session itself (:mod:`bastion.sessions.brokered`)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from bastion import metrics
from bastion.context import ConnectionContext
from bastion.oversight.approvals import final_state
from bastion.services import Services
from bastion.sessions.brokered import BrokeredSession
from bastion.sessions.client import ClientSide
from bastion.sessions.timeouts import fmt_seconds
from bastion.sessions.transfers import judge_exec_transfers
from bastion.store.approvals import ACCESS_RULE
from bastion.store.db import new_session_id
from bastion.targets import target_class
from policies.access import RequestTerms, decide_open
from policies.engine import Action, Decision, evaluate
from policies.transfer import Transfer

log = logging.getLogger(__name__)

ACCESS_WAIT = 900.0  # seconds an access request waits for reviewers before it expires


@dataclass(frozen=True)
class Access:
    """The grant a session opens under: its description for the recording, and the access request that granted it
    (the session's ``session.start`` audit event names it, so a grant's timeline finds its sessions)."""

    text: str
    grant: int


@dataclass
class Outcome:
    """How a brokered session ended, as reported to the operator."""

    ok: bool
    message: str
    exit_status: int | None = None
    exit_signal: str | None = None
    session_id: str | None = None
    duration: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "message": self.message, "exit_status": self.exit_status,
                "exit_signal": self.exit_signal, "session_id": self.session_id, "duration": round(self.duration, 3)}


class Broker:
    """Opens targets for the operator of one channel (one at a time)."""

    def __init__(self, services: Services, ctx: ConnectionContext, client: ClientSide):
        self.services, self.ctx, self.client = services, ctx, client

    async def open(self, name: str, *, command: str | None, reason: str = "", subsystem: str | None = None) -> Outcome:
        """Check access (asking reviewers first where access is granted on request), judge the command, connect
        to the target, attach it to the relay with recording, wait for its end. ``subsystem`` (``sftp``): a
        transfer session, judged request by request at the protocol."""
        ctx, client, store = self.ctx, self.client, self.services.store
        mode = subsystem or ("exec" if command is not None else "interactive")
        decision = decide_open(ctx.grants, name, self.services.config.resources)
        if not decision.allowed and decision.request is None:
            await asyncio.to_thread(store.audit, ctx.username, "session.open", "denied", resource=name[:255],
                                    client_addr=ctx.peer, mode=mode, reason=decision.reason)
            log.info("%s: open %r denied: %s", ctx.who, name[:64], decision.reason)
            return Outcome(False, decision.reason)
        if subsystem is not None and self.services.config.resources[name].kind != "ssh":
            return Outcome(False, f"{name}: {subsystem} is for ssh resources only")
        if client.opening:
            return Outcome(False, "a session is already open on this connection")
        client.opening = True
        client.relay.hold()
        sid = new_session_id()
        self.services.carrying(sid, True)  # from its first request for approval to its last row
        try:
            access = None
            if decision.request is not None:
                got = await self._access(name, sid, decision.request, reason, command)
                if isinstance(got, Outcome):
                    return got
                access = got
            verdict: Decision | None = None
            transfers: list[Transfer] = []
            if command is not None:
                verdict = self._judge(name, command)
                # scp -t, rsync --server, git-upload-pack: file transfers too (with a terminal or without)
                verdict, transfers = await judge_exec_transfers(self.services.config, name, command, ctx.groups,
                                                                verdict)
                if verdict is not None:  # the exec form's command, judged once here (a proxy judges the rest)
                    metrics.policy_decision(verdict.action.label, verdict.rule)
                refusal = await self._enforce_exec(name, sid, verdict)
                if refusal is not None:
                    return refusal
            run = BrokeredSession(self.services, ctx, client, name, sid, command, subsystem, transfers)
            ended = await run.run(verdict, access.text if access else None, access.grant if access else None)
            if ended.error is not None:
                return Outcome(False, ended.error)
            return Outcome(True, f"{name}: {ended.message}", ended.status, ended.signal, sid, ended.duration)
        finally:
            client.opening = False
            client.relay.detach()
            self.services.carrying(sid, False)

    async def _access(self, name: str, sid: str, terms: RequestTerms, reason: str,
                      command: str | None) -> Access | Outcome:
        """Access on request: an unexpired grant, or a new request that reviewers of ``name`` decide while the
        operator waits (Ctrl-C withdraws). The grant's description for the recording, or the refusal."""
        ctx, approvals = self.ctx, self.services.approvals
        grant = await asyncio.to_thread(approvals.db.access_granted, ctx.username, name, terms.ttl)
        if grant is None:
            reason = " ".join(reason.split())[:500]
            text = f"open {name}" + (f" -- {command}" if command is not None else "") + \
                (f" (reason: {reason})" if reason else " (no reason given)")
            d = Decision(Action.REQUIRE_APPROVAL, ACCESS_RULE, f"access to {name} for {fmt_seconds(terms.ttl)}",
                         text, approvals=terms.approvals, timeout=ACCESS_WAIT)
            refused = await self._hold(name, sid, d, what=f"access to {name} needs a reviewer's approval")
            if refused is not None:
                return refused
            grant = await asyncio.to_thread(approvals.db.access_granted, ctx.username, name, terms.ttl)
            if grant is None:
                return Outcome(False, f"access to {name} was granted but has already expired")
        until = time.strftime("%H:%M UTC", time.gmtime(grant.until))
        by = ", ".join(d.reviewer for d in grant.request.decisions if d.approve)
        return Access(f"access to {name} granted by {by} (request #{grant.request.id}) until {until}",
                      grant.request.id)

    def _judge(self, name: str, command: str) -> Decision | None:
        """The policy decision for ``command`` on resource ``name`` (None: no policy, or judged at a proxy)."""
        cfg = self.services.config
        res = cfg.resources[name]
        if res.policy is None or target_class(res.kind).proxied is not None:  # judged at the wire / API proxy
            return None
        # with a pty (ssh -t) pagers and editors read the operator's keys: judged as such
        return evaluate(cfg.policies[res.policy], command, groups=self.ctx.groups, resource=name,
                        terminal=self.client.pty, guarded=getattr(res, "enforce", "filter") == "guard")

    async def _enforce_exec(self, name: str, sid: str, d: Decision | None) -> Outcome | None:
        """Block, warn or hold an exec-form command; None means go ahead."""
        if d is None or d.action == Action.ALLOW:
            return None
        ctx, store = self.ctx, self.services.store
        if d.action == Action.BLOCK:
            await asyncio.to_thread(store.audit, ctx.username, "command.blocked", "blocked", resource=name,
                                    client_addr=ctx.peer, rule=d.rule, text=d.text, mode="exec")
            log.info("%s: on %s, %s: %r", ctx.who, name, d.refusal(), d.text[:200])
            return Outcome(False, d.refusal())  # with no rule (cannot be parsed ...): "refused: why"
        if d.action == Action.WARN:  # one line on stderr (the terminal with ssh -t), then the command runs
            self.client.stderr(f"bastion: {d.warning()}\n")
            return None
        return await self._hold(name, sid, d)

    async def _hold(self, name: str, sid: str, d: Decision, what: str = "") -> Outcome | None:
        """Ask reviewers about ``d`` before the session opens, telling the operator on stderr; None if approved."""
        ctx, approvals, client = self.ctx, self.services.approvals, self.client
        if not client.gone:
            client.withdraw.clear()
        req = await approvals.request(ctx, name, sid, d)
        client.stderr(f"bastion: {what + ': ' if what else ''}waiting for approval (request #{req.id}, rule "
                      f"{req.rule}) \u2014 Ctrl-C to withdraw\n")
        status, why = final_state(await approvals.wait(req.id, d.timeout or 600.0, client.withdraw))
        if status == "approved":
            client.stderr(f"bastion: request #{req.id} {why}\n")
            return None
        return Outcome(False, f"request #{req.id} {status}: {why}")
