"""The menu's RPC handlers of one connection, built for a test from a Services (a real one or one of fakes), without
a daemon, a socket or an SSH channel."""

from __future__ import annotations

from bastion.context import ConnectionContext
from bastion.rpc.menu import MenuHandlers
from bastion.services import Services
from bastion.sessions.broker import Broker
from bastion.sessions.client import ClientSide
from bastion.terminal.relay import Relay

PEER = "192.0.2.7:40000"


class NoChannel:
    """The connection's own channel: these handlers never write to it (no session is opened here)."""

    def write(self, data: bytes, datatype: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def menu_for(services: Services, user: str | None, *, term_type: str | None = "xterm",
             pending: bool = False) -> MenuHandlers:
    """The handlers of a connection from ``PEER`` signed in as local ``user`` (None: nobody yet; ``pending``:
    a proven unknown key, before its OIDC sign-in)."""
    ctx = ConnectionContext(PEER, services.server_name)
    if user is not None:
        ctx.set_identity(user, services.config.users[user].groups, roles=services.config.roles, source="local")
    ctx.pending_login = pending
    client = ClientSide(NoChannel(), Relay(NoChannel()), term_type, 80, 24)
    return MenuHandlers(services, ctx, client, Broker(services, ctx, client))
