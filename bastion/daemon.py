"""The bastion daemon: an asyncssh server that authenticates operators and hands each channel a session."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import asyncssh

from bastion.audit.worker import AuditWorker
from bastion.config import Config, ConfigError, load_config
from bastion.keyfiles import CIPHERS, ensure_private_key
from bastion.oidc.login import LoginService
from bastion.oversight.approvals import ApprovalService
from bastion.oversight.live import LiveRegistry
from bastion.sandbox import make_sandbox, python_paths
from bastion.sdnotify import monotonic_usec, notify
from bastion.ssh.channel import BastionChannel, BastionSession
from bastion.store.db import Store
from bastion.store.listen import PgListener
from policies.access import Grants, grants_for

log = logging.getLogger(__name__)
MENU_PACKAGES = ("tui", "bastion")  # the session process imports only these of ours (tui and bastion.rpc.proto)
RESTART_ONLY = ("listen", "host_keys", "database_url", "recordings_dir", "recordings", "log_dir", "sandbox", "oidc",
                "cluster")


def ensure_host_key(path: Path) -> asyncssh.SSHKey:
    """The host key at ``path``, created once (never per start) if missing."""
    if not path.exists():
        log.warning("creating new host key %s", path)
    return ensure_private_key(path, "bastion host key")


class ConnectionContext:
    """Who is on one SSH connection; set once authentication succeeds."""

    def __init__(self, daemon: Daemon, peer: str):
        self.daemon = daemon
        self.peer = peer
        self.username = ""
        self.groups: frozenset[str] = frozenset()
        self.grants: Grants = grants_for((), {})
        self.server_name = daemon.server_name
        self.source = ""  # local | oidc
        self.pending_login = False  # proved an unknown key: only the TUI's OIDC login is open to it
        self.proven_key: asyncssh.SSHKey | None = None  # the key whose signature authenticated this connection
        self.login_ip: str | None = None  # set while a device flow of this connection counts as pending

    def set_identity(self, name: str, groups: Any, *, source: str) -> None:
        """The connection now acts as ``name`` with ``groups`` (roles and grants follow from the config)."""
        self.username = name
        self.groups = frozenset(groups)
        self.grants = grants_for(sorted(self.groups), self.daemon.config.roles)
        self.source = source

    @property
    def who(self) -> str:
        return f"{self.username or '?'}@{self.peer}"


class BastionServer(asyncssh.SSHServer):
    """Per-connection asyncssh server callbacks: limits, publickey auth, and session creation."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.conn: asyncssh.SSHServerConnection | None = None
        self.ctx: ConnectionContext | None = None
        self.sessions = 0
        self._counted = False
        self._tried_user: str | None = None
        self._username: str | None = None
        self._refused = False
        self._candidates: dict[bytes, tuple[str, Any]] = {}  # key blob -> how it would log in
        self._kbd: Any = None  # the device code of a keyboard-interactive login in progress

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        ip = str(peer[0])
        self.ctx = ConnectionContext(self.daemon, f"{ip}:{peer[1]}")
        # asyncssh asks the owner about a key both when it is merely offered and when its signature is checked,
        # without saying which: wrap the connection's check to learn which key was *proven* (never bind an offer)
        checked = conn.validate_public_key

        async def validate_and_note(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            ok = await checked(username, key_data, msg, signature)
            if ok and msg:
                self._proven = key_data
            return ok

        self._proven: bytes | None = None
        conn.validate_public_key = validate_and_note  # type: ignore[method-assign]
        d, lim = self.daemon, self.daemon.config.limits
        if d.total >= lim.max_connections or d.per_ip[ip] >= lim.max_connections_per_source:
            log.warning("refusing connection from %s: connection limit reached", ip)
            self._refused = True  # told at the first auth request, so the client shows the reason
            return
        self._counted, self._ip = True, ip
        d.total += 1
        d.per_ip[ip] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        authed = self.ctx is not None and (self.ctx.username or self.ctx.pending_login)
        if self.ctx is not None and not authed and self._tried_user is not None:
            log.info("%s: authentication failed for user %r", self.ctx.peer, self._tried_user)
            self.daemon.spawn_bg(asyncio.to_thread(self.daemon.store.audit, self._tried_user, "login", "failed",
                                                   client_addr=self.ctx.peer, method="publickey"))
        if self._counted:
            self.daemon.total -= 1
            self.daemon.per_ip[self._ip] -= 1
            if self.daemon.per_ip[self._ip] <= 0:
                del self.daemon.per_ip[self._ip]

    def begin_auth(self, username: str) -> bool:
        if self._refused:
            raise asyncssh.DisconnectError(asyncssh.DISC_TOO_MANY_CONNECTIONS, "too many connections")
        self._tried_user = re.sub(r"[^A-Za-z0-9._@-]", "?", username[:64])
        self._username = username
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """A local user's name: only that user's keys. Any other name (OIDC on): a key bound by an earlier OIDC
        login (the binding, not the name, says who it is); else a pending login that may only run the TUI's
        device flow."""
        cfg, d = self.daemon.config, self.daemon
        user = cfg.users.get(username)
        local_ok = cfg.oidc is None or cfg.oidc.local_users
        if user is not None and not user.disabled and local_ok and d.key_allowed(username, key):
            self._candidates[key.public_data] = ("local", username)
            return True
        if d.login is None or user is not None:
            return False  # a break-glass name: only its own keys, never a bound key or a pending OIDC login
        public = key.export_public_key().decode().strip()
        bound = await asyncio.to_thread(d.login.identities.lookup, key.get_fingerprint("sha256"), public)
        if bound is not None:
            self._candidates[key.public_data] = ("bound", bound)
            return True
        self._candidates[key.public_data] = ("pending", key)
        return True

    def kbdint_auth_supported(self) -> bool:
        # a local user's name is break-glass: its own keys only, never a device flow
        return self.daemon.login is not None and self._username not in self.daemon.config.users

    async def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        """Keyboard-interactive device flow (no key to bind): URL and code in the prompt text, which OpenSSH shows
        as is (instructions are escaped and cut, and hidden by ``ssh -q``)."""
        assert self.ctx is not None and self.daemon.login is not None
        from bastion.oidc.login import LoginRefused

        try:
            code = await self.daemon.login.start(self.ctx)
        except LoginRefused as e:
            return ("bastion login", "", "", [(f"bastion: {e}. Press Enter: ", True)])
        self._kbd = code
        where = code.verification_uri_complete or code.verification_uri
        prompt = (f"Sign in at {where} with code {code.user_code} (within {int(code.expires_in // 60)} min), "
                  "then press Enter: ")
        return ("bastion login", "", "", [(prompt, True)])

    async def validate_kbdint_response(self, username: str, responses: list[str]) -> bool:
        assert self.ctx is not None and self.daemon.login is not None
        from bastion.oidc.login import LoginRefused

        code, self._kbd = self._kbd, None
        if code is None:
            return False
        try:
            await self.daemon.login.finish(self.ctx, code, method="keyboard-interactive")
        except LoginRefused as e:
            log.info("%s: keyboard-interactive OIDC login failed: %s", self.ctx.peer, e)
            return False
        self._kbd_identity = True
        return True

    def auth_completed(self) -> None:
        assert self.conn is not None and self.ctx is not None
        ctx, d = self.ctx, self.daemon
        if getattr(self, "_kbd_identity", False):
            return  # LoginService.accept has set the identity and audited the login
        kind, what = self._candidates.get(self._proven or b"", ("?", None))
        if kind == "local":
            user = d.config.users[what]
            ctx.set_identity(what, user.groups, source="local")
            log.info("%s: logged in (local user, roles: %s)", ctx.who, ", ".join(ctx.grants.roles) or "none")
            d.spawn_bg(asyncio.to_thread(d.store.touch_user, what))
            d.spawn_bg(asyncio.to_thread(d.store.audit, what, "login", "ok", client_addr=ctx.peer,
                                         method="publickey"))
        elif kind == "bound":
            ctx.set_identity(what["name"], what["groups"], source="oidc")
            log.info("%s: logged in with a bound key (roles: %s)", ctx.who, ", ".join(ctx.grants.roles) or "none")
            d.spawn_bg(asyncio.to_thread(d.store.audit, what["name"], "login", "ok", client_addr=ctx.peer,
                                         method="bound-key", key_binding=what["binding"]))
        elif kind == "pending":
            ctx.pending_login = True
            ctx.proven_key = what
            log.info("%s: unknown key proven; OIDC login pending", ctx.peer)
        else:  # cannot happen: asyncssh completes auth only after one of our checks said yes
            log.error("%s: authentication completed without a known method; closing", ctx.peer)
            self.conn.close()

    def session_requested(self) -> tuple[BastionChannel, BastionSession] | bool:
        assert self.ctx is not None and self.conn is not None
        if self.sessions >= self.daemon.config.limits.max_sessions_per_connection:
            return False
        self.sessions += 1
        chan = self.conn.create_server_channel()  # the connection's settings (encoding=None, windows)
        chan.__class__ = BastionChannel  # adds no state: only how an exec request's command is decoded
        return chan, BastionSession(self.ctx)

    def connection_requested(self, *args: Any) -> bool:
        return False

    def server_requested(self, *args: Any) -> bool:
        return False

    def unix_connection_requested(self, *args: Any) -> bool:
        return False

    def unix_server_requested(self, *args: Any) -> bool:
        return False


class Daemon:
    """Owns the config, the store and the listening SSH server."""

    def __init__(self, config: Config):
        self.config = config
        self.store = Store(config.database_url)
        self.approvals = ApprovalService(self)
        self.live = LiveRegistry()
        self.login: LoginService | None = LoginService(self) if config.oidc is not None else None
        self.sandbox = make_sandbox(config.sandbox.mode, config.sandbox.user)  # checked with the config
        if not self.sandbox.active:
            log.warning("session processes run without a sandbox (sandbox.mode %s%s)", config.sandbox.mode,
                        "" if config.sandbox.mode == "off" else ", bubblewrap not installed")
        self.storage = config.recording_storage()  # where closed recordings are kept (and read back from)
        self.menu_paths = python_paths(MENU_PACKAGES)  # what the sandboxed menu may read of the installation
        self.player_paths = python_paths(("recorder",))  # and the sandboxed player (F5, p)
        self.total = 0
        self.per_ip: Counter[str] = Counter()
        self.server: asyncssh.SSHAcceptor | None = None
        self.node = config.cluster.node_name or f"{socket.gethostname()}:{config.listen.port}"
        self.server_name = "bastion" if config.listen.port == 22 else f"-p {config.listen.port} bastion"
        self._bg: set[asyncio.Future[Any]] = set()
        self.auditing = AuditWorker(config, self.store, self.storage)
        self._listener: PgListener | None = None
        self._cluster: asyncio.Task[None] | None = None
        self._keys: dict[str, set[bytes]] = {}
        self._load_keys()

    def _load_keys(self) -> None:
        for name, lines in self.config.user_keys.items():
            keys: set[bytes] = set()
            for line in lines:
                try:
                    keys.add(asyncssh.import_public_key(line).public_data)
                except (ValueError, asyncssh.KeyImportError):
                    log.warning("ignoring unparsable key of user %s", name)
            self._keys[name] = keys

    def key_allowed(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data in self._keys.get(username, set())

    def spawn_bg(self, aw: Any) -> None:
        fut = asyncio.ensure_future(aw)
        self._bg.add(fut)
        fut.add_done_callback(self._bg_done)

    def _bg_done(self, fut: asyncio.Future[Any]) -> None:
        self._bg.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("background task failed: %s", fut.exception())

    def _login_timeout(self) -> float:
        """SSH login timeout: above the longest keyboard-interactive device flow when OIDC is on."""
        lim, oidc = self.config.limits, self.config.oidc
        return max(lim.login_timeout, oidc.login_timeout + 30) if oidc is not None else lim.login_timeout

    async def start(self) -> None:
        """Migrate the store, mark sessions of a previous run interrupted, and listen."""
        await asyncio.to_thread(self.store.migrate)
        n = await asyncio.to_thread(self.store.mark_interrupted, self.node)
        if n:
            log.warning("marked %d session(s) of a previous run as interrupted", n)
        await self.approvals.cancel_node()
        self.config.recordings_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        await self.auditing.start()
        await asyncio.to_thread(self.store.heartbeat, self.node, starting=True)
        if self.store.engine.dialect.name == "postgresql":  # several nodes may share it: hear what they do
            self._listener = PgListener(self.store.url, self._remote_event)
            self._listener.start()
        self._cluster = asyncio.create_task(self._cluster_loop())
        host_keys = [ensure_host_key(p) for p in self.config.host_keys]
        self.server = await asyncssh.create_server(
            lambda: BastionServer(self), self.config.listen.host, self.config.listen.port,
            server_host_keys=host_keys, login_timeout=self._login_timeout(), agent_forwarding=False,
            x11_forwarding=False, allow_pty=True, line_editor=False, encoding=None, keepalive_interval=60,
            allow_scp=False, reuse_address=True, config=[], encryption_algs=CIPHERS,
            send_server_host_keys=True)  # clients learn every listed key: host key rotation without a flag day
        log.info("listening on %s:%d (host key %s)", self.config.listen.host, self.config.listen.port,
                 ", ".join(k.get_fingerprint() for k in host_keys))

    def reload(self) -> bool:
        """Re-read the config file (SIGHUP, ``systemctl reload``) without dropping anyone: new connections and new
        sessions use the new users, keys, roles, resources and policies; open sessions keep the policy they opened
        with; connections keep the roles they logged in with. A config with problems is refused as a whole and the
        running one stays. Listening address, host keys, database, recordings directory, logs, sandbox and OIDC
        change only with a restart."""
        old = self.config
        try:
            new = load_config(old.path, check_files=True)
        except ConfigError as e:
            log.error("reload refused; the running config stays:\n%s", e)
            self.spawn_bg(asyncio.to_thread(self.store.audit, "bastion", "config.reload", "refused",
                                            problems=e.problems[:20]))
            return False
        fixed = [f for f in RESTART_ONLY if getattr(new, f) != getattr(old, f)]
        if fixed:
            log.warning("reload: %s change only with a restart; the running values stay", ", ".join(fixed))
            new = dataclasses.replace(new, **{f: getattr(old, f) for f in fixed})
        self.config = new
        self._load_keys()
        log.info("reloaded %s: %d resources, %d local users, %d roles", new.path, len(new.resources),
                 len(new.users), len(new.roles))
        self.spawn_bg(asyncio.to_thread(self.store.audit, "bastion", "config.reload", "ok", kept=fixed))
        return True

    def _remote_event(self, event: dict[str, Any]) -> None:
        """Something another node published (LISTEN): approvals changed, or one of our sessions is to end or is
        being observed from there."""
        if event.get("kind") == "terminate":
            live = self.live.get(str(event.get("id", "")))
            if live is not None and event.get("node") == self.node:
                log.warning("terminating session %s of %s at the request of %s on another node", live.sid,
                            live.user, event.get("by"))
                live.terminate(str(event.get("by", "?"))[:255], str(event.get("reason", ""))[:500])
            return
        if event.get("kind") == "observe":
            live = self.live.get(str(event.get("id", "")))
            if live is not None and event.get("node") == self.node:
                live.tee.writer.marker(f"observed by {str(event.get('by', '?'))[:255]} "
                                       f"(from node {str(event.get('from', '?'))[:255]})")
            return
        self.approvals.remote_event(event)

    async def _cluster_loop(self) -> None:
        """Beat; and take over the bookkeeping of nodes that stopped beating (crashed): their active sessions
        become interrupted (recordings hashed and chained) and their pending requests cancelled."""
        c = self.config.cluster
        while True:
            await asyncio.sleep(c.heartbeat_seconds)
            try:
                await asyncio.to_thread(self.store.heartbeat, self.node)
                for node in await asyncio.to_thread(self.store.expired_nodes, c.node_expiry_seconds):
                    n = await asyncio.to_thread(self.store.mark_interrupted, node)
                    ids = await asyncio.to_thread(self.approvals.db.cancel_pending, node=node,
                                                  reason=f"node {node} stopped answering")
                    log.warning("node %s stopped answering: %d session(s) marked interrupted, %d request(s) "
                                "cancelled", node, n, len(ids))
                    await asyncio.to_thread(self.store.audit, "bastion", "node.expired", "interrupted", node=node,
                                            sessions=n, requests=ids, by=self.node)
            except Exception:
                log.exception("cluster bookkeeping failed; retrying")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self._cluster is not None:
            self._cluster.cancel()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        try:
            await asyncio.to_thread(self.store.heartbeat, self.node, stopping=True)
        except Exception:
            log.exception("cannot record this node's stop")
        await self.auditing.stop()


async def wait_for_stop_signal() -> None:
    """Return on the first SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(config: Config) -> None:
    """Run the daemon until SIGINT/SIGTERM; SIGHUP reloads the config. Tells systemd when it is ready."""
    daemon = Daemon(config)
    await daemon.start()

    def reload() -> None:
        notify("RELOADING=1", monotonic_usec(), "STATUS=reloading the config")
        ok = daemon.reload()
        notify("READY=1", f"STATUS={'serving' if ok else 'serving; the last reload was refused (see the log)'}")

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    notify("READY=1", f"STATUS=serving on {config.listen.host}:{config.listen.port}")
    try:
        await wait_for_stop_signal()
    finally:
        log.info("shutting down")
        notify("STOPPING=1", "STATUS=shutting down")
        await daemon.stop()
