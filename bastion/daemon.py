"""The bastion daemon: an asyncssh server that authenticates operators and hands each channel a session."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import asyncssh

from bastion.approvals import ApprovalService
from bastion.config import Config
from bastion.keyfiles import ensure_private_key
from bastion.sandbox import make_sandbox
from bastion.session import BastionSession
from bastion.store.db import Store
from policies.access import Grants, grants_for

log = logging.getLogger(__name__)


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
        self._refused = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        ip = str(peer[0])
        self.ctx = ConnectionContext(self.daemon, f"{ip}:{peer[1]}")
        d, lim = self.daemon, self.daemon.config.limits
        if d.total >= lim.max_connections or d.per_ip[ip] >= lim.max_connections_per_source:
            log.warning("refusing connection from %s: connection limit reached", ip)
            self._refused = True  # told at the first auth request, so the client shows the reason
            return
        self._counted, self._ip = True, ip
        d.total += 1
        d.per_ip[ip] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ctx is not None and not self.ctx.username and self._tried_user is not None:
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
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        user = self.daemon.config.users.get(username)
        if user is None or user.disabled:
            return False
        return self.daemon.key_allowed(username, key)

    def auth_completed(self) -> None:
        assert self.conn is not None and self.ctx is not None
        name = self.conn.get_extra_info("username")
        user = self.daemon.config.users[name]
        self.ctx.username = name
        self.ctx.groups = frozenset(user.groups)
        self.ctx.grants = grants_for(user.groups, self.daemon.config.roles)
        log.info("%s: logged in (local user, roles: %s)", self.ctx.who, ", ".join(self.ctx.grants.roles) or "none")
        self.daemon.spawn_bg(asyncio.to_thread(self.daemon.store.touch_user, name))
        self.daemon.spawn_bg(asyncio.to_thread(self.daemon.store.audit, name, "login", "ok",
                                               client_addr=self.ctx.peer, method="publickey"))

    def session_requested(self) -> BastionSession | bool:
        assert self.ctx is not None
        if self.sessions >= self.daemon.config.limits.max_sessions_per_connection:
            return False
        self.sessions += 1
        return BastionSession(self.ctx)

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
        self.sandbox = make_sandbox(config.sandbox.mode, config.sandbox.user)  # checked with the config
        if not self.sandbox.active:
            log.warning("session processes run without a sandbox (sandbox.mode %s%s)", config.sandbox.mode,
                        "" if config.sandbox.mode == "off" else ", bubblewrap not installed")
        self.total = 0
        self.per_ip: Counter[str] = Counter()
        self.server: asyncssh.SSHAcceptor | None = None
        self.node = f"{socket.gethostname()}:{config.listen.port}"
        self.server_name = "bastion" if config.listen.port == 22 else f"-p {config.listen.port} bastion"
        self._bg: set[asyncio.Future[Any]] = set()
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

    async def start(self) -> None:
        """Migrate the store, mark sessions of a previous run interrupted, and listen."""
        await asyncio.to_thread(self.store.migrate)
        n = await asyncio.to_thread(self.store.mark_interrupted, self.node)
        if n:
            log.warning("marked %d session(s) of a previous run as interrupted", n)
        await self.approvals.cancel_node()
        self.config.recordings_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        host_keys = [ensure_host_key(p) for p in self.config.host_keys]
        lim = self.config.limits
        self.server = await asyncssh.create_server(
            lambda: BastionServer(self), self.config.listen.host, self.config.listen.port,
            server_host_keys=host_keys, login_timeout=lim.login_timeout, agent_forwarding=False,
            x11_forwarding=False, allow_pty=True, line_editor=False, encoding=None, keepalive_interval=60,
            allow_scp=False, reuse_address=True, config=[])
        log.info("listening on %s:%d (host key %s)", self.config.listen.host, self.config.listen.port,
                 ", ".join(k.get_fingerprint() for k in host_keys))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def wait_for_stop_signal() -> None:
    """Return on the first SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(config: Config) -> None:
    """Run the daemon until SIGINT/SIGTERM."""
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_for_stop_signal()
    finally:
        log.info("shutting down")
        await daemon.stop()
