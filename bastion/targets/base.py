"""What every kind of target is to the broker: one protocol to open, wait for and close, whatever the kind.

The broker opens a target with one :class:`OpenRequest` and never asks what kind it is; what differs by kind (the
credential, a protocol proxy between the client and the target, an interactive line filter) is the target's own
business, described by the class attributes of :class:`Target`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from bastion.terminal.relay import Endpoint

if TYPE_CHECKING:
    from bastion.config import Config
    from bastion.config.resources import AnyResource as Resource
    from bastion.sandbox import Sandbox
    from policies.engine import Decision

LineFilter = Literal["shell", "psql"]
# what a protocol proxy judges: SQL at the wire, Kubernetes at the API, file operations, the execs bastion-guard reports
Proxied = Literal["sql", "kube", "transfer", "exec"]


@dataclass
class TargetExit:
    """How a target process ended."""

    status: int | None
    signal: str | None
    message: str


class TargetError(Exception):
    """The target could not be reached or refused us; the message is safe to show the operator."""


@dataclass(frozen=True)
class Hooks:
    """What a protocol proxy (SQL at the wire, Kubernetes at the API) needs to judge, hold and record the
    statements or requests of one session."""

    judge: Callable[[Any], Decision]  # the statement (SQL), the request (Kubernetes), the transfer -> a decision
    hold: Callable[[Decision], Awaitable[dict[str, Any]]]  # ask reviewers; the request's final state
    note: Callable[[Decision], None]  # a marker in the recording (and an audit event unless allowed)
    withdraw: Callable[[], None]  # the operator withdrew what is held (Ctrl-C)
    event: Callable[[str], None]  # a free-form marker (port-forwards opened and closed, ...)


@dataclass(frozen=True)
class OpenRequest:
    """Everything a target needs to open one brokered session."""

    name: str  # the resource's name in the config
    command: str | None  # None: interactive
    pty: bool
    term_type: str
    cols: int
    rows: int
    user: str
    groups: tuple[str, ...]
    session_id: str
    config: Config
    sandbox: Sandbox
    hooks: Hooks | None = None  # given to kinds with a protocol proxy (``proxied``)
    subsystem: str | None = None  # ``sftp``: a transfer session, judged request by request
    record: Callable[[dict[str, Any]], None] | None = None  # a transfer session's operations, to its log

    @property
    def resource(self) -> Resource:
        return self.config.resources[self.name]


class Target(Endpoint, Protocol):
    """A relay endpoint the broker opens for one session (see :class:`bastion.terminal.relay.Endpoint` for the
    byte-level half)."""

    proxied: ClassVar[Proxied | None]  # judged at a protocol proxy, not by its command

    async def open(self, req: OpenRequest) -> None: ...

    async def wait(self) -> TargetExit: ...

    def close(self) -> None: ...

    def write(self, data: bytes) -> None: ...

    @staticmethod
    def line_filter(res: Resource, command: str | None, pty: bool) -> LineFilter | None:
        """Which interactive filter reads the operator's typed lines on the way to this target, if any."""
        ...
