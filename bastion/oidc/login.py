"""OIDC logins on behalf of SSH connections: start a device flow, wait for it, turn the result into a bastion user.

Used by both entry paths: keyboard-interactive (clients without keys; no binding) and the TUI of a connection that
proved an unknown key (on success that key is bound for ``key_binding_ttl``). Pending flows are capped per source
address. Every outcome is an audit event; codes and tokens are never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bastion.config import Config
from bastion.context import ConnectionContext
from bastion.oidc.client import DeviceCode, DeviceFlowError, Identity, OidcClient, OidcError
from bastion.store.db import Store
from bastion.store.identities import Identities
from policies.access import grants_for

log = logging.getLogger(__name__)


class PendingCounter(Protocol):
    async def take(self, ip: str, limit: int) -> bool: ...
    def give_back(self, ip: str) -> None: ...


class PendingLogins:
    """Device flows pending per source address, held to ``max_pending_per_source`` (in this process; a daemon of
    connection processes counts them in its supervisor instead)."""

    def __init__(self) -> None:
        self.pending: Counter[str] = Counter()

    async def take(self, ip: str, limit: int) -> bool:
        if self.pending[ip] >= limit:
            return False
        self.pending[ip] += 1
        return True

    def give_back(self, ip: str) -> None:
        self.pending[ip] -= 1
        if self.pending[ip] <= 0:
            del self.pending[ip]


class LoginRefused(Exception):
    """A login that did not succeed; the message is for the user (no secrets in it)."""


class LoginService:
    """One per daemon (only when the config has ``oidc:``): given the store and the running config (a getter: roles
    change on reload; the ``oidc`` section itself only with a restart)."""

    def __init__(self, config: Callable[[], Config], store: Store):
        first = config()
        cfg = first.oidc
        assert cfg is not None
        self.config, self.store, self.cfg = config, store, cfg
        secret = None
        if cfg.client_secret_file:
            secret = Path(first.resolve(cfg.client_secret_file)).read_text().strip()
        self.client = OidcClient(cfg, secret)
        self.identities = Identities(store, reserved=set(first.users))
        self.pending: PendingCounter = PendingLogins()

    async def start(self, ctx: ConnectionContext) -> DeviceCode:
        """A new device code for this connection (LoginRefused when this source has too many pending)."""
        ip = ctx.peer.rsplit(":", 1)[0]
        if not await self.pending.take(ip, self.cfg.max_pending_per_source):
            await self._audit(ctx, "refused", reason="too many pending logins from this address")
            raise LoginRefused("too many sign-ins are pending from your address; finish or cancel one first")
        try:
            code = await self.client.start_device_flow()
        except OidcError as e:
            self.pending.give_back(ip)
            log.error("%s: OIDC login cannot start: %s", ctx.who, e)
            await self._audit(ctx, "error", reason=str(e))
            raise LoginRefused("the identity provider cannot be reached; try again later") from None
        ctx.login_ip = ip
        return code

    def _done(self, ctx: ConnectionContext) -> None:
        ip = ctx.login_ip
        if ip is not None:
            self.pending.give_back(ip)
            ctx.login_ip = None

    async def finish(self, ctx: ConnectionContext, code: DeviceCode, *, method: str,
                     cancelled: asyncio.Event | None = None) -> str:
        """Wait for the user; on success the connection becomes theirs (and its proven key is bound, if any)."""
        try:
            identity = await self.client.login(code, cancelled=cancelled)
        except DeviceFlowError as e:
            await self._audit(ctx, e.code if e.code in ("access_denied", "cancelled") else "failed",
                              method=method, reason=e.message)
            raise LoginRefused(e.message) from None
        except OidcError as e:
            log.warning("%s: OIDC login rejected: %s", ctx.who, e)
            await self._audit(ctx, "rejected", method=method, reason=str(e))
            raise LoginRefused("the identity provider's answer failed the bastion's checks") from None
        finally:
            self._done(ctx)
        return await self.accept(ctx, identity, method=method)

    async def accept(self, ctx: ConnectionContext, identity: Identity, *, method: str) -> str:
        """Make ``identity`` the user of this connection: roles from groups (none: refused)."""
        roles = self.config().roles
        grants = grants_for(identity.groups, roles)
        if not grants.roles:
            await self._audit(ctx, "denied", method=method, subject=identity.subject,
                              reason="the user's groups grant no role")
            raise LoginRefused("your groups grant no role on this bastion; ask an administrator")
        name = await asyncio.to_thread(self.identities.upsert, issuer=identity.issuer, subject=identity.subject,
                                       username=identity.username, email=identity.email,
                                       groups=list(identity.groups))
        ctx.set_identity(name, identity.groups, roles=roles, source="oidc")
        detail: dict[str, Any] = {"method": method, "subject": identity.subject, "issuer": identity.issuer,
                                  "roles": list(grants.roles)}
        key = ctx.proven_key
        if key is not None and self.cfg.key_binding_ttl > 0:
            bid = await asyncio.to_thread(self.identities.bind, name, key.get_fingerprint("sha256"),
                                          key.export_public_key().decode().strip(), self.cfg.key_binding_ttl,
                                          ctx.peer)
            detail.update(key_binding=bid, fingerprint=key.get_fingerprint("sha256"))
        ctx.pending_login = False
        log.info("%s: logged in with OIDC (%s; roles: %s)", ctx.who, method, ", ".join(grants.roles))
        await asyncio.to_thread(self.store.audit, name, "login", "ok", client_addr=ctx.peer, **detail)
        return name

    async def _audit(self, ctx: ConnectionContext, outcome: str, **detail: Any) -> None:
        await asyncio.to_thread(self.store.audit, ctx.username or "(oidc)", "login.oidc", outcome,
                                client_addr=ctx.peer, **detail)
