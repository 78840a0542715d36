"""What every sink is (:class:`Sink`), and the sink a config entry describes (:func:`build`)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bastion.config import Config
    from bastion.config.export import AnySink


class DeliveryError(Exception):
    """A batch did not reach its sink (one line for the log and ``audit export --status``: no traceback)."""


class Sink(Protocol):
    def send(self, records: Sequence[dict[str, Any]]) -> None:
        """Deliver these exported events, in order, or raise :class:`DeliveryError` (then all of them are sent
        again later: a sink may see an event twice, never miss one)."""

    def close(self) -> None:
        """Let go of connections and descriptors (the sink may be used again: it reconnects)."""


def build(cfg: Config, model: AnySink, timeout: float) -> Sink:
    """The sink for one entry of ``audit.export``."""
    from bastion.config.export import FACILITIES, FileSink, JournalSink, SyslogSink
    from bastion.export import filesink, journal, syslog

    if isinstance(model, FileSink):
        return filesink.FileSink(cfg.resolve(model.path), model.max_bytes, model.keep, model.fsync)
    if isinstance(model, SyslogSink):
        return syslog.SyslogSink(model.host, model.port, model.transport, timeout,
                                 facility=FACILITIES[model.facility],
                                 hostname=model.hostname or socket.gethostname(), app_name=model.app_name,
                                 max_message=model.max_message)
    assert isinstance(model, JournalSink)
    return journal.JournalSink(model.socket, model.identifier, timeout)
