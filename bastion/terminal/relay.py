"""The relay: one SSH channel <-> one active endpoint, with the recorder teeing both directions.

There is one relay per SSH session channel. It always has a *base* endpoint (the session process on its pty, or
nothing for direct forms) and at most one *active* brokered endpoint (an SSH target's remote process). Client
input goes to the active endpoint if there is one, else to the base. Output of either goes to the client; only the
brokered endpoint's traffic is recorded. Window changes reach every endpoint so the menu is the right size when it
comes back. Large output chunks are delivered one per loop turn (:mod:`bastion.terminal.fairness`), so bulk output
of one session never delays another's keystrokes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from bastion import metrics
from bastion.terminal.cmdfilter import CommandFilter
from bastion.terminal.fairness import BULK_CHUNK, scheduler
from bastion.terminal.ptyproc import PtyProcess, set_winsize
from bastion.terminal.tee import Tee

log = logging.getLogger(__name__)

MAX_PENDING = 256 * 1024  # bytes buffered toward a slow endpoint before we stop reading the client
MAX_RECORDING_BACKLOG = 8 * 1024 * 1024  # recorded bytes not yet on disk before bulk output waits for the disk


class Endpoint(Protocol):
    """What the relay needs of an endpoint."""

    def write(self, data: bytes) -> None: ...
    def resize(self, cols: int, rows: int) -> None: ...
    def signal(self, name: str) -> None: ...
    def send_break(self, msec: int) -> None: ...
    def eof(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def pending(self) -> int: ...
    def echo_known(self) -> bool | None: ...


class ClientChannel(Protocol):
    def write(self, data: bytes, datatype: int | None = None) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


STDERR = 1  # asyncssh.EXTENDED_DATA_STDERR


class Relay:
    """Moves bytes between the client channel and endpoints; see the module docstring."""

    def __init__(self, chan: ClientChannel, cols: int = 80, rows: int = 24):
        self.chan = chan
        self.cols, self.rows = cols, rows
        self.base: Endpoint | None = None
        self.active: Endpoint | None = None
        self.tee: Tee | None = None
        self.filter: CommandFilter | None = None
        self._client_paused = False
        self._output_paused = False
        # Input is held until an endpoint is ready for it: data and EOF may arrive before the first one exists.
        self._held: bytearray | None = bytearray()
        self._held_eof = False
        self.on_interrupt: Callable[[], None] | None = None  # Ctrl-C while input is held (withdraw)
        self.ctrl_c_withdraws = True  # a terminal's Ctrl-C; without a terminal a 0x03 byte is data
        self.last_input = time.monotonic()  # when the client last typed (the idle timeout counts from it)
        # set while input is paused (a moderated session without its moderators): what the client types is dropped,
        # never queued, and this is called instead
        self.input_paused: Callable[[], None] | None = None
        self._bulk: deque[tuple[Endpoint, bytes, bool]] = deque()  # output waiting for its turn (fairness)
        self._bulk_paused: list[Endpoint] = []  # endpoints not read while their output waits
        self.kind: str | None = None  # the brokered session's kind: its bytes are counted (metrics)
        self.keystrokes = False  # an interactive session: each client chunk's trip to the target is timed

    # -- wiring -----------------------------------------------------------------------------------------
    def set_base(self, ep: Endpoint | None) -> None:
        self.base = ep

    def hold(self) -> None:
        """A target is being opened: keep what the client types (and its EOF) for it instead of the menu."""
        if self._held is None:
            self._held = bytearray()
            self._held_eof = False

    def attach(self, ep: Endpoint, tee: Tee | None, cmd_filter: CommandFilter | None = None, *,
               kind: str | None = None, keystrokes: bool = False) -> None:
        """Make ``ep`` the endpoint that receives client input, recording through ``tee``, judged by
        ``cmd_filter`` at each Enter. ``kind``: a brokered session's, whose bytes are counted each way;
        ``keystrokes``: an interactive one, whose keystroke latency is measured."""
        self.active, self.tee, self.filter = ep, tee, cmd_filter
        self.kind, self.keystrokes = kind, keystrokes
        ep.resize(self.cols, self.rows)
        if self._output_paused:
            ep.pause_reading()

    def release(self) -> None:
        """The active endpoint is ready for input: hand it what was typed while it was being opened."""
        held, eof = self._held, self._held_eof
        self._held, self._held_eof = None, False
        if held:
            self.from_client(bytes(held))
        if eof:
            self.eof()
        self._maybe_resume_client()

    def discard_held(self) -> None:
        """Forget what was typed while the opening was held (keys typed while no moderator watched); an EOF
        stays."""
        if self._held is not None:
            self._held = bytearray()

    def detach(self) -> None:
        while self._bulk:  # what the brokered endpoint sent reaches the client and the recording before it goes
            self._deliver(*self._bulk.popleft())
        self._resume_bulk_paused()
        self.active, self.tee, self.filter = None, None, None
        self.kind, self.keystrokes = None, False
        self._held, self._held_eof = None, False
        self._maybe_resume_client()

    @property
    def target(self) -> Endpoint | None:
        return self.active or self.base

    # -- client -> endpoint -----------------------------------------------------------------------------
    def from_client(self, data: bytes) -> None:
        self.last_input = received = time.monotonic()
        if self._held is not None:
            # Ctrl-C withdraws what holds the opening -- typed on a terminal; without one the bytes are data (an
            # sftp client's INIT carries a 3)
            if self.ctrl_c_withdraws and b"\x03" in data and self.on_interrupt is not None:
                self.on_interrupt()
                return
            self._held += data
            if len(self._held) > MAX_PENDING and not self._client_paused:
                self._client_paused = True
                self.chan.pause_reading()
            return
        ep = self.target
        if ep is None:
            return
        if ep is self.active and self.input_paused is not None:
            self.input_paused()
            return
        if ep is self.active:
            if self.kind is not None:
                metrics.relayed("in", self.kind, len(data))
            if self.tee is not None:
                self.tee.input(data, ep.echo_known())
            if self.filter is not None:
                self.filter.input(data)  # a key it keeps (a line held for a reviewer) is not a relay latency
                if self.keystrokes:
                    metrics.observe_keystroke(time.monotonic() - received)
                return
        ep.write(data)
        if ep is self.active and self.keystrokes:  # client byte in -> the same byte handed to the target
            metrics.observe_keystroke(time.monotonic() - received)
        if ep.pending() > MAX_PENDING and not self._client_paused:
            self._client_paused = True
            self.chan.pause_reading()

    def endpoint_drained(self) -> None:
        """An endpoint flushed its buffer: read from the client again."""
        self._maybe_resume_client()

    def _maybe_resume_client(self) -> None:
        ep = self.target
        if self._client_paused and self._held is None and (ep is None or ep.pending() <= MAX_PENDING // 2):
            self._client_paused = False
            self.chan.resume_reading()

    def resize(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        for ep in {id(e): e for e in (self.base, self.active) if e is not None}.values():
            ep.resize(cols, rows)
        if self.tee is not None:
            self.tee.writer.resize(cols, rows)
        if self.filter is not None:
            self.filter.resize(cols)

    def signal(self, name: str) -> None:
        if self._held is not None and name == "INT" and self.on_interrupt is not None:
            self.on_interrupt()
        elif self.input_paused is not None and self.target is self.active:
            self.input_paused()  # a signal is input too
        elif self.target is not None:
            self.target.signal(name)

    def send_break(self, msec: int) -> None:
        if self.input_paused is not None and self.target is self.active:
            self.input_paused()
        elif self.target is not None:
            self.target.send_break(msec)

    def eof(self) -> None:
        if self._held is not None:
            self._held_eof = True
        elif self.input_paused is not None and self.target is self.active:
            self.input_paused()  # the end of input is input too: a pty would type ^D
        elif self.target is not None:
            self.target.eof()

    # -- endpoint -> client -----------------------------------------------------------------------------
    def output(self, ep: Endpoint, data: bytes, stderr: bool = False) -> None:
        """Output from ``ep``: to the client, and into the recording if ``ep`` is the brokered one. A large chunk (or
        any, while some wait) waits for its turn, and ``ep`` is not read until the queue is empty."""
        if self._bulk or len(data) >= BULK_CHUNK:
            if not self._bulk:
                scheduler().add(self)
            self._bulk.append((ep, data, stderr))
            if ep not in self._bulk_paused:
                self._bulk_paused.append(ep)
                ep.pause_reading()
            return
        self._deliver(ep, data, stderr)

    def drain_one(self) -> bool | None:
        """Deliver the oldest waiting chunk (the scheduler's turn); whether more wait (None: not now, the recording
        is behind a slow disk)."""
        if not self._bulk:
            return False
        if self.tee is not None and self.tee.writer.backlog > MAX_RECORDING_BACKLOG:
            return None
        self._deliver(*self._bulk.popleft())
        if self._bulk:
            return True
        self._resume_bulk_paused()
        return False

    def _resume_bulk_paused(self) -> None:
        paused, self._bulk_paused = self._bulk_paused, []
        if not self._output_paused:
            for ep in paused:
                ep.resume_reading()

    def _deliver(self, ep: Endpoint, data: bytes, stderr: bool) -> None:
        if ep is self.active:
            if self.kind is not None:
                metrics.relayed("out", self.kind, len(data))
            if self.tee is not None:
                self.tee.output(data)
        self.chan.write(data, STDERR if stderr else None)
        if ep is self.active and self.filter is not None and not stderr:
            self.filter.output(data)  # after the client has the bytes: a decision's message comes after the echo

    def say(self, data: bytes) -> None:
        """Bastion's own words to the operator, recorded like output."""
        if self.tee is not None:
            self.tee.said(data)
        self.chan.write(data)

    def pause_output(self) -> None:
        """The client's window is full: stop reading endpoints (backpressure to the source)."""
        self._output_paused = True
        for ep in (self.base, self.active):
            if ep is not None:
                ep.pause_reading()

    def resume_output(self) -> None:
        self._output_paused = False
        for ep in (self.base, self.active):
            if ep is not None and ep not in self._bulk_paused:  # those resume when their queue is empty
                ep.resume_reading()


class PtyEndpoint:
    """The session process on its pty, read and written through the master fd."""

    def __init__(self, proc: PtyProcess, relay: Relay, on_exit: Callable[[int | None], None],
                 owner: Endpoint | None = None):
        self.proc = proc
        self.relay = relay
        self.owner = owner  # the endpoint the relay knows this pty as (e.g. an interactive psql target)
        self.seen: Callable[[bytes], None] | None = None  # told every byte the process writes, as it is read
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._out = bytearray()
        self._reading = False
        self._closed = False
        self.resume_reading()

    def _readable(self) -> None:
        try:
            data = os.read(self.proc.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave fd is closed, the process is gone
            data = b""
        if not data:
            self._finish()
            return
        if self.seen is not None:
            self.seen(data)
        self.relay.output(self.owner or self, data)

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pause_reading()
        if self._out:
            self._loop.remove_writer(self.proc.master)
        self._loop.create_task(self._reap())

    async def _reap(self) -> None:
        try:
            status = await asyncio.wait_for(asyncio.to_thread(self.proc.proc.wait), 5)
        except TimeoutError:
            self.proc.terminate()
            status = await asyncio.to_thread(self.proc.proc.wait)
        self.proc.close()
        self._on_exit(status)

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        if not self._out:
            try:
                n = os.write(self.proc.master, data)
            except BlockingIOError:
                n = 0
            except OSError:
                return
            data = data[n:]
            if not data:
                return
            self._loop.add_writer(self.proc.master, self._writable)
        self._out += data

    def _writable(self) -> None:
        try:
            n = os.write(self.proc.master, self._out)
        except BlockingIOError:
            return
        except OSError:
            n = len(self._out)
        del self._out[:n]
        if not self._out:
            self._loop.remove_writer(self.proc.master)
            self.relay.endpoint_drained()

    def pending(self) -> int:
        return len(self._out)

    def resize(self, cols: int, rows: int) -> None:
        if not self._closed:
            try:
                set_winsize(self.proc.master, cols, rows)
            except OSError:
                pass

    def signal(self, name: str) -> None:
        import signal as _signal

        sig = getattr(_signal, f"SIG{name}", None)
        if sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT) and not self._closed:
            try:
                os.killpg(os.tcgetpgrp(self.proc.master), sig)
            except OSError:
                pass

    def send_break(self, msec: int) -> None:
        self.signal("INT")

    def eof(self) -> None:
        self.write(b"\x04")

    def echo_known(self) -> bool | None:
        return self.proc.echo_enabled()

    def pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.proc.master)
            self._reading = False

    def resume_reading(self) -> None:
        if not self._reading and not self._closed:
            self._loop.add_reader(self.proc.master, self._readable)
            self._reading = True

    def close(self) -> None:
        """Hang up the session process."""
        if self.proc.proc.poll() is None:
            self.proc.terminate()
