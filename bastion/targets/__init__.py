"""Targets by kind: the one place that knows which class opens which ``kind:`` of resource."""

from __future__ import annotations

from bastion.targets.base import Target
from bastion.targets.guarded import GuardEndpoint
from bastion.targets.kube import KubectlExec
from bastion.targets.postgres import PsqlExec
from bastion.targets.sftp import SftpEndpoint
from bastion.targets.ssh import SshEndpoint
from bastion.terminal.relay import Relay

KINDS: dict[str, type[SshEndpoint] | type[PsqlExec] | type[KubectlExec]] = {
    "ssh": SshEndpoint, "postgres": PsqlExec, "kubernetes": KubectlExec}


def target_class(kind: str) -> type[Target]:
    """The class that opens resources of ``kind`` (the config admits only the kinds listed here)."""
    return KINDS[kind]


def make_target(kind: str, relay: Relay, subsystem: str | None = None, guard: bool = False) -> Target:
    """A new, unopened target of ``kind`` speaking through ``relay``; ``subsystem`` (``sftp``, ssh only): the
    target's sftp server behind the bastion's judging proxy; ``guard`` (ssh only, ``enforce: guard``): the shell or
    command under bastion-guard, every program it executes judged."""
    if subsystem is not None:
        if kind != "ssh" or subsystem != "sftp":
            raise ValueError(f"no {subsystem} subsystem on {kind} resources")
        return SftpEndpoint(relay)
    if guard:
        if kind != "ssh":
            raise ValueError(f"no guard on {kind} resources")
        return GuardEndpoint(relay)
    return KINDS[kind](relay)
