"""An ssh target's sftp server, behind the bastion's SFTP gate (:mod:`bastion.proxies.sftp.gate`): the operator's
sftp, scp (SFTP mode) or any SFTP client speaks to the gate, the gate to the target's sftp-server over the
bastion's own connection with the vaulted key."""

from __future__ import annotations

import logging
from typing import ClassVar

from bastion.config import SshResource
from bastion.proxies.sftp.gate import SftpGate
from bastion.targets.base import OpenRequest, Proxied, TargetError
from bastion.targets.ssh import SshEndpoint
from recorder.archive import Spool, archive_root

log = logging.getLogger(__name__)


class SftpEndpoint(SshEndpoint):
    """The relay's endpoint for an sftp session: bytes from the client go through the gate, and so do the
    target's replies."""

    proxied: ClassVar[Proxied | None] = "transfer"
    subsystem: ClassVar[str | None] = "sftp"

    def __init__(self, relay: object) -> None:
        super().__init__(relay)  # type: ignore[arg-type]  # a Relay: typed loosely to keep the import light
        self.gate: SftpGate | None = None

    async def open(self, req: OpenRequest) -> None:
        if req.hooks is None or req.record is None:
            raise TargetError("an sftp session needs its policy hooks and its transfer log")
        res = req.resource
        settings = (res.transfers if isinstance(res, SshResource) else None) or req.config.transfers
        root = archive_root(req.config.recordings_dir)
        spool = (lambda: Spool(root, settings.max_archive_bytes)) if settings.archive else None
        self.gate = SftpGate(req.hooks, to_target=super().write, to_client=lambda b: self.relay.output(self, b),
                             say=self._say, record=req.record, end=self._end, spool=spool)
        await super().open(req)

    def _say(self, text: str) -> None:
        """A line on the operator's stderr: sftp and scp show the target's stderr, not an SFTP status text."""
        self.relay.output(self, f"bastion: {text}\n".encode(), stderr=True)

    def _end(self, why: str) -> None:
        log.info("sftp session ends: %s", why)
        self.lost_reason = why
        self.close()

    def write(self, data: bytes) -> None:
        if self.gate is not None:
            self.gate.from_client(data)

    def received(self, data: bytes, stderr: bool) -> None:
        if stderr:  # the target's sftp-server writes nothing there but its own log lines
            self.relay.output(self, data, stderr=True)
        elif self.gate is not None:
            self.gate.from_target(data)

    def close(self) -> None:
        if self.gate is not None:
            self.gate.close()
        super().close()
