"""Live sessions on this node: reviewers and auditors list them, observe one read-only as it happens, and terminate
it with a reason the operator sees.

An observer gets the screen as it is now (rebuilt from the tail of the recording, which is flushed per event), then
the output as it is recorded. A slow observer never slows the observed session: while its channel is full, output
is dropped for it and the screen is rebuilt when it can take more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.relay import Relay, Tee
from recorder.seekindex import events_from, paint

log = logging.getLogger(__name__)

SNAPSHOT_TAIL = 256 * 1024
"""Bytes of recording read back to rebuild the current screen (a shell's screen is in its last few KB)."""
STOP_KEYS = (b"q", b"Q", b"\x03", b"\x1d")  # q, Ctrl-C, Ctrl-]


@dataclass
class LiveSession:
    sid: str
    user: str
    resource: str
    kind: str
    mode: str
    command: str | None
    client_addr: str
    node: str
    tee: Tee
    relay: Relay
    notify: Callable[[str], None]  # a line on the operator's terminal
    stop: Callable[[], None]  # ends the target session
    started: float = field(default_factory=time.time)
    terminated: tuple[str, str] | None = None  # (by, reason)
    observers: set[str] = field(default_factory=set)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.sid, "user": self.user, "resource": self.resource, "kind": self.kind, "mode": self.mode,
                "command": self.command or "", "client_addr": self.client_addr, "node": self.node,
                "started": self.started, "age": round(time.time() - self.started, 1),
                "observers": sorted(self.observers)}

    def terminate(self, by: str, reason: str) -> None:
        """Tell the operator why, mark the recording, and end the target session."""
        if self.terminated is not None:
            return
        self.terminated = (by, reason)
        self.tee.writer.marker(f"session terminated by {by}: {reason}")
        self.notify(f"this session was terminated by {by}: {reason}")
        self.stop()


class LiveRegistry:
    """The brokered sessions running on this node, by session id."""

    def __init__(self) -> None:
        self._live: dict[str, LiveSession] = {}

    def add(self, live: LiveSession) -> None:
        self._live[live.sid] = live

    def remove(self, sid: str) -> None:
        self._live.pop(sid, None)

    def get(self, sid: str) -> LiveSession | None:
        return self._live.get(sid)

    def list(self) -> list[LiveSession]:
        return sorted(self._live.values(), key=lambda s: s.started)


def snapshot(path: Path, upto: int, cols: int, rows: int) -> str:
    """ANSI that paints the screen the recording at ``path`` shows after its first ``upto`` bytes."""
    import pyte

    screen = pyte.Screen(cols, rows)
    stream = pyte.Stream(screen)
    start = max(0, upto - SNAPSHOT_TAIL)
    with open(path, "rb") as f:
        if start:
            f.seek(start)
            f.readline()  # the rest of a line cut in the middle
            start = f.tell()
        else:
            start = len(f.readline())  # the header
    for pos, ev in events_from(path, start):
        if pos > upto:
            break
        if ev.code == "o":
            stream.feed(ev.data)
    return paint(screen)


class Observer:
    """The observer's side: an endpoint of the observer's relay that shows another session and takes no input but
    the keys that stop it."""

    def __init__(self, relay: Relay, live: LiveSession, who: str) -> None:
        self.relay, self.live, self.who = relay, live, who
        self.done = asyncio.Event()
        self.reason = ""
        self._buffer: list[bytes] | None = []  # live output that arrives while the first screen is built
        self._paused = False
        self._dropped = False

    async def run(self) -> str:
        """Observe until a stop key, the end of the observed session, or the observer's disconnection."""
        live = self.live
        live.tee.watchers.add(self._on_output)
        live.observers.add(self.who)
        self.relay.attach(self, None)
        self.relay.release()
        try:
            self.relay.output(self, f"\x1b]2;observing {live.user}@{live.resource} (read-only, q stops)\x07"
                              .encode())
            await self._repaint()
            ended = asyncio.ensure_future(live.ended.wait())
            done = asyncio.ensure_future(self.done.wait())
            await asyncio.wait({ended, done}, return_when=asyncio.FIRST_COMPLETED)
            for f in (ended, done):
                f.cancel()
            if live.ended.is_set() and not self.done.is_set():
                self.reason = "the observed session ended"
        finally:
            live.tee.watchers.discard(self._on_output)
            live.observers.discard(self.who)
            self.relay.detach()
        return self.reason

    async def _repaint(self) -> None:
        """The observed screen as it is now, then whatever was said while it was being built."""
        self._buffer = []
        writer = self.live.tee.writer
        upto = writer.bytes_written  # taken in the same loop step as the watcher: nothing is lost or doubled
        try:
            screen = await asyncio.to_thread(snapshot, writer.path, upto, self.live.relay.cols, self.live.relay.rows)
        except OSError as e:
            screen = f"\x1b[0m\x1b[H\x1b[2J(cannot show the screen so far: {e.strerror})\r\n"
        pending, self._buffer = self._buffer, None
        self.relay.output(self, screen.encode())
        for data in pending:
            self.relay.output(self, data)

    def _on_output(self, data: bytes) -> None:
        if self._buffer is not None:
            self._buffer.append(data)
        elif self._paused:
            self._dropped = True
        else:
            self.relay.output(self, data)

    def finish(self, reason: str) -> None:
        if not self.done.is_set():
            self.reason = reason
            self.done.set()

    # -- Endpoint protocol (the observer's keys) -------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if any(k in data for k in STOP_KEYS):
            self.finish("stopped observing")

    def resize(self, cols: int, rows: int) -> None:
        pass

    def signal(self, name: str) -> None:
        if name == "INT":
            self.finish("stopped observing")

    def send_break(self, msec: int) -> None:
        pass

    def eof(self) -> None:
        self.finish("the observer's input ended")

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        if self._dropped and self._buffer is None:
            self._dropped = False
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._repaint())

    def pending(self) -> int:
        return 0

    def echo_known(self) -> bool | None:
        return None
