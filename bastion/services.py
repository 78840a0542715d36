"""What the daemon's parts share, handed to each connection instead of the daemon itself.

The daemon builds one :class:`Services` at start and owns its lifecycle; the SSH front door, the menu's RPC
handlers and the session broker receive it (or narrower parts of it). Nothing here starts or stops anything, so a
test can build a ``Services`` of fakes and drive the menu handlers without a daemon, a socket or a database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the types only: Services is a bag of collaborators, built by the daemon (or a test)
    from bastion.audit.worker import AuditWorker
    from bastion.config import Config
    from bastion.oidc.login import LoginService
    from bastion.oversight.approvals import ApprovalService
    from bastion.oversight.live import LiveRegistry
    from bastion.sandbox import Sandbox
    from bastion.store.db import Store
    from recorder.storage import RecordingStorage

log = logging.getLogger(__name__)


class Background:
    """Background work of the daemon (audit writes, notifications): kept referenced until done, errors logged."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, aw: Awaitable[Any]) -> None:
        fut = asyncio.ensure_future(aw)
        self._tasks.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._tasks.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("background task failed: %s", fut.exception())


@dataclass
class Services:
    """The daemon's shared parts. ``config`` is replaced on reload: read it at the moment of use, never keep it."""

    config: Config
    store: Store
    storage: RecordingStorage
    approvals: ApprovalService
    live: LiveRegistry
    login: LoginService | None
    sandbox: Sandbox
    auditing: AuditWorker
    node: str  # this node's name in a cluster (sessions, requests and heartbeats carry it)
    spawn: Callable[[Awaitable[Any]], None]
    menu_paths: list[Path] = field(default_factory=list)  # what the sandboxed menu may read of the installation
    player_paths: list[Path] = field(default_factory=list)  # and the sandboxed player
    # tells every other process and node (approvals changed, end or observe a session carried elsewhere)
    publish: Callable[[dict[str, Any]], None] = field(default=lambda event: None)
    cluster: bool = False  # other processes or nodes share the store: their live sessions are listed too
    # a session id this process is about to carry (True) or no longer carries (False): a node of connection
    # processes closes the books of those a dead process carried
    carrying: Callable[[str, bool], None] = field(default=lambda sid, on: None)

    @property
    def server_name(self) -> str:
        """How operators reach this bastion, for the texts that tell them what to type."""
        port = self.config.listen.port
        return "bastion" if port == 22 else f"-p {port} bastion"

    def get_config(self) -> Config:
        """The running config (for parts that are given a getter rather than the services)."""
        return self.config
