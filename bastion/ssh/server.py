"""The front door: per-connection asyncssh server callbacks -- connection limits, authentication (local users'
keys, keys bound by an earlier OIDC login, a pending OIDC login, keyboard-interactive device flow) and session
channels. Forwarding of every kind is refused.

A user name may name the target too: ``alice+web1`` logs in as ``alice`` and opens ``web1`` for every session of the
connection (shell, exec, sftp), so that scp, sftp, rsync, git and Ansible reach a host through the bastion with no
option of their own: each passes the user name through untouched. ``+`` is in no user or resource name."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import asyncssh

from bastion.context import ConnectionContext
from bastion.oidc.client import DeviceCode
from bastion.oidc.login import LoginRefused
from bastion.services import Services
from bastion.ssh.admission import ConnectionCounter, UserKeys
from bastion.ssh.channel import BastionChannel, BastionSession
from bastion.ssh.forward import ForwardBridge, allowed_port
from bastion.ssh.jump import InnerBridge, JumpHost
from policies.access import decide_open

log = logging.getLogger(__name__)
TARGET_SEP = "+"
MAX_FORWARDED = 64  # forwarded channels (-J hops, -L connections) open at once on one connection
_Counted = TypeVar("_Counted", ForwardBridge, InnerBridge)


def split_target(username: str) -> tuple[str, str | None]:
    """``alice+web1`` -> ("alice", "web1"); ``alice`` -> ("alice", None); ``alice+`` -> ("alice", "") (no such
    resource: refused when a session opens, like any unknown name)."""
    login, sep, target = username.partition(TARGET_SEP)
    return login, (target if sep else None)


class BastionServer(asyncssh.SSHServer):
    """One connection's callbacks."""

    def __init__(self, services: Services, counter: ConnectionCounter, keys: Callable[[], UserKeys],
                 jump: JumpHost | None = None):
        self.services, self.counter, self.keys, self.jump = services, counter, keys, jump
        self.conn: asyncssh.SSHServerConnection | None = None
        self.ctx: ConnectionContext | None = None
        self.sessions = 0
        self._ip: str | None = None  # counted against the limits (released when the connection goes)
        self._tried_user: str | None = None
        self._username: str | None = None
        self._refused = False
        self._candidates: dict[bytes, tuple[str, Any]] = {}  # key blob -> how it would log in
        self._proven: bytes | None = None
        self._kbd: DeviceCode | None = None  # the device code of a keyboard-interactive login in progress
        self._kbd_identity = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        ip = str(peer[0])
        self.ctx = ConnectionContext(f"{ip}:{peer[1]}", self.services.server_name)
        # asyncssh asks the owner about a key both when it is merely offered and when its signature is checked,
        # without saying which: wrap the connection's check to learn which key was *proven* (never bind an offer)
        checked = conn.validate_public_key

        async def validate_and_note(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            ok = await checked(username, key_data, msg, signature)
            if ok and msg:
                self._proven = key_data
            return ok

        conn.validate_public_key = validate_and_note  # type: ignore[method-assign]  # see above: no public hook
        lim = self.services.config.limits
        if not self.counter.admit(ip, lim.max_connections, lim.max_connections_per_source):
            log.warning("refusing connection from %s: connection limit reached", ip)
            self._refused = True  # told at the first auth request, so the client shows the reason
            return
        self._ip = ip

    def connection_lost(self, exc: Exception | None) -> None:
        authed = self.ctx is not None and (self.ctx.username or self.ctx.pending_login)
        if self.ctx is not None and not authed and self._tried_user is not None:
            log.info("%s: authentication failed for user %r", self.ctx.peer, self._tried_user)
            self.services.spawn(asyncio.to_thread(self.services.store.audit, self._tried_user, "login", "failed",
                                                  client_addr=self.ctx.peer, method="publickey"))
        if self._ip is not None:
            self.counter.release(self._ip)
            self._ip = None

    def begin_auth(self, username: str) -> bool:
        if self._refused:
            raise asyncssh.DisconnectError(asyncssh.DISC_TOO_MANY_CONNECTIONS, "too many connections")
        self._tried_user = re.sub(r"[^A-Za-z0-9._@+-]", "?", username[:64])
        self._username, target = split_target(username)
        assert self.ctx is not None
        self.ctx.target = target
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """A local user's name: only that user's keys. Any other name (OIDC on): a key bound by an earlier OIDC
        login (the binding, not the name, says who it is); else a pending login that may only run the TUI's
        device flow."""
        cfg, login = self.services.config, self.services.login
        username = split_target(username)[0]
        user = cfg.users.get(username)
        local_ok = cfg.oidc is None or cfg.oidc.local_users
        if user is not None and not user.disabled and local_ok and self.keys().allowed(username, key):
            self._candidates[key.public_data] = ("local", username)
            return True
        if login is None or user is not None:
            return False  # a break-glass name: only its own keys, never a bound key or a pending OIDC login
        public = key.export_public_key().decode().strip()
        bound = await asyncio.to_thread(login.identities.lookup, key.get_fingerprint("sha256"), public)
        if bound is not None:
            self._candidates[key.public_data] = ("bound", bound)
            return True
        self._candidates[key.public_data] = ("pending", key)
        return True

    def kbdint_auth_supported(self) -> bool:
        # a local user's name is break-glass: its own keys only, never a device flow
        return self.services.login is not None and self._username not in self.services.config.users

    async def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        """Keyboard-interactive device flow (no key to bind): URL and code in the prompt text, which OpenSSH shows
        as is (instructions are escaped and cut, and hidden by ``ssh -q``)."""
        assert self.ctx is not None and self.services.login is not None
        try:
            code = await self.services.login.start(self.ctx)
        except LoginRefused as e:
            return ("bastion login", "", "", [(f"bastion: {e}. Press Enter: ", True)])
        self._kbd = code
        where = code.verification_uri_complete or code.verification_uri
        prompt = (f"Sign in at {where} with code {code.user_code} (within {int(code.expires_in // 60)} min), "
                  "then press Enter: ")
        return ("bastion login", "", "", [(prompt, True)])

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        assert self.ctx is not None and self.services.login is not None
        code, self._kbd = self._kbd, None
        if code is None:
            return False
        try:
            await self.services.login.finish(self.ctx, code, method="keyboard-interactive")
        except LoginRefused as e:
            log.info("%s: keyboard-interactive OIDC login failed: %s", self.ctx.peer, e)
            return False
        self._kbd_identity = True
        return True

    def auth_completed(self) -> None:
        assert self.conn is not None and self.ctx is not None
        if self._kbd_identity:
            return  # LoginService.accept has set the identity and audited the login
        ctx, s = self.ctx, self.services
        kind, what = self._candidates.get(self._proven or b"", ("?", None))
        if kind == "local":
            ctx.set_identity(what, s.config.users[what].groups, roles=s.config.roles, source="local")
            log.info("%s: logged in (local user, roles: %s)", ctx.who, ", ".join(ctx.grants.roles) or "none")
            s.spawn(asyncio.to_thread(s.store.touch_user, what))
            s.spawn(asyncio.to_thread(s.store.audit, what, "login", "ok", client_addr=ctx.peer, method="publickey"))
        elif kind == "bound":
            ctx.set_identity(what.name, what.groups, roles=s.config.roles, source="oidc")
            log.info("%s: logged in with a bound key (roles: %s)", ctx.who, ", ".join(ctx.grants.roles) or "none")
            s.spawn(asyncio.to_thread(s.store.audit, what.name, "login", "ok", client_addr=ctx.peer,
                                      method="bound-key", key_binding=what.binding))
        elif kind == "pending":
            ctx.pending_login = True
            ctx.proven_key = what
            log.info("%s: unknown key proven; OIDC login pending", ctx.peer)
        else:  # cannot happen: asyncssh completes auth only after one of our checks said yes
            log.error("%s: authentication completed without a known method; closing", ctx.peer)
            self.conn.close()

    def session_requested(self) -> tuple[BastionChannel, BastionSession] | bool:
        assert self.ctx is not None and self.conn is not None
        if self.sessions >= self.services.config.limits.max_sessions_per_connection:
            return False
        self.sessions += 1
        chan = self.conn.create_server_channel()  # the connection's settings (encoding=None, windows)
        chan.__class__ = BastionChannel  # adds no state: only how an exec request's command is decoded
        assert isinstance(chan, BastionChannel)
        return chan, BastionSession(self.services, self.ctx)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        """``ssh -J``: a permitted ssh resource is served by the bastion itself (:mod:`bastion.ssh.jump`); every
        other destination is refused like an unknown resource, and audited."""
        ctx = self.ctx
        assert ctx is not None
        dest = f"{dest_host[:255]}:{dest_port}"
        if self._root().forwarded >= MAX_FORWARDED:  # each -J hop is an SSH server, each -L a target connection
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE,
                                            f"at most {MAX_FORWARDED} forwarded channels per connection")
        if ctx.target is not None and ctx.username:  # -L on alice+web1 (or inside -J): the resource's own ports
            return self._counted(self._forward(ctx, ctx.target, dest_host, dest_port))
        name = self.jump.destination(dest_host, dest_port) if self.jump is not None and ctx.username else None
        decision = decide_open(ctx.grants, name, self.services.config.resources) if name is not None else None
        if name is None or decision is None or not (decision.allowed or decision.request is not None):
            reason = f"no such resource or not permitted: {dest_host[:255]}"
            log.info("%s: refused a forwarding to %s", ctx.who, dest)
            self.services.spawn(asyncio.to_thread(self.services.store.audit, ctx.username or "?", "forward.open",
                                                  "denied", client_addr=ctx.peer, destination=dest, reason=reason))
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)
        assert self.jump is not None
        log.info("%s: -J to %s: served as %s", ctx.who, dest, name)
        self.services.spawn(asyncio.to_thread(self.services.store.audit, ctx.username, "forward.open", "ok",
                                              resource=name, client_addr=ctx.peer, destination=dest, mode="jump"))
        return self._counted(self.jump.bridge(ctx, name))

    def _root(self) -> ConnectionContext:
        """The client's own connection: inside a -J hop, the outer one (the cap counts across hops)."""
        assert self.ctx is not None
        return self.ctx

    def _counted(self, session: _Counted) -> _Counted:
        root = self._root()
        root.forwarded += 1

        def closed() -> None:
            root.forwarded -= 1

        session.on_close = closed
        return session

    def _forward(self, ctx: ConnectionContext, name: str, host: str, port: int) -> ForwardBridge:
        """A port the resource lists, on its loopback, for a user who may open it now; else refused, audited."""
        res = self.services.config.resources.get(name)
        decision = decide_open(ctx.grants, name, self.services.config.resources)
        dest = f"{host[:255]}:{port}"
        if not decision.allowed or not allowed_port(res, host, port):
            reason = f"forwarding to {dest} is not allowed on {name[:64]}"
            self.services.spawn(asyncio.to_thread(self.services.store.audit, ctx.username, "forward.open", "denied",
                                                  resource=name[:255], client_addr=ctx.peer, destination=dest,
                                                  reason=reason))
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)
        self.services.spawn(asyncio.to_thread(self.services.store.audit, ctx.username, "forward.open", "ok",
                                              resource=name, client_addr=ctx.peer, destination=dest, mode="local"))
        return ForwardBridge(self.services, ctx, name, port)

    def server_requested(self, *args: Any) -> bool:
        return False

    def unix_connection_requested(self, *args: Any) -> bool:
        return False

    def unix_server_requested(self, *args: Any) -> bool:
        return False


class InnerServer(BastionServer):
    """The SSH server inside an ``ssh -J`` channel: the resource is fixed (the channel's destination), and only a
    key of the outer connection's user logs in, as that user; whatever user name the client sends is ignored."""

    def __init__(self, services: Services, counter: ConnectionCounter, keys: Callable[[], UserKeys],
                 outer: ConnectionContext, target: str):
        super().__init__(services, counter, keys)
        self.outer, self.target = outer, target

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        super().connection_made(conn)
        self.ctx = ConnectionContext(f"{self.outer.peer} -J {self.target}", self.services.server_name)
        self.ctx.target = self.target
        self.ctx.jump = True

    def begin_auth(self, username: str) -> bool:
        super().begin_auth(username)
        assert self.ctx is not None
        self.ctx.target = self.target  # the destination decides, not the inner user name
        return True

    def kbdint_auth_supported(self) -> bool:
        return False

    def _root(self) -> ConnectionContext:
        return self.outer

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """The outer user's own key (a local user's listed keys, or a key bound to the same OIDC identity)."""
        outer, cfg, login = self.outer, self.services.config, self.services.login
        if outer.source == "local":
            user = cfg.users.get(outer.username)
            ok = user is not None and not user.disabled and self.keys().allowed(outer.username, key)
        elif login is not None:
            public = key.export_public_key().decode().strip()
            bound = await asyncio.to_thread(login.identities.lookup, key.get_fingerprint("sha256"), public)
            ok = bound is not None and bound.name == outer.username
        else:
            ok = False
        if ok:
            self._candidates[key.public_data] = ("jump", outer.username)
        return ok

    def auth_completed(self) -> None:
        assert self.conn is not None and self.ctx is not None
        ctx, s, outer = self.ctx, self.services, self.outer
        ctx.set_identity(outer.username, outer.groups, roles=s.config.roles, source=outer.source)
        log.info("%s: logged in through -J to %s", ctx.who, self.target)
        s.spawn(asyncio.to_thread(s.store.audit, outer.username, "login", "ok", client_addr=outer.peer,
                                  method="jump", resource=self.target))

