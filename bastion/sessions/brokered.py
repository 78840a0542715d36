"""One brokered session, from its first recorded byte to its chained recording: the recording, the line filter or
protocol hooks, the target (opened through the one :class:`~bastion.targets.base.Target` protocol), the session's
rows in the store, its registration as a live session, its time limit, and how it ended."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion import metrics
from bastion.config import SshResource
from bastion.context import ConnectionContext
from bastion.notify.outbox import routed_count
from bastion.oversight.live import LiveSession
from bastion.oversight.moderation import Enforcer, Moderation
from bastion.proxies.sftp.files import record_of
from bastion.services import Services
from bastion.sessions.client import ClientSide
from bastion.sessions.hooks import SessionHooks
from bastion.sessions.timeouts import duration_timers, time_limit
from bastion.targets import make_target
from bastion.targets.base import OpenRequest, Target, TargetError, TargetExit
from bastion.terminal.tee import Tee
from policies.engine import Action, Decision
from policies.transfer import Transfer, is_transfer_command
from recorder.asciicast import CastWriter
from recorder.recording import Recording
from recorder.transferlog import SUFFIX as TRANSFER_SUFFIX
from recorder.transferlog import TransferLog

log = logging.getLogger(__name__)


@dataclass
class Ended:
    """How the session went: ``error`` when it never started (the operator is told why), else how it ended."""

    error: str | None = None
    message: str = ""
    status: int | None = None
    signal: str | None = None
    duration: float = 0.0


class BrokeredSession:
    """Session ``sid``: ``name`` opened for the operator of ``client``, interactive or running ``command``."""

    def __init__(self, services: Services, ctx: ConnectionContext, client: ClientSide, name: str, sid: str,
                 command: str | None, subsystem: str | None = None, transfers: Sequence[Transfer] = ()):
        self.services, self.ctx, self.client = services, ctx, client
        self.name, self.sid, self.command, self.subsystem = name, sid, command, subsystem
        self.transfers = transfers  # the exec form's, judged with their paths resolved on the target
        self.mode = subsystem or ("exec" if command is not None else "interactive")
        self.res = services.config.resources[name]
        # files, not a screen: an sftp session, or a binary protocol on the exec form (scp -t, rsync --server)
        self.transfer = subsystem is not None or (command is not None and not client.pty and self.res.kind == "ssh"
                                                  and is_transfer_command(command))
        suffix = TRANSFER_SUFFIX if self.transfer else ".cast"
        sid_path = Path(sid[:4]) / sid[4:6] / sid[6:8] / f"{sid}{suffix}"
        self.path = services.config.recordings_dir / sid_path
        self.log: TransferLog | None = None
        self.grant: int | None = None  # the access request this session opens under (access on request)
        # the metrics' kind: how it came (an ``ssh -J`` hop) or what it carries, else the resource's kind; counted
        # open from its session row's start to its end (``outcome``)
        self.kind = "jump" if ctx.jump else "transfer" if self.transfer else self.res.kind
        self.counted = False
        self.outcome = "error"  # until the row is closed: an exception ended the session

    async def run(self, verdict: Decision | None, access: str | None, grant: int | None = None) -> Ended:
        self.grant = grant
        guard = isinstance(self.res, SshResource) and self.res.enforce == "guard"
        target = make_target(self.res.kind, self.client.relay, self.subsystem, guard=guard)
        self.client.endpoints.add(target)
        try:
            writer = self._recording(verdict, access)
            if writer is None:
                return Ended(f"{self.name}: the session cannot be recorded; refusing to open it")
            approved = verdict if verdict is not None and verdict.action == Action.REQUIRE_APPROVAL else None
            live: LiveSession | None = None
            if self.res.moderators is not None and not self.client.pty:
                # a moderator watches a screen: without a terminal there is none (stdin, file transfers), and
                # input sent before a moderator joined could not be told from input sent after
                await asyncio.to_thread(writer.close)
                self.path.unlink(missing_ok=True)
                await asyncio.to_thread(self.services.store.audit, self.ctx.username, "session.open", "denied",
                                        resource=self.name, client_addr=self.ctx.peer, mode=self.mode,
                                        reason="moderated: needs a terminal")
                return Ended(f"{self.name} is moderated: it opens only with a terminal (ssh -t), where a "
                             "moderator watches what you type; file transfers and input from a pipe cannot be "
                             "watched")
            if self.res.moderators is not None:
                live, failed = await self._await_moderators(writer)
                if failed is not None:
                    return Ended(failed)
            failed = await self._open(target, writer, approved, live)
            if failed is not None:
                return Ended(failed)
            return await self._carry(target, writer, live)
        except asyncio.CancelledError:
            if self.outcome == "error":  # its row not closed: the store's word for it (mark_interrupted)
                self.outcome = "interrupted"
            raise
        finally:
            if self.counted:  # the one place a started session is counted ended, however it ended
                metrics.session_ended(self.kind, self.name, self.outcome)
            target.close()
            self.client.endpoints.discard(target)
            self.client.live = None

    def _recording(self, verdict: Decision | None, access: str | None) -> Recording | None:
        """The session's recording, opened before the target speaks; None when it cannot be written (no recording,
        no session)."""
        ctx, client = self.ctx, self.client
        title = f"{ctx.username}@{self.name} ({self.mode})"
        writer: Recording
        try:
            if self.transfer:
                writer = self.log = TransferLog(self.path, title=title, background=True)
            else:
                writer = CastWriter(self.path, client.cols, client.rows, title=title,
                                    env={"TERM": client.term_type or "dumb", "SHELL": "/bin/sh"}, background=True)
        except OSError as e:
            log.error("%s: cannot create recording %s: %s", ctx.who, self.path, e)
            metrics.recording_failed("write")
            return None
        command = self.command
        writer.marker(f"session {self.sid}: {ctx.username} opened {self.name}" + (f": {command}" if command else ""))
        if access is not None:
            writer.marker(access)
        if verdict is not None:
            writer.marker(f"policy: {verdict.summary()}")
        if self.log is not None:
            for t in self.transfers:  # the exec form's transfers, as judged before it ran
                self.log.op({**record_of(t), "decision": verdict.action.label if verdict else "allow",
                             "rule": verdict.rule if verdict else None})
        return writer

    async def _open(self, target: Target, writer: Recording, approved: Decision | None = None,
                    live: LiveSession | None = None) -> str | None:
        """Attach the target to the relay (recorded from its first byte) and open it; why not, if it failed.
        ``approved``: the exec-form command a reviewer approved before it opened (its programs are not held again);
        ``live``: the session already on the live list (moderated: it waited there for its moderators)."""
        ctx, client, store = self.ctx, self.client, self.services.store
        hooks = SessionHooks(self.services, ctx, client, self.name, self.sid, writer)
        kind = target.line_filter(self.res, self.command, client.pty)
        filt = hooks.line_filter(kind, target.write) if kind is not None else None
        client.relay.attach(target, live.tee if live is not None else Tee(writer), filt, kind=self.kind,
                            keystrokes=self.mode == "interactive" and client.pty)
        proxied = type(target).proxied
        req = OpenRequest(
            name=self.name, command=self.command, pty=client.pty, term_type=client.term_type or "dumb",
            cols=client.cols, rows=client.rows, user=ctx.username, groups=tuple(ctx.groups), session_id=self.sid,
            config=self.services.config, sandbox=self.services.sandbox,
            hooks=(hooks.proxy_hooks(proxied, interactive=self.mode == "interactive", approved=approved)
                   if proxied else None),
            subsystem=self.subsystem, record=self.log.op if self.log is not None else None)
        try:
            await target.open(req)
        except TargetError as e:
            client.relay.detach()
            await asyncio.to_thread(store.audit, ctx.username, "session.open", "failed", resource=self.name,
                                    client_addr=ctx.peer, mode=self.mode, reason=str(e))
            if live is not None:  # in the store since it began to wait: its books are closed, its recording kept
                await self._end_unopened(live, writer, "failed", f"{self.name}: {e}")
            else:
                await asyncio.to_thread(writer.close)
                self.path.unlink(missing_ok=True)
            return f"{self.name}: {e}"
        return None

    async def _start_in_store(self) -> None:
        ctx, services = self.ctx, self.services
        await asyncio.to_thread(services.store.start_session, self.sid, user=ctx.username, resource=self.name,
                                kind=self.res.kind, mode=self.mode, command=self.command, client_addr=ctx.peer,
                                node=services.node, recording_path=self.path)
        await asyncio.to_thread(services.store.audit, ctx.username, "session.start", "ok", resource=self.name,
                                session_id=self.sid, client_addr=ctx.peer, mode=self.mode,
                                **({"grant": self.grant} if self.grant is not None else {}))
        if not self.counted:
            self.counted = True
            metrics.session_started(self.kind, self.name)

    def _live(self, tee: Tee, stop: Callable[[], None], moderation: Moderation | None = None) -> LiveSession:
        ctx, services = self.ctx, self.services
        live = LiveSession(self.sid, ctx.username, self.name, self.res.kind, self.mode, self.command, ctx.peer,
                           services.node, tee=tee, relay=self.client.relay, notify=self._notify, stop=stop,
                           moderation=moderation)
        services.live.add(live)
        self.client.live = live
        return live

    async def _await_moderators(self, writer: Recording) -> tuple[LiveSession, str | None]:
        """A moderated resource: the session is on the live list (and in the store, for other processes' F4) and
        waits until enough moderators observe it; why not, if it never opens (withdrawn, waited too long)."""
        res, client = self.res, self.client
        assert res.moderators is not None
        m = Moderation(self.ctx.username, tuple(res.moderators.roles), res.moderators.count, res.moderator_grace,
                       res.moderator_wait)
        await self._start_in_store()
        live = self._live(Tee(writer), client.withdraw.set, m)
        live.waiting = True
        writer.marker(f"waiting for {m.count} moderator(s) of role {', '.join(m.roles)}")
        store = self.services.store
        event = await asyncio.to_thread(store.audit, self.ctx.username, "session.moderate", "waiting",
                                        resource=self.name, session_id=self.sid, client_addr=self.ctx.peer,
                                        roles=list(m.roles), count=m.count, command=self.command)
        told = await asyncio.to_thread(routed_count, store, event)
        line = (f"waiting for a moderator — {told} notified: {m.count} of role {', '.join(m.roles)} must observe "
                f"this session (ssh -t {self.ctx.server_name} observe {self.sid})"
                + (" · Ctrl-C withdraws" if client.pty else ""))
        live.tee.said(f"bastion: {line}\r\n".encode())
        if client.pty:
            client.relay.say(f"\x1b[1;33mbastion: {line}\x1b[0m\r\n".encode())
        else:
            client.stderr(f"bastion: {line}\n")
        if await m.until(True, m.wait, client.withdraw) and not client.withdraw.is_set():
            live.waiting = False
            if client.pty:
                client.relay.discard_held()  # keys typed while nobody watched are not run now
            said = f"moderated by {', '.join(m.watching())}: the session opens"
            writer.marker(said)
            self._notify(said)
            return live, None
        if live.terminated is not None:  # a moderator ended it before it opened
            by, why = live.terminated
            outcome, why = "terminated", f"terminated by {by}: {why}"
        else:
            outcome = "unmoderated"
            why = "withdrawn" if client.withdraw.is_set() else f"no moderator joined within {m.wait:g}s"
        await self._end_unopened(live, writer, outcome, f"{self.name}: {why}")
        return live, f"{self.name}: {why}"

    async def _end_unopened(self, live: LiveSession, writer: Recording, outcome: str, message: str) -> None:
        sha = await self._wind_down(live, writer)
        await asyncio.to_thread(self.services.store.end_session, self.sid, outcome=outcome, exit_status=None,
                                message=message, sha256=sha, size=writer.bytes_written)
        self.outcome = outcome
        await asyncio.to_thread(self.services.store.audit, self.ctx.username, "session.end", outcome,
                                resource=self.name, session_id=self.sid, client_addr=self.ctx.peer)

    async def _carry(self, target: Target, writer: Recording, live: LiveSession | None = None) -> Ended:
        """The session runs: in the store, on the live list, under its time limit (and its moderators), until the
        target ends."""
        ctx, client, services = self.ctx, self.client, self.services
        if live is None:
            await self._start_in_store()
        client.relay.release()
        log.info("%s: session %s on %s started (%s)", ctx.who, self.sid, self.name, self.mode)
        started = time.monotonic()
        if live is None:
            live = self._live(client.relay.tee or Tee(writer), target.close)
        else:
            live.stop = target.close
        timers = duration_timers(live, time_limit(services.config, self.name, "max_session_duration"))
        enforcer = (asyncio.ensure_future(self._enforce(live, live.moderation)) if live.moderation is not None
                    else None)
        try:
            end = await target.wait()
        finally:
            for timer in timers:
                timer.cancel()
            if enforcer is not None:
                enforcer.cancel()
            client.relay.input_paused = None
            sha = await self._wind_down(live, writer)
        return await self._record_end(live, end, writer, sha, time.monotonic() - started)

    async def _enforce(self, live: LiveSession, m: Moderation) -> None:
        """Input pauses without enough moderators; the session ends after the grace period (outcome unmoderated)."""
        relay = self.client.relay

        def pause(dropped: Callable[[], None] | None) -> None:
            relay.input_paused = dropped

        await Enforcer(m, say=self._notify, mark=live.tee.writer.marker, pause=pause,
                       end=lambda why: live.expire("unmoderated", why)).run()

    def _notify(self, text: str) -> None:
        """A line for the operator from the bastion (a warning, a termination), on the terminal or stderr."""
        if self.client.pty:
            self.client.relay.say(f"\r\n\x1b[1;31mbastion: {text}\x1b[0m\r\n".encode())
        else:
            self.client.stderr(f"bastion: {text}\n")

    async def _wind_down(self, live: LiveSession, writer: Recording) -> str:
        """Off the live list, detached, held requests cancelled, the recording closed (its SHA-256)."""
        services = self.services
        services.live.remove(self.sid)
        live.ended.set()
        self.client.relay.detach()
        self.client.filter_withdraw.set()
        await services.approvals.cancelled(await asyncio.to_thread(
            services.approvals.db.cancel_pending, session_id=self.sid,
            reason="the session ended while the request was pending"))
        writer.marker(f"session {self.sid} ended")
        try:
            return await asyncio.to_thread(writer.close)  # waits for the disk: not on the loop
        except OSError:  # a write that failed on the way is reported here, at the latest
            metrics.recording_failed("write")
            raise

    async def _record_end(self, live: LiveSession, end: TargetExit, writer: Recording, sha: str,
                          duration: float) -> Ended:
        """Close the session in the store (which chains its recording), queue its indexing."""
        ctx, services = self.ctx, self.services
        outcome = "exited" if end.status is not None else ("killed" if end.signal else "lost")
        if self.client.gone:
            outcome = "client_disconnected"
        if live.terminated is not None:
            outcome = live.end_outcome
            by, why = live.terminated
            end = dataclasses.replace(end, message=f"terminated by {by}: {why}" if outcome == "terminated"
                                      else f"closed by the bastion: {why}")
        await asyncio.to_thread(services.store.end_session, self.sid, outcome=outcome, exit_status=end.status,
                                message=end.message, sha256=sha, size=writer.bytes_written)
        self.outcome = outcome
        await asyncio.to_thread(services.store.audit, ctx.username, "session.end", outcome, resource=self.name,
                                session_id=self.sid, client_addr=ctx.peer, exit_status=end.status)
        await services.auditing.closed(self.sid)
        log.info("%s: session %s on %s ended: %s", ctx.who, self.sid, self.name, end.message)
        return Ended(None, end.message, end.status, end.signal, duration)

