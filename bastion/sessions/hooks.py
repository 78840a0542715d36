"""How a session's enforcement points reach the daemon: the typed hooks a protocol proxy is opened with, and the
interactive line filter of a shell or psql. Each decision leaves a marker in the recording, an audit event when it
is not a plain allow, and a held one waits for reviewers while the operator may withdraw it with Ctrl-C."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bastion import metrics
from bastion.config import KubeResource
from bastion.context import ConnectionContext
from bastion.oversight.approvals import final_state
from bastion.services import Services
from bastion.sessions.client import ClientSide
from bastion.targets.base import Hooks, LineFilter
from bastion.terminal.cmdfilter import CommandFilter, secret_asks
from policies.engine import Action, Decision, PolicySet, evaluate, evaluate_kube, evaluate_sql
from policies.execs import Exec, approved_commands, evaluate_exec, judge_with_approval
from policies.kube import KubeRequest
from policies.psql import judge_psql_line
from policies.transfer import Transfer, evaluate_transfer
from recorder.recording import Recording

MAX_EXEC_MARKER = 16384  # an argv may be 2 MiB; a loop of such execs must not fill the disk with markers


class SessionHooks:
    """The enforcement hooks of one brokered session ``sid`` on resource ``name``."""

    def __init__(self, services: Services, ctx: ConnectionContext, client: ClientSide, name: str, sid: str,
                 writer: Recording):
        self.services, self.ctx, self.client = services, ctx, client
        self.name, self.sid, self.writer = name, sid, writer

    async def approval(self, d: Decision, say: Callable[[str], None]) -> dict[str, Any]:
        """Ask reviewers about ``d`` for this session and wait; Ctrl-C or a hang-up withdraws. The request as it
        ended, in the form the enforcement points read (``status``, ``status_reason``; see ``Hooks.hold``)."""
        approvals, withdraw = self.services.approvals, self.client.filter_withdraw
        if not self.client.gone:
            withdraw.clear()
        req = await approvals.request(self.ctx, self.name, self.sid, d)
        say(f"waiting for approval (request #{req.id}, rule {req.rule}) \u2014 Ctrl-C to withdraw")
        final = await approvals.wait(req.id, d.timeout or 600.0, withdraw)
        status, why = final_state(final)
        self.writer.marker(f"approval #{req.id}: {status} ({why})")
        return final.as_dict() if final is not None else {"id": req.id, "status": status, "status_reason": why}

    def _audit(self, action: str, outcome: str, **detail: Any) -> None:
        ctx, store = self.ctx, self.services.store
        self.services.spawn(asyncio.to_thread(store.audit, ctx.username, action, outcome, resource=self.name,
                                              session_id=self.sid, client_addr=ctx.peer, **detail))

    def proxy_hooks(self, kind: str, *, interactive: bool, approved: Decision | None = None) -> Hooks:
        """What a protocol proxy (``sql``: the wire proxy, ``kube``: the API proxy, ``transfer``: the SFTP gate,
        ``exec``: bastion-guard's reports) needs to judge, hold and record the statements, requests, file operations
        or programs of this session. ``approved``: the exec-form command a reviewer approved before the session
        opened; the programs it names are not held a second time when they run."""
        cfg, ctx, name, client = self.services.config, self.ctx, self.name, self.client
        res = cfg.resources[name]
        policy = cfg.policies.get(res.policy or "") or PolicySet("(none)")

        def note(d: Decision) -> None:
            metrics.policy_decision(d.action.label, d.rule)  # every statement, request, file operation, program
            if kind == "exec":  # every program the session runs: its marker is the exec itself
                text = d.text if len(d.text) <= MAX_EXEC_MARKER else \
                    f"{d.text[:MAX_EXEC_MARKER]} [... {len(d.text) - MAX_EXEC_MARKER} more characters]"
                self.writer.marker(f"exec: {text}" + ("" if d.action == Action.ALLOW else f": {d.summary()}"))
            elif kind != "transfer":  # a transfer's decision is on its own line of the transfer log
                self.writer.marker(f"{kind}: {d.summary()}: {d.text}")
            if d.action != Action.ALLOW:
                self._audit(f"{kind}.{d.action.label}", d.action.label, rule=d.rule, text=d.text[:4000])

        def say(text: str) -> None:
            if interactive:  # psql waits for the server: the line goes under its prompt, recorded
                client.relay.say(f"\x1b[33mbastion: {text}\x1b[0m\r\n".encode())
            else:
                client.stderr(f"bastion: {text}\n")

        async def hold(d: Decision) -> dict[str, Any]:
            final = await self.approval(d, say)
            if final.get("status") == "approved":  # a refusal reaches psql as the statement's error instead
                say(str(final.get("status_reason") or "approved"))
            return final

        judge: Callable[[Any], Decision]
        if kind == "kube":
            forward = isinstance(res, KubeResource) and res.port_forward

            def judge(req: KubeRequest) -> Decision:
                return evaluate_kube(policy, req, groups=ctx.groups, resource=name, port_forward=forward)
        elif kind == "exec":
            pre = approved_commands(approved.text) if approved is not None else ()

            def judge(ev: Exec) -> Decision:
                d = evaluate_exec(policy, ev, groups=ctx.groups, resource=name)
                return judge_with_approval(d, ev, pre, "approved before the session opened") if pre else d
        elif kind == "transfer":
            def judge(t: Transfer) -> Decision:
                return evaluate_transfer(policy, t, groups=ctx.groups, resource=name)
        else:
            def judge(sql: str) -> Decision:
                return evaluate_sql(policy, sql, groups=ctx.groups, resource=name)
        return Hooks(judge=judge, hold=hold, note=note, withdraw=client.filter_withdraw.set,
                     event=self.writer.marker)

    def line_filter(self, kind: LineFilter, forward: Callable[[bytes], None]) -> CommandFilter:
        """The interactive filter for a brokered shell on a resource with a policy (``shell``), or the meta-command
        filter of an unrestricted interactive psql (``psql``: its SQL is judged at the wire)."""
        cfg, ctx, name, relay = self.services.config, self.ctx, self.name, self.client.relay
        psql = kind == "psql"
        judge: Callable[[str], Decision]
        if psql:
            judge = judge_psql_line
        else:
            policy = cfg.policies[cfg.resources[name].policy or ""]

            def judge(text: str) -> Decision:  # typed at a prompt: bash history expansion may rewrite it
                return evaluate(policy, text, groups=ctx.groups, resource=name, interactive=True)

        def note(text: str, d: Decision, unechoed: bool) -> None:
            """A marker for each decision; an audit event for each one that is not a plain allow, and for every
            line typed without echo (a command typed blind, or the withheld answer to a secret prompt)."""
            if not psql or d.action != Action.ALLOW:  # psql's SQL lines: counted where the wire proxy judges them
                metrics.policy_decision(d.action.label, d.rule)
            if psql and d.action == Action.ALLOW and not unechoed:
                return  # each statement gets its own marker from the wire proxy
            self.writer.marker(f"policy: {d.summary()}: {text}")
            if d.action != Action.ALLOW or unechoed:
                self._audit(f"command.{d.action.label}", d.action.label, rule=d.rule, text=text,
                            mode="interactive", **({"echo": "off"} if unechoed else {}))

        async def approve(d: Decision) -> dict[str, Any]:
            def say(text: str) -> None:
                relay.say(f"\r\n\x1b[33mbastion: {text}\x1b[0m".encode())

            final = await self.approval(d, say)
            relay.say(b"\r\x1b[K")
            return final

        return CommandFilter(
            cols=self.client.cols, judge=judge, forward=forward, to_client=relay.say, approve=approve, note=note,
            withdraw=self.client.filter_withdraw.set,
            asks_secret=(lambda line: (True, 0)) if psql else secret_asks)  # psql's own prompts: \password
