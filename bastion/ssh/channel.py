"""One SSH session channel: decides the form (menu, direct, exec), runs it through the relay, records it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from bastion.cli.audit import parse_when
from bastion.config import KubeResource, PgResource, SshResource
from bastion.oidc.login import LoginRefused
from bastion.oversight.live import LiveSession, Observer, ReadOnlyView, RemoteObserver
from bastion.rpc.proto import LOG_LEVELS, LOGIN_METHODS
from bastion.rpc.server import BrokerServer, RefusedRequest
from bastion.sessions.timeouts import IdleWatch, fmt_seconds, warning_lead
from bastion.store.approvals import ACCESS_RULE, DecisionRefused
from bastion.store.db import POLICY_FILTERS, new_session_id
from bastion.store.listen import CHANNEL
from bastion.targets.kube import KubectlExec
from bastion.targets.postgres import PsqlExec
from bastion.targets.ssh import SshEndpoint, TargetError
from bastion.terminal.cmdfilter import CommandFilter, secret_asks
from bastion.terminal.ptyproc import PtyProcess
from bastion.terminal.relay import PtyEndpoint, Relay, Tee
from policies.access import RequestTerms, decide_open, may_watch
from policies.engine import Action, Decision, PolicySet, evaluate, evaluate_kube, evaluate_sql
from policies.psql import judge_psql_line
from recorder.asciicast import CastError, CastWriter, iter_events
from recorder.storage import StorageError

if TYPE_CHECKING:
    from bastion.daemon import ConnectionContext

log = logging.getLogger(__name__)

TERM_RE = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
ACCESS_WAIT = 900.0  # seconds an access request waits for reviewers before it expires
MENU_LOG_LINES = 200  # a session process's log lines the daemon writes; a hostile one cannot flood the log
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # escaped in its log lines (tabs and newlines kept)
USAGE = """\
bastion: ways to connect
  ssh -t {host} RESOURCE            open RESOURCE interactively (no menu)
  ssh {host} RESOURCE -- COMMAND    run COMMAND on RESOURCE (non-interactive, recorded)
  ssh {host}                        (from a terminal) the menu of the resources you may open
"""


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


def parse_command(command: str) -> tuple[str, str | None]:
    """Split ``RES -- CMD`` (or ``RES CMD``) into the resource and the command text, verbatim."""
    text = command.strip()
    m = re.match(r"(\S+)(?:\s+(.*))?$", text, re.S)
    if not m:
        return "", None
    res, rest = m.group(1), (m.group(2) or "").strip()
    if rest.startswith("--"):
        rest = rest[2:].strip() if rest == "--" or rest[2:3].isspace() else rest
    return res, (rest or None)


def not_utf8(command: str) -> str | None:
    """Why an exec request's command (as :class:`BastionChannel` passes it) is not valid UTF-8, or None if it is."""
    raw = command.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"byte 0x{raw[e.start]:02x} at offset {e.start}"
    return None


class BastionChannel(asyncssh.SSHServerChannel[bytes]):  # encoding=None: a channel of bytes
    """A server session channel whose exec request reaches the session even when its command is not UTF-8.

    asyncssh answers such a request with a bare channel failure before the session hears of it (OpenSSH prints
    "exec request failed" and exits 255, the daemon logs nothing). Here the command is decoded with
    ``surrogateescape``, and the session refuses it with a reason and an exit status, like any other refusal."""

    def _process_exec_request(self, packet: Any) -> bool:
        command = packet.get_string()
        packet.check_end()
        return self._start_session(command=command.decode("utf-8", "surrogateescape"))


class BastionSession(asyncssh.SSHServerSession):
    """asyncssh session callbacks for one channel; the work happens in :meth:`run`."""

    def __init__(self, ctx: ConnectionContext):
        self.ctx = ctx
        self.chan: asyncssh.SSHServerChannel | None = None
        self.relay: Relay | None = None
        self.term_type: str | None = None
        self.cols, self.rows = 80, 24
        self.command: str | None = None
        self.menu: PtyEndpoint | None = None
        self._menu_exit: asyncio.Future[int | None] | None = None
        self._menu_log_lines = 0
        self._task: asyncio.Task[None] | None = None
        self._opening = False
        self._targets: set[SshEndpoint] = set()
        self._client_gone = False
        self._observer: ReadOnlyView | None = None
        self._withdraw = asyncio.Event()
        self._filter_withdraw = asyncio.Event()
        self._login_code: Any = None  # a device flow started by this session's TUI
        self._live: LiveSession | None = None  # the brokered session this channel carries now
        self._menu_broker: BrokerServer | None = None
        self._idle: asyncio.Task[None] | None = None
        self._closed_reason: str | None = None  # the bastion closed this connection (idle): why
        self._login_cancel: asyncio.Event | None = None

    # -- asyncssh callbacks -----------------------------------------------------------------------------
    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        self.term_type = term_type if TERM_RE.match(term_type or "") else "xterm-256color"
        self.cols, self.rows = _sane_size(term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        log.info("%s: refused subsystem %r", self.ctx.who, subsystem[:64])
        return False

    def session_started(self) -> None:
        assert self.chan is not None
        self.relay = Relay(self.chan, self.cols, self.rows)
        self.relay.on_interrupt = self._withdraw.set
        self._task = asyncio.get_running_loop().create_task(self._run_guarded())
        if self.term_type is not None:  # without a terminal (scripts, agents) input may never come
            watch = IdleWatch(self.relay, self._idle_timeout, self._idle_warn, self._idle_close)
            self._idle = asyncio.get_running_loop().create_task(watch.run())

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.relay is not None:
            self.relay.from_client(data)

    def eof_received(self) -> bool:
        if self.relay is not None:
            self.relay.eof()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.cols, self.rows = _sane_size(width, height)
        if self.relay is not None:
            self.relay.resize(self.cols, self.rows)

    def signal_received(self, signal: str) -> None:
        if self.relay is not None:
            self.relay.signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.relay is not None:
            self.relay.send_break(msec)
        return True

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.pause_output()

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.resume_output()

    def connection_lost(self, exc: Exception | None) -> None:
        # No cancellation: closing the endpoints makes _run finish normally, so every session is closed in the
        # store and its recording hashed even when the client vanishes.
        self._client_gone = True
        if self._idle is not None:
            self._idle.cancel()
        self._withdraw.set()
        self._filter_withdraw.set()
        if self._login_cancel is not None:
            self._login_cancel.set()  # a sign-in of a vanished client never completes (nor binds its key)
        for ep in list(self._targets):
            ep.close()
        if self._observer is not None:
            self._observer.finish("the observer disconnected")
        if self.menu is not None:
            self.menu.close()

    # -- the forms --------------------------------------------------------------------------------------
    async def _run_guarded(self) -> None:
        status = 1
        try:
            status = await self._run()
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("%s: session failed", self.ctx.who)
            self._stderr("bastion: internal error; the session was closed (see the daemon log)\n")
        if self._idle is not None:
            self._idle.cancel()
        if self._closed_reason is not None:
            self._stderr(f"\nbastion: {self._closed_reason}: connection closed\n")
        if self.chan is not None and not self._client_gone:
            try:
                self.chan.exit(status)
            except (OSError, asyncssh.Error):  # gone between the last write and the exit status
                self._client_gone = True

    # -- time limits --------------------------------------------------------------------------------------
    def _time_limit(self, resource: str | None, name: str) -> float | None:
        """A time limit (``idle_timeout``, ``max_session_duration``): the resource's own, else the daemon's."""
        cfg = self.ctx.daemon.config
        res = cfg.resources.get(resource) if resource is not None else None
        return getattr(res, name, None) or getattr(cfg.limits, name)

    def _idle_timeout(self) -> float | None:
        """The idle timeout now: that of the open session's resource, else the daemon's."""
        return self._time_limit(self._live.resource if self._live is not None else None, "idle_timeout")

    def _idle_warn(self, left: float) -> None:
        text = f"no input for a while: this connection closes in {fmt_seconds(left)} unless you type something"
        if self._live is not None:
            self._live.notify(text)
        elif self._menu_broker is not None:
            self._menu_broker.notify("notice", {"text": text})

    def _idle_close(self) -> None:
        timeout = self._idle_timeout() or 0
        self._closed_reason = f"no input for {fmt_seconds(timeout)}"
        log.info("%s: closing the connection: %s", self.ctx.who, self._closed_reason)
        self.ctx.daemon.spawn_bg(self._close_idle(self._closed_reason))

    async def _close_idle(self, reason: str) -> None:
        """End what this connection carries (a brokered session first, recorded as idle), then its menu."""
        ctx = self.ctx
        await asyncio.to_thread(ctx.daemon.store.audit, ctx.username, "connection.idle", "closed",
                                client_addr=ctx.peer, reason=reason)
        if self._live is not None:
            self._live.expire("idle", reason)
            deadline = time.monotonic() + 30
            while self._live is not None and time.monotonic() < deadline:  # until it is closed in the store
                await asyncio.sleep(0.05)
        if self._observer is not None:
            self._observer.finish(reason)
        if self.menu is not None:
            self.menu.close()

    async def _run(self) -> int:
        pty = self.term_type is not None
        if self.command is None:
            if not pty:
                self._stderr(USAGE.format(host=self.ctx.server_name))
                return 2
            return await self._run_menu()
        if self.ctx.pending_login:
            self._stderr("bastion: this key is not signed in. Sign in first, with a terminal: "
                         f"ssh {self.ctx.server_name}\n"
                         "(after that, this key works without a sign-in until its binding expires)\n")
            return 1
        bad = not_utf8(self.command)
        if bad is not None:
            text = self.command.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            log.info("%s: refused an exec request whose command is not valid UTF-8 (%s): %r", self.ctx.who, bad,
                     text[:200])
            await asyncio.to_thread(self.ctx.daemon.store.audit, self.ctx.username, "session.open", "denied",
                                    client_addr=self.ctx.peer, mode="exec", text=text[:4000],
                                    reason=f"the command is not valid UTF-8 ({bad})")
            self._stderr(f"bastion: the command is not valid UTF-8 ({bad}); nothing was run\n")
            return 1
        resource, cmd = parse_command(self.command)
        if not resource or resource in ("help", "-h", "--help"):
            self._stderr(USAGE.format(host=self.ctx.server_name))
            return 0 if resource else 2
        if cmd is None and not pty:
            self._stderr(f"bastion: {resource}: an interactive session needs a terminal (ssh -t).\n"
                         + USAGE.format(host=self.ctx.server_name))
            return 2
        out = await self.open_target(resource, command=cmd)
        if not out.ok:
            self._stderr(f"bastion: {out.message}\n")
            if self._client_gone:  # a hang-up (Ctrl-C, a killed client) while held or refused is normal
                log.info("%s: %s: the client hung up before it was told: %s", self.ctx.who, resource[:64],
                         out.message)
            return 1
        if out.exit_signal:
            return 128 + _signal_number(out.exit_signal)
        return out.exit_status if out.exit_status is not None else 255

    def _stderr(self, text: str) -> None:
        if self.chan is not None:
            data = text.encode()
            if self.term_type is not None:
                data = data.replace(b"\n", b"\r\n")
            try:
                self.chan.write(data, asyncssh.EXTENDED_DATA_STDERR)
            except (OSError, asyncssh.Error):  # the client hung up while we were telling it something
                self._client_gone = True

    async def _run_menu(self) -> int:
        """Spawn the session process (Textual menu) on a fresh pty and serve its broker RPC."""
        assert self.relay is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        home = tempfile.mkdtemp(prefix="bastion-session-")
        try:
            env = {"TERM": self.term_type or "xterm-256color", "LANG": "C.UTF-8", "HOME": home,
                   "PATH": "/usr/bin:/bin", "BASTION_RPC_FD": str(theirs.fileno())}
            sandbox = self.ctx.daemon.sandbox
            sandbox.prepare(Path(home))
            argv = sandbox.wrap([sys.executable, "-I", "-m", "tui"], home=Path(home), env=env,
                                ro_paths=self.ctx.daemon.menu_paths)
            try:
                proc = PtyProcess(argv, env={} if sandbox.active else env, cols=self.cols, rows=self.rows,
                                  pass_fds=[theirs.fileno()], cwd=home, wrapper=sandbox.active)
            finally:
                theirs.close()
            self._menu_exit = asyncio.get_running_loop().create_future()
            fut = self._menu_exit

            def on_exit(status: int | None) -> None:
                if not fut.done():
                    fut.set_result(status)

            self.menu = PtyEndpoint(proc, self.relay, on_exit)
            self.relay.set_base(self.menu)
            self.relay.release()
            broker = BrokerServer(ours, {name: self._gated(name, h) for name, h in {
                "hello": self._rpc_hello,
                "resources.list": self._rpc_resources,
                "resource.open": self._rpc_open,
                "queue.list": self._rpc_queue,
                "requests.mine": self._rpc_mine,
                "request.decide": self._rpc_decide,
                "request.revoke": self._rpc_revoke,
                "sessions.live": self._rpc_live,
                "session.observe": self._rpc_observe,
                "session.terminate": self._rpc_terminate,
                "recordings.list": self._rpc_recordings,
                "recording.detail": self._rpc_recording_detail,
                "recording.play": self._rpc_recording_play,
                "login.start": self._rpc_login_start,
                "login.wait": self._rpc_login_wait,
                "login.cancel": self._rpc_login_cancel,
                "log": self._rpc_log,
            }.items()}, self.ctx.who)
            self._menu_broker = broker
            serve = asyncio.ensure_future(broker.serve())
            listeners = self.ctx.daemon.approvals.listeners

            def changed() -> None:
                broker.notify("queue.changed")

            listeners.add(changed)
            try:
                status = await fut
            finally:
                listeners.discard(changed)
                serve.cancel()
            return 0 if status in (0, None) else 1
        finally:
            ours.close()
            shutil.rmtree(home, ignore_errors=True)

    # -- broker RPC handlers (identity is the connection's, never the request's) --------------------------
    def _gated(self, method: str, handler: Any) -> Any:
        """Until a pending OIDC login succeeds, only the login methods answer."""
        async def gated(params: dict[str, Any]) -> Any:
            if self.ctx.pending_login and method not in LOGIN_METHODS:
                raise RefusedRequest("login_required", "sign in first")
            return await handler(params)

        return gated

    async def _rpc_log(self, params: dict[str, Any]) -> None:
        """A log record of the session process, written to the daemon's log under the operator's name."""
        level = params.get("level", "")
        if level not in LOG_LEVELS:
            raise RefusedRequest("bad_level", f"level must be one of {', '.join(LOG_LEVELS)}")
        self._menu_log_lines += 1
        if self._menu_log_lines > MENU_LOG_LINES:
            if self._menu_log_lines == MENU_LOG_LINES + 1:
                log.warning("tui[%s]: more than %d log lines; dropping the rest", self.ctx.who, MENU_LOG_LINES)
            return
        text = CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", params.get("message", ""))
        text = text.replace("\n", "\n    | ")  # a traceback stays readable; no line can pass for the daemon's own
        log.log(getattr(logging, level), "tui[%s]: %s", self.ctx.who, text)

    async def _rpc_hello(self, params: dict[str, Any]) -> dict[str, Any]:
        g = self.ctx.grants
        return {"user": self.ctx.username, "groups": sorted(self.ctx.groups), "roles": list(g.roles),
                "review": g.review, "audit": g.audit, "server": self.ctx.server_name,
                "login_required": self.ctx.pending_login}

    async def _rpc_login_start(self, params: dict[str, Any]) -> dict[str, Any]:
        login = self.ctx.daemon.login
        if not self.ctx.pending_login or login is None:
            raise RefusedRequest("refused", "already signed in")
        if self._login_code is not None:
            raise RefusedRequest("busy", "a sign-in is already in progress")
        try:
            code = await login.start(self.ctx)
        except LoginRefused as e:
            raise RefusedRequest("login_failed", str(e)) from None
        self._login_code = code
        self._login_cancel = asyncio.Event()
        return {"verification_uri": code.verification_uri, "user_code": code.user_code,
                "verification_uri_complete": code.verification_uri_complete or "",
                "expires_in": min(code.expires_in, login.cfg.login_timeout)}

    async def _rpc_login_wait(self, params: dict[str, Any]) -> dict[str, Any]:
        login, code = self.ctx.daemon.login, self._login_code
        if login is None or code is None:
            raise RefusedRequest("refused", "no sign-in in progress")
        try:
            await login.finish(self.ctx, code, method="device-flow+key", cancelled=self._login_cancel)
        except LoginRefused as e:
            raise RefusedRequest("login_failed", str(e)) from None
        finally:
            self._login_code = None
        return await self._rpc_hello({})

    async def _rpc_login_cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        if self._login_cancel is not None:
            self._login_cancel.set()
        return {}

    async def _rpc_resources(self, params: dict[str, Any]) -> dict[str, Any]:
        cfg, ctx = self.ctx.daemon.config, self.ctx
        out = [{"name": n, "kind": cfg.resources[n].kind, "description": cfg.resources[n].description,
                "access": "open"} for n in ctx.grants.permitted(cfg.resources)]
        for n in ctx.grants.requestable_only(cfg.resources):
            terms = ctx.grants.request_terms(n)
            assert terms is not None
            grant = await asyncio.to_thread(ctx.daemon.approvals.db.access_granted, ctx.username, n, terms.ttl)
            out.append({"name": n, "kind": cfg.resources[n].kind, "description": cfg.resources[n].description,
                        "access": "granted" if grant else "request", "until": grant and grant["until"],
                        "ttl": terms.ttl})
        return {"resources": sorted(out, key=lambda r: r["name"])}

    async def _rpc_open(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name", "")
        if self._opening:
            raise RefusedRequest("busy", "a session is already open on this connection")
        out = await self.open_target(name, command=None, reason=params.get("reason", ""))
        return out.as_dict()

    async def _rpc_queue(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.ctx.grants.review:
            raise RefusedRequest("forbidden", "you have no reviewer role")
        return await self.ctx.daemon.approvals.queue(self.ctx)

    async def _rpc_mine(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self.ctx.daemon.approvals.mine(self.ctx)

    @staticmethod
    def _request_id(params: dict[str, Any]) -> int:
        rid = params.get("id", "")
        if not rid.isdigit() or len(rid) > 12:
            raise RefusedRequest("bad_request", "id must be a request number")
        return int(rid)

    async def _rpc_revoke(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.ctx.grants.review:
            raise RefusedRequest("forbidden", "you have no reviewer role")
        rid = self._request_id(params)
        try:
            return await self.ctx.daemon.approvals.revoke(self.ctx, rid, params.get("reason", ""))
        except DecisionRefused as e:
            raise RefusedRequest("refused", str(e)) from None

    async def _rpc_decide(self, params: dict[str, Any]) -> dict[str, Any]:
        rid, decision = self._request_id(params), params.get("decision", "")
        if decision not in ("approve", "deny"):
            raise RefusedRequest("bad_request", "decision must be approve or deny")
        try:
            return await self.ctx.daemon.approvals.decide(self.ctx, rid, decision == "approve",
                                                          params.get("reason", ""))
        except DecisionRefused as e:
            raise RefusedRequest("refused", str(e)) from None

    # -- live sessions: list, observe, terminate ---------------------------------------------------------
    def _watchable(self, sid: str) -> LiveSession:
        """A live session on this node that this user may watch (the same answer for unknown and forbidden)."""
        daemon = self.ctx.daemon
        live = daemon.live.get(sid) if isinstance(sid, str) and len(sid) <= 64 else None
        if live is None or not may_watch(self.ctx.grants, daemon.config.roles, live.resource):
            raise RefusedRequest("not_found", f"no live session {str(sid)[:64]!r} that you may watch on this node")
        return live

    async def _remote_active(self, sid: str | None = None) -> list[dict[str, Any]]:
        """Active sessions that other nodes carry (several nodes share a PostgreSQL store) and this user may
        watch."""
        daemon = self.ctx.daemon
        if daemon.store.engine.dialect.name != "postgresql":
            return []
        rows = await asyncio.to_thread(daemon.store.sessions, 500, outcome="active")
        return [r for r in rows if r["node"] != daemon.node and (sid is None or r["id"] == sid)
                and may_watch(self.ctx.grants, daemon.config.roles, r["resource"])]

    async def _rpc_live(self, params: dict[str, Any]) -> dict[str, Any]:
        g, daemon = self.ctx.grants, self.ctx.daemon
        if not (g.review or g.audit):
            raise RefusedRequest("forbidden", "live sessions are for reviewers and auditors")
        here = [s.as_dict() for s in daemon.live.list() if may_watch(g, daemon.config.roles, s.resource)]
        now = time.time()
        there = [{"id": r["id"], "user": r["user"], "resource": r["resource"], "kind": r["kind"], "mode": r["mode"],
                  "command": r["command"] or "", "client_addr": r["client_addr"], "node": r["node"],
                  "started": 0, "age": round(now - datetime.fromisoformat(r["started_at"]).timestamp(), 1),
                  "observers": [], "remote": True} for r in await self._remote_active()]
        return {"sessions": here + there}

    async def _rpc_observe(self, params: dict[str, Any]) -> dict[str, Any]:
        sid = params.get("id", "")
        if isinstance(sid, str) and self.ctx.daemon.live.get(sid) is None:
            remote = await self._remote_active(sid)
            if remote:
                return await self._observe_remote(remote[0])
        live = self._watchable(sid)
        if self._opening or self.relay is None:
            raise RefusedRequest("busy", "a session is already open on this connection")
        ctx = self.ctx
        self._opening = True
        await asyncio.to_thread(ctx.daemon.store.audit, ctx.username, "session.observe", "ok",
                                resource=live.resource, session_id=live.sid, client_addr=ctx.peer, user=live.user)
        log.info("%s: observing session %s of %s", ctx.who, live.sid, live.user)
        live.tee.writer.marker(f"observed by {ctx.username}")
        self._observer = Observer(self.relay, live, ctx.username)
        try:
            reason = await self._observer.run()
        finally:
            self._observer = None
            self._opening = False
        return {"ok": True, "message": f"{live.user}@{live.resource}: {reason}", "session_id": live.sid}

    async def _observe_remote(self, r: dict[str, Any]) -> dict[str, Any]:
        """Observe a session another node carries, from its recording in the shared recordings directory."""
        ctx, daemon = self.ctx, self.ctx.daemon
        path = Path(r["recording"]) if r["recording"] else None
        if path is None or not await asyncio.to_thread(path.is_file):
            raise RefusedRequest("elsewhere", f"node {r['node']} carries this session and its recording is not on "
                                              "storage this node shares: connect to that node to observe "
                                              "(terminating works from here)")
        if self._opening or self.relay is None:
            raise RefusedRequest("busy", "a session is already open on this connection")
        self._opening = True
        sid = r["id"]
        try:
            await asyncio.to_thread(daemon.store.audit, ctx.username, "session.observe", "ok",
                                    resource=r["resource"], session_id=sid, client_addr=ctx.peer, user=r["user"],
                                    node=r["node"])
            await asyncio.to_thread(daemon.store.notify, CHANNEL, json.dumps(
                {"kind": "observe", "id": sid, "by": ctx.username, "node": r["node"], "from": daemon.node}))
            log.info("%s: observing session %s of %s on node %s", ctx.who, sid, r["user"], r["node"])

            async def still_active() -> bool:
                row = await asyncio.to_thread(daemon.store.session, sid)
                return row is not None and row["outcome"] == "active"

            self._observer = RemoteObserver(self.relay, path, f"{r['user']}@{r['resource']} on node {r['node']}",
                                            still_active)
            reason = await self._observer.run()
        finally:
            self._observer = None
            self._opening = False
        return {"ok": True, "message": f"{r['user']}@{r['resource']} (node {r['node']}): {reason}",
                "session_id": sid}

    async def _rpc_terminate(self, params: dict[str, Any]) -> dict[str, Any]:
        sid = params.get("id", "")
        reason = params.get("reason", "")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            raise RefusedRequest("bad_request", "give a reason (the operator sees it), at most 500 characters")
        reason = " ".join(reason.split())
        ctx = self.ctx
        if isinstance(sid, str) and ctx.daemon.live.get(sid) is None:
            remote = await self._remote_active(sid)
            if remote:  # the node that carries it ends it (it LISTENs); checked here, audited here
                r = remote[0]
                await asyncio.to_thread(ctx.daemon.store.audit, ctx.username, "session.terminate", "ok",
                                        resource=r["resource"], session_id=sid, client_addr=ctx.peer,
                                        user=r["user"], reason=reason, node=r["node"])
                await asyncio.to_thread(ctx.daemon.store.notify, CHANNEL, json.dumps(
                    {"kind": "terminate", "id": sid, "by": ctx.username, "reason": reason, "node": r["node"]}))
                log.warning("%s: asked node %s to terminate session %s of %s: %s", ctx.who, r["node"], sid,
                            r["user"], reason)
                return {"ok": True, "message": f"terminating {r['user']}@{r['resource']} on node {r['node']}"}
        live = self._watchable(sid)
        await asyncio.to_thread(ctx.daemon.store.audit, ctx.username, "session.terminate", "ok",
                                resource=live.resource, session_id=live.sid, client_addr=ctx.peer, user=live.user,
                                reason=reason)
        log.warning("%s: terminated session %s of %s: %s", ctx.who, live.sid, live.user, reason)
        live.terminate(ctx.username, reason)
        return {"ok": True, "message": f"terminated {live.user}@{live.resource} ({live.sid})"}

    # -- recordings, for auditors -------------------------------------------------------------------------
    def _auditor(self) -> None:
        if not self.ctx.grants.audit:
            raise RefusedRequest("forbidden", "recordings are for auditors")

    async def _rpc_recordings(self, params: dict[str, Any]) -> dict[str, Any]:
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
        rows = await asyncio.to_thread(
            self.ctx.daemon.store.sessions, 500, user=params.get("user") or None,
            resource=params.get("resource") or None, since=since, outcome=params.get("outcome") or None,
            policy=policy)
        keep = ("id", "user", "resource", "kind", "mode", "command", "started_at", "duration", "outcome",
                "exit_status")
        return {"sessions": [{k: r[k] for k in keep} | {"recorded": bool(r["recording"])} for r in rows]}

    async def _recording_row(self, sid: Any) -> dict[str, Any]:
        """The session's row, its ``recording`` made a local file (a bucket's object is fetched and checked)."""
        self._auditor()
        row = await asyncio.to_thread(self.ctx.daemon.store.session, str(sid)[:64]) if isinstance(sid, str) else None
        if row is None or not row["recording"]:
            raise RefusedRequest("not_found", f"no recording of session {str(sid)[:64]!r}")
        if row["outcome"] == "active":
            return row  # being written here (a live session's file is local)
        try:
            path = await asyncio.to_thread(self.ctx.daemon.storage.local, row["recording"], row["sha256"])
        except (OSError, StorageError) as e:
            log.warning("recording of session %s unavailable: %s", row["id"], e)
            raise RefusedRequest("unavailable", f"the recording of {row['id']} cannot be read: {e}") from None
        return row | {"recording": str(path)}

    async def _rpc_recording_detail(self, params: dict[str, Any]) -> dict[str, Any]:
        row = await self._recording_row(params.get("id"))
        store = self.ctx.daemon.store

        def markers() -> list[list[Any]]:
            out: list[list[Any]] = []
            try:
                for ev in iter_events(row["recording"]):
                    if ev.code == "m" and len(out) < 2000:
                        out.append([round(ev.time, 3), ev.data[:500]])
            except (CastError, OSError):  # an active session on a node whose disk is not shared
                pass
            return out

        approvals = await asyncio.to_thread(self.ctx.daemon.approvals.db.recent, session_id=row["id"], limit=200)
        events = await asyncio.to_thread(store.audit_events, 200, session_id=row["id"])
        keep = ("id", "user", "resource", "kind", "mode", "command", "client_addr", "started_at", "ended_at",
                "duration", "outcome", "exit_status", "message", "sha256")
        return {"session": {k: row[k] for k in keep}, "markers": await asyncio.to_thread(markers),
                "approvals": [{"id": a["id"], "text": a["text"][:500], "rule": a["rule"], "status": a["status"],
                               "status_reason": a["status_reason"][:300],
                               "decisions": [{"reviewer": d["reviewer"], "approve": d["approve"],
                                              "reason": d["reason"][:300]} for d in a["decisions"]]}
                              for a in approvals],
                "events": [{"ts": e.ts.isoformat(), "actor": e.actor, "action": e.action, "outcome": e.outcome}
                           for e in reversed(events)]}

    async def _rpc_recording_play(self, params: dict[str, Any]) -> dict[str, Any]:
        row = await self._recording_row(params.get("id"))
        if self._opening or self.relay is None or self.term_type is None:
            raise RefusedRequest("busy", "a session is already open on this connection")
        ctx = self.ctx
        self._opening = True
        await asyncio.to_thread(ctx.daemon.store.audit, ctx.username, "recording.replay", "ok",
                                resource=row["resource"], session_id=row["id"], client_addr=ctx.peer)
        try:
            await self._play(row["recording"])
        except OSError as e:  # an active session on a node whose disk is not shared, or a vanished file
            raise RefusedRequest("unavailable", f"the recording of {row['id']} cannot be read: {e.strerror}") from None
        finally:
            self._opening = False
        return {"ok": True, "message": f"replay of {row['id']} closed",
                "session_id": row["id"]}

    async def _play(self, path: str) -> int | None:
        """The player on a fresh pty, as the active endpoint of this connection's relay (not recorded)."""
        assert self.relay is not None
        home = Path(tempfile.mkdtemp(prefix="bastion-replay-"))
        try:
            return await self._run_player(path, home)
        finally:
            shutil.rmtree(home, ignore_errors=True)

    async def _run_player(self, path: str, home: Path) -> int | None:
        """The player reads a recording (output of targets, so input an attacker shaped) and the auditor's keys:
        it runs in the session sandbox, seeing the recording and its keyframes read-only and nothing else."""
        assert self.relay is not None
        daemon = self.ctx.daemon
        sandbox = daemon.sandbox
        env = {"TERM": self.term_type or "xterm-256color", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin",
               "HOME": str(home)}
        files = [p for p in (Path(path), Path(f"{path}.idx")) if p.is_file()]  # the cast and its keyframes
        if sandbox.uid is not None:  # a root daemon's recordings (0640) are not the sandbox user's to read: a copy
            for f in files:
                await asyncio.to_thread(shutil.copyfile, f, home / f.name)
                sandbox.prepare(home / f.name)
            path, files = str(home / Path(path).name), []
        sandbox.prepare(home)
        argv = sandbox.wrap([sys.executable, "-I", "-m", "recorder.player", path], home=home, env=env,
                            ro_paths=[*daemon.player_paths, *files])
        proc = PtyProcess(argv, env={} if sandbox.active else env, cols=self.cols, rows=self.rows, cwd=str(home),
                          wrapper=sandbox.active)
        exited: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

        def on_exit(status: int | None) -> None:
            if not exited.done():
                exited.set_result(status)

        ep = PtyEndpoint(proc, self.relay, on_exit)
        self._targets.add(ep)  # type: ignore[arg-type]  # closed with the others on hang-up
        self.relay.attach(ep, None)
        self.relay.release()
        try:
            return await exited
        finally:
            self.relay.detach()
            self._targets.discard(ep)  # type: ignore[arg-type]
            ep.close()

    # -- brokering a target ------------------------------------------------------------------------------
    async def open_target(self, name: str, *, command: str | None, reason: str = "") -> Outcome:
        """Check access (asking reviewers first where access is granted on request), connect to the target,
        attach it to the relay with recording, wait for its end."""
        assert self.relay is not None
        ctx, daemon = self.ctx, self.ctx.daemon
        store = daemon.store
        mode = "exec" if command is not None else "interactive"
        decision = decide_open(ctx.grants, name, daemon.config.resources)
        if not decision.allowed and decision.request is None:
            await asyncio.to_thread(store.audit, ctx.username, "session.open", "denied", resource=name[:255],
                                    client_addr=ctx.peer, mode=mode, reason=decision.reason)
            log.info("%s: open %r denied: %s", ctx.who, name[:64], decision.reason)
            return Outcome(False, decision.reason)
        if self._opening:
            return Outcome(False, "a session is already open on this connection")
        self._opening = True
        assert self.relay is not None
        self.relay.hold()
        sid = new_session_id()
        try:
            access = None
            if decision.request is not None:
                access = await self._access(name, sid, decision.request, reason, command)
                if isinstance(access, Outcome):
                    return access
            verdict: Decision | None = None
            if command is not None:
                verdict = self._judge(name, command)
                refusal = await self._enforce_exec(name, sid, verdict)
                if refusal is not None:
                    return refusal
            return await self._broker(name, command, mode, sid, verdict, access)
        finally:
            self._opening = False
            self.relay.detach()

    async def _access(self, name: str, sid: str, terms: RequestTerms, reason: str,
                      command: str | None) -> str | Outcome:
        """Access on request: an unexpired grant, or a new request that reviewers of ``name`` decide while the
        operator waits (Ctrl-C withdraws). The grant's description for the recording, or the refusal."""
        ctx, approvals = self.ctx, self.ctx.daemon.approvals
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
        until = time.strftime("%H:%M UTC", time.gmtime(grant["until"]))
        by = ", ".join(d["reviewer"] for d in grant["decisions"] if d["approve"])
        return f"access to {name} granted by {by} (request #{grant['id']}) until {until}"

    def _judge(self, name: str, command: str) -> Decision | None:
        """The policy decision for ``command`` on resource ``name`` (None: the resource has no policy)."""
        cfg = self.ctx.daemon.config
        res = cfg.resources[name]
        if res.policy is None or res.kind in ("postgres", "kubernetes"):  # judged at the wire / API proxy
            return None
        policy = res.policy
        # with a pty (ssh -t) pagers and editors read the operator's keys: judged as such
        return evaluate(cfg.policies[policy], command, groups=self.ctx.groups, resource=name,
                        terminal=self.term_type is not None)

    async def _enforce_exec(self, name: str, sid: str, d: Decision | None) -> Outcome | None:
        """Block, warn or hold an exec-form command; None means go ahead."""
        if d is None or d.action == Action.ALLOW:
            return None
        ctx, store = self.ctx, self.ctx.daemon.store
        if d.action == Action.BLOCK:
            await asyncio.to_thread(store.audit, ctx.username, "command.blocked", "blocked", resource=name,
                                    client_addr=ctx.peer, rule=d.rule, text=d.text, mode="exec")
            log.info("%s: blocked on %s by rule %s: %r", ctx.who, name, d.rule, d.text[:200])
            return Outcome(False, f"blocked by rule {d.rule!r}: {d.reason}")
        if d.action == Action.WARN:
            self._stderr(f"bastion: warning (rule {d.rule!r}): {d.reason}\n")
            return None
        return await self._hold(name, sid, d)

    async def _hold(self, name: str, sid: str, d: Decision, what: str = "") -> Outcome | None:
        """Ask reviewers about ``d`` before the session opens, telling the operator on stderr; None if approved."""
        ctx, approvals = self.ctx, self.ctx.daemon.approvals
        if not self._client_gone:
            self._withdraw.clear()
        req = await approvals.request(ctx, name, sid, d)
        self._stderr(f"bastion: {what + ': ' if what else ''}waiting for approval (request #{req['id']}, rule "
                     f"{req['rule']}) \u2014 Ctrl-C to withdraw\n")
        final = await approvals.wait(req["id"], d.timeout or 600.0, self._withdraw)
        if final["status"] == "approved":
            self._stderr(f"bastion: request #{req['id']} {final['status_reason']}\n")
            return None
        return Outcome(False, f"request #{req['id']} {final['status']}: {final['status_reason']}")

    async def _approval(self, name: str, sid: str, d: Decision, writer: CastWriter,
                        say: Callable[[str], None]) -> dict[str, Any]:
        """Ask reviewers about ``d`` for this session and wait; Ctrl-C or a hang-up withdraws."""
        approvals = self.ctx.daemon.approvals
        if not self._client_gone:
            self._filter_withdraw.clear()
        req = await approvals.request(self.ctx, name, sid, d)
        say(f"waiting for approval (request #{req['id']}, rule {req['rule']}) \u2014 Ctrl-C to withdraw")
        final = await approvals.wait(req["id"], d.timeout or 600.0, self._filter_withdraw)
        writer.marker(f"approval #{req['id']}: {final['status']} ({final.get('status_reason', '')})")
        return final

    def _wire_hooks(self, name: str, sid: str, writer: CastWriter, *, interactive: bool,
                    kind: str = "sql") -> dict[str, Any]:
        """What a protocol proxy (``sql``: the wire proxy, ``kube``: the API proxy) needs to judge, hold and record
        the statements or requests of this session."""
        ctx, daemon = self.ctx, self.ctx.daemon
        res = daemon.config.resources[name]
        policy = daemon.config.policies.get(res.policy or "") or PolicySet("(none)")

        def note(d: Decision) -> None:
            writer.marker(f"{kind}: {d.summary()}: {d.text}")
            if d.action != Action.ALLOW:
                daemon.spawn_bg(asyncio.to_thread(
                    daemon.store.audit, ctx.username, f"{kind}.{d.action.label}", d.action.label, resource=name,
                    session_id=sid, client_addr=ctx.peer, rule=d.rule, text=d.text[:4000]))

        relay = self.relay
        assert relay is not None

        def say(text: str) -> None:
            if interactive:  # psql waits for the server: the line goes under its prompt, recorded
                relay.say(f"\x1b[33mbastion: {text}\x1b[0m\r\n".encode())
            else:
                self._stderr(f"bastion: {text}\n")

        async def hold(d: Decision) -> dict[str, Any]:
            final = await self._approval(name, sid, d, writer, say)
            if final.get("status") == "approved":  # a refusal reaches psql as the statement's error instead
                say(str(final.get("status_reason") or "approved"))
            return final

        if kind == "kube":
            forward = isinstance(res, KubeResource) and res.port_forward
            return {"judge": lambda req: evaluate_kube(policy, req, groups=ctx.groups, resource=name,
                                                       port_forward=forward),
                    "hold": hold, "note": note, "withdraw": self._filter_withdraw.set, "event": writer.marker}
        return {"judge": lambda sql: evaluate_sql(policy, sql, groups=ctx.groups, resource=name),
                "hold": hold, "note": note, "withdraw": self._filter_withdraw.set}

    def _command_filter(self, name: str, sid: str, ep: SshEndpoint | PsqlExec, writer: CastWriter, *,
                        psql: bool = False) -> CommandFilter:
        """The interactive filter for a brokered shell on a resource with a policy, or (``psql``) the meta-command
        filter of an unrestricted interactive psql (its SQL is judged at the wire)."""
        ctx, daemon = self.ctx, self.ctx.daemon
        if psql:
            judge: Callable[[str], Decision] = judge_psql_line
        else:
            policy = daemon.config.policies[daemon.config.resources[name].policy or ""]

            def judge(text: str) -> Decision:  # typed at a prompt: bash history expansion may rewrite it
                return evaluate(policy, text, groups=ctx.groups, resource=name, interactive=True)
        withdraw = self._filter_withdraw
        assert self.relay is not None
        relay = self.relay

        def note(text: str, d: Decision, unechoed: bool) -> None:
            """A marker for each decision; an audit event for each one that is not a plain allow, and for every
            line typed without echo (a command typed blind, or the withheld answer to a secret prompt)."""
            if psql and d.action == Action.ALLOW and not unechoed:
                return  # each statement gets its own marker from the wire proxy
            writer.marker(f"policy: {d.summary()}: {text}")
            if d.action != Action.ALLOW or unechoed:
                daemon.spawn_bg(asyncio.to_thread(
                    daemon.store.audit, ctx.username, f"command.{d.action.label}", d.action.label, resource=name,
                    session_id=sid, client_addr=ctx.peer, rule=d.rule, text=text, mode="interactive",
                    **({"echo": "off"} if unechoed else {})))

        async def approve(d: Decision) -> dict[str, Any]:
            def say(text: str) -> None:
                relay.say(f"\r\n\x1b[33mbastion: {text}\x1b[0m".encode())

            final = await self._approval(name, sid, d, writer, say)
            relay.say(b"\r\x1b[K")
            return final

        return CommandFilter(
            cols=self.cols, judge=judge,
            forward=ep.write, to_client=relay.say, approve=approve, note=note, withdraw=withdraw.set,
            asks_secret=(lambda line: (True, 0)) if psql else secret_asks)  # psql's own prompts: \password

    async def _broker(self, name: str, command: str | None, mode: str, sid: str,
                      verdict: Decision | None, access: str | None = None) -> Outcome:
        assert self.relay is not None
        ctx, daemon = self.ctx, self.ctx.daemon
        store, cfg = daemon.store, daemon.config
        res = cfg.resources[name]
        pty = self.term_type is not None
        ep: SshEndpoint | PsqlExec | KubectlExec
        if isinstance(res, PgResource):
            ep = PsqlExec(self.relay)
        elif isinstance(res, KubeResource):
            ep = KubectlExec(self.relay)
        else:
            ep = SshEndpoint(self.relay)
        self._targets.add(ep)
        path = cfg.recordings_dir / sid[:4] / sid[4:6] / sid[6:8] / f"{sid}.cast"
        try:
            try:
                writer = CastWriter(path, self.cols, self.rows, title=f"{ctx.username}@{name} ({mode})",
                                    env={"TERM": self.term_type or "dumb", "SHELL": "/bin/sh"})
            except OSError as e:  # no recording, no session
                log.error("%s: cannot create recording %s: %s", ctx.who, path, e)
                return Outcome(False, f"{name}: the session cannot be recorded; refusing to open it")
            writer.marker(f"session {sid}: {ctx.username} opened {name}" + (f": {command}" if command else ""))
            if access is not None:
                writer.marker(access)
            if verdict is not None:
                writer.marker(f"policy: {verdict.summary()}")
            # attached before the target speaks, so its first bytes (banner, prompt) are recorded too
            shell = command is None and pty and res.policy and isinstance(ep, SshEndpoint)
            filt = self._command_filter(name, sid, ep, writer) if shell else None  # SQL: judged at the wire
            if isinstance(res, PgResource) and command is None and not res.restrict:
                filt = self._command_filter(name, sid, ep, writer, psql=True)
            self.relay.attach(ep, Tee(writer), filt)
            try:
                if isinstance(ep, PsqlExec):
                    assert isinstance(res, PgResource)
                    if command is None and not pty:
                        raise TargetError("an interactive psql needs a terminal (ssh -t)")
                    await ep.open(res, cfg.resolve(res.credential.password_file), command=command,
                                  application_name=f"bastion:{ctx.username}:{sid}", term_type=self.term_type or "dumb",
                                  cols=self.cols, rows=self.rows, sandbox=daemon.sandbox,
                                  **self._wire_hooks(name, sid, writer, interactive=command is None))
                elif isinstance(ep, KubectlExec):
                    assert isinstance(res, KubeResource)
                    if command is None and not pty:
                        raise TargetError("the kubectl prompt needs a terminal (ssh -t)")
                    await ep.open(res, name, cfg.resolve, command=command, user=ctx.username,
                                  groups=tuple(ctx.groups), sandbox=daemon.sandbox, kubectl=cfg.kubectl,
                                  term_type=self.term_type or "dumb", cols=self.cols, rows=self.rows,
                                  **self._wire_hooks(name, sid, writer, interactive=command is None, kind="kube"))
                else:
                    assert isinstance(res, SshResource)
                    await ep.open(res, cfg.resolve(res.credential.private_key_file), command=command, pty=pty,
                                  term_type=self.term_type or "dumb", cols=self.cols, rows=self.rows,
                                  timeout=cfg.limits.target_connect_timeout)
            except TargetError as e:
                self.relay.detach()
                writer.close()
                path.unlink(missing_ok=True)
                await asyncio.to_thread(store.audit, ctx.username, "session.open", "failed", resource=name,
                                        client_addr=ctx.peer, mode=mode, reason=str(e))
                return Outcome(False, f"{name}: {e}")
            await asyncio.to_thread(store.start_session, sid, user=ctx.username, resource=name, kind=res.kind,
                                    mode=mode, command=command, client_addr=ctx.peer, node=daemon.node,
                                    recording_path=path)
            await asyncio.to_thread(store.audit, ctx.username, "session.start", "ok", resource=name,
                                    session_id=sid, client_addr=ctx.peer, mode=mode)
            self.relay.release()
            log.info("%s: session %s on %s started (%s)", ctx.who, sid, name, mode)
            started = time.monotonic()
            relay = self.relay

            def notify(text: str) -> None:
                if pty:
                    relay.say(f"\r\n\x1b[1;31mbastion: {text}\x1b[0m\r\n".encode())
                else:
                    self._stderr(f"bastion: {text}\n")

            live = LiveSession(sid, ctx.username, name, res.kind, mode, command, ctx.peer, daemon.node,
                               tee=self.relay.tee or Tee(writer), relay=relay, notify=notify, stop=ep.close)
            daemon.live.add(live)
            self._live = live
            timers = self._duration_limit(live)
            try:
                end = await ep.wait()
            finally:
                for timer in timers:
                    timer.cancel()
                daemon.live.remove(sid)
                live.ended.set()
                self.relay.detach()
                self._filter_withdraw.set()
                for rid in await asyncio.to_thread(daemon.approvals.db.cancel_pending, session_id=sid,
                                                   reason="the session ended while the request was pending"):
                    await daemon.approvals.finish(rid, "cancelled", "session ended", "bastion")
                writer.marker(f"session {sid} ended")
                sha = writer.close()
                duration = time.monotonic() - started
            outcome = "exited" if end.status is not None else ("killed" if end.signal else "lost")
            if self._client_gone:
                outcome = "client_disconnected"
            if live.terminated is not None:
                outcome = live.end_outcome
                by, why = live.terminated
                end = dataclasses.replace(end, message=f"terminated by {by}: {why}" if outcome == "terminated"
                                          else f"closed by the bastion: {why}")
            await asyncio.to_thread(store.end_session, sid, outcome=outcome, exit_status=end.status,
                                    message=end.message, sha256=sha, size=writer.bytes_written)
            await asyncio.to_thread(store.audit, ctx.username, "session.end", outcome, resource=name,
                                    session_id=sid, client_addr=ctx.peer, exit_status=end.status)
            await daemon.auditing.closed(sid)
            log.info("%s: session %s on %s ended: %s", ctx.who, sid, name, end.message)
            return Outcome(True, f"{name}: {end.message}", end.status, end.signal, sid, duration)
        finally:
            ep.close()
            self._targets.discard(ep)
            self._live = None

    def _duration_limit(self, live: LiveSession) -> list[asyncio.TimerHandle]:
        """Timers that warn the operator, then end the session, at ``limits.max_session_duration``."""
        limit = self._time_limit(live.resource, "max_session_duration")
        if not limit:
            return []
        loop = asyncio.get_running_loop()
        lead = warning_lead(limit)
        return [loop.call_later(limit - lead, live.notify, f"this session closes in {fmt_seconds(lead)}: it "
                                f"reaches the maximum session duration ({fmt_seconds(limit)})"),
                loop.call_later(limit, live.expire, "expired",
                                f"it reached the maximum session duration ({fmt_seconds(limit)})")]


def _sane_size(cols: int, rows: int) -> tuple[int, int]:
    cols = cols if 0 < cols <= 1000 else 80
    rows = rows if 0 < rows <= 1000 else 24
    return cols, rows


def _signal_number(name: str) -> int:
    import signal

    try:
        return int(getattr(signal, f"SIG{name}"))
    except (AttributeError, TypeError):
        return 0


