"""Who is on one SSH connection. Built by the front door, read by every service acting for that connection.

It holds no reference to the daemon or its services: a service that needs the roles of the running config is given
them, so menu logic and approvals can be tested with a context built by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from policies.access import Grants, RoleLike, grants_for

if TYPE_CHECKING:
    import asyncssh


class ConnectionContext:
    """Identity, roles and origin of one SSH connection; set once authentication succeeds."""

    def __init__(self, peer: str, server_name: str):
        self.peer = peer
        self.server_name = server_name  # how operators reach this bastion (``bastion`` or ``-p 2222 bastion``)
        self.username = ""
        self.groups: frozenset[str] = frozenset()
        self.grants: Grants = grants_for((), {})
        self.source = ""  # local | oidc
        self.pending_login = False  # proved an unknown key: only the TUI's OIDC login is open to it
        self.proven_key: asyncssh.SSHKey | None = None  # the key whose signature authenticated this connection
        self.login_ip: str | None = None  # set while a device flow of this connection counts as pending
        self.target: str | None = None  # ``alice+web1``: every session of this connection opens ``web1``
        self.forwarded = 0  # forwarded channels open now, -J hops and the -L channels inside them included
        self.jump = False  # the inner connection of an ``ssh -J`` hop (served on a channel of another connection)

    def set_identity(self, name: str, groups: Iterable[str], *, roles: Mapping[str, RoleLike], source: str) -> None:
        """The connection now acts as ``name`` with ``groups``; ``roles`` (the running config's) give its grants."""
        self.username = name
        self.groups = frozenset(groups)
        self.grants = grants_for(sorted(self.groups), roles)
        self.source = source

    @property
    def who(self) -> str:
        return f"{self.username or '?'}@{self.peer}"
