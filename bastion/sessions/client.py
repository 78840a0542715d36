"""The operator's end of one SSH channel, as the work that channel carries sees it.

The SSH layer owns the channel and its callbacks; the broker, the menu's handlers, the observers and the player get
this instead: the relay to attach endpoints to, the terminal's type and size, a way to tell the operator something
on stderr, the events that withdraw what is held, and whether the client is still there.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

import asyncssh

from bastion.terminal.relay import Relay

if TYPE_CHECKING:
    from bastion.oversight.live import LiveSession, ReadOnlyView


class Closable(Protocol):
    def close(self) -> None: ...


class StderrChannel(Protocol):
    def write(self, data: bytes, datatype: int | None = None) -> None: ...


class ClientSide:
    """One channel's client, its relay and what it is busy with (one brokered session, observer or player at a
    time)."""

    def __init__(self, chan: StderrChannel, relay: Relay, term_type: str | None, cols: int, rows: int):
        self.chan, self.relay = chan, relay
        self.term_type = term_type  # None: no terminal (exec form, scripts)
        self.cols, self.rows = cols, rows
        self.gone = False  # the client hung up
        self.opening = False  # a session, an observer or a replay occupies the channel
        self.withdraw = asyncio.Event()  # Ctrl-C or a hang-up while a request holds the opening
        self.filter_withdraw = asyncio.Event()  # the same, for what a session's filter or proxy holds
        self.endpoints: set[Closable] = set()  # closed at once when the client hangs up
        self.observer: ReadOnlyView | None = None
        self.live: LiveSession | None = None  # the brokered session this channel carries now
        relay.on_interrupt = self.withdraw.set
        relay.ctrl_c_withdraws = term_type is not None

    @property
    def pty(self) -> bool:
        return self.term_type is not None

    def stderr(self, text: str) -> None:
        """Tell the operator ``text`` on stderr (with a terminal, lines end in CR LF); a hang-up is not an error."""
        self._write(text, asyncssh.EXTENDED_DATA_STDERR)

    def stdout(self, text: str) -> None:
        """Answer on stdout (what a script reads: ``ssh bastion review --json``), like :meth:`stderr`."""
        self._write(text, None)

    def _write(self, text: str, datatype: int | None) -> None:
        data = text.encode()
        if self.term_type is not None:
            data = data.replace(b"\n", b"\r\n")
        try:
            self.chan.write(data, datatype)
        except (OSError, asyncssh.Error):  # the client hung up while we were telling it something
            self.gone = True

    def hung_up(self) -> None:
        """The client went away: withdraw what is held and close what this channel carries (each ends normally,
        so its session is closed in the store and its recording chained)."""
        self.gone = True
        self.withdraw.set()
        self.filter_withdraw.set()
        for ep in list(self.endpoints):
            ep.close()
        if self.observer is not None:
            self.observer.finish("the observer disconnected")
