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
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.oversight.moderation import Moderation
from bastion.terminal.relay import Relay
from bastion.terminal.tee import Tee
from recorder.asciicast import CastError, read_header
from recorder.seekindex import complete_events, events_from, paint

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
    end_outcome: str = "terminated"  # the session's outcome when it was ended from here ("idle", "expired")
    observers: set[str] = field(default_factory=set)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    moderation: Moderation | None = None  # the resource requires moderators (bastion.oversight.moderation)
    waiting: bool = False  # a moderated session not opened yet: it waits for its moderators

    def as_dict(self) -> dict[str, Any]:
        m = self.moderation
        return {"id": self.sid, "user": self.user, "resource": self.resource, "kind": self.kind, "mode": self.mode,
                "command": self.command or "", "client_addr": self.client_addr, "node": self.node,
                "started": self.started, "age": round(time.time() - self.started, 1),
                "observers": sorted(self.observers),
                "moderation": None if m is None else {"needed": m.count, "watching": m.watching(),
                                                      "waiting": self.waiting}}

    def terminate(self, by: str, reason: str) -> None:
        """Tell the operator why, mark the recording, and end the target session."""
        if self.terminated is not None:
            return
        self.terminated = (by, reason)
        self.tee.writer.marker(f"session terminated by {by}: {reason}")
        self.notify(f"this session was terminated by {by}: {reason}")
        self.stop()

    def expire(self, outcome: str, reason: str) -> None:
        """The bastion ends the session by its own rule (idle, too long): the operator is told why, and the
        recording and the session's outcome say so."""
        if self.terminated is not None:
            return
        self.terminated = ("bastion", reason)
        self.end_outcome = outcome
        self.tee.writer.marker(f"session closed by the bastion: {reason}")
        self.notify(f"this session was closed: {reason}")
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


class ReadOnlyView:
    """An endpoint of the observer's relay that shows another session and takes no input but the keys that stop
    it. While the observer's channel is full, output is dropped for it and the screen is rebuilt when it can take
    more (``_repaint``)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.done = asyncio.Event()
        self.reason = ""
        self._paused = False
        self._dropped = False

    async def _repaint(self) -> None:
        raise NotImplementedError

    def finish(self, reason: str) -> None:
        if not self.done.is_set():
            self.reason = reason
            self.done.set()

    def _show(self, data: bytes) -> None:
        if self._paused:
            self._dropped = True
        else:
            self.relay.output(self, data)

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
        if self._dropped:
            self._dropped = False
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._repaint())

    def pending(self) -> int:
        return 0

    def echo_known(self) -> bool | None:
        return None


class Observer(ReadOnlyView):
    """Observe a session this node carries: fed by its recording tee as the output is recorded."""

    def __init__(self, relay: Relay, live: LiveSession, who: str) -> None:
        super().__init__(relay)
        self.live, self.who = live, who
        self._buffer: list[bytes] | None = None  # while a screen is being built: the live output meanwhile

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
        if self._buffer is not None:
            return  # one is being built
        self._buffer = []
        writer = self.live.tee.writer
        upto = writer.bytes_written  # taken in the same loop step as the watcher: nothing is lost or doubled
        try:
            cols, rows = self.live.relay.cols, self.live.relay.rows

            def screen_so_far() -> str:
                writer.wait_written(upto)  # recordings are written by a thread: the file may lag a little
                return snapshot(writer.path, upto, cols, rows)

            screen = await asyncio.to_thread(screen_so_far)
        except OSError as e:
            screen = f"\x1b[0m\x1b[H\x1b[2J(cannot show the screen so far: {e.strerror})\r\n"
        pending, self._buffer = self._buffer, None
        self.relay.output(self, screen.encode())
        for data in pending:
            self.relay.output(self, data)

    def _on_output(self, data: bytes) -> None:
        if self._buffer is not None:
            self._buffer.append(data)
        else:
            self._show(data)


class RemoteObserver(ReadOnlyView):
    """Observe a session another node carries, by following its recording as that node writes it (flushed per
    event) in the shared recordings directory. ``still_active`` asks the store whether the session goes on."""

    POLL = 0.1
    CHECK_ACTIVE = 1.0

    def __init__(self, relay: Relay, path: Path, title: str, still_active: Callable[[], Awaitable[bool]]) -> None:
        super().__init__(relay)
        self.path, self.title, self.still_active = path, title, still_active
        self._pos = 0
        self._size = (80, 24)
        self._lock = asyncio.Lock()

    async def run(self) -> str:
        """Observe until a stop key, the end of the observed session, or the observer's disconnection."""
        self.relay.attach(self, None)
        self.relay.release()
        try:
            self.relay.output(self, f"\x1b]2;observing {self.title} (read-only, q stops)\x07".encode())
            try:
                header = await asyncio.to_thread(read_header, self.path)
                self._size = (int(header.get("width", 80)), int(header.get("height", 24)))
            except (OSError, CastError, ValueError, TypeError) as e:
                return f"cannot follow its recording: {e}"
            await self._repaint()
            checked = time.monotonic()
            while not self.done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.done.wait(), self.POLL)
                await self._follow()
                if time.monotonic() - checked >= self.CHECK_ACTIVE and not self.done.is_set():
                    checked = time.monotonic()
                    if not await self.still_active():
                        await self._follow()  # its last words
                        self.finish("the observed session ended")
        finally:
            self.relay.detach()
        return self.reason

    async def _follow(self) -> None:
        async with self._lock:
            try:
                pos, events = await asyncio.to_thread(complete_events, self.path, self._pos)
            except OSError as e:  # moved to a bucket once it closed, or the shared mount failed
                self.finish(f"its recording can no longer be read ({e.strerror})")
                return
            self._pos = pos
            for ev in events:
                if ev.code == "o":
                    self._show(ev.data.encode())
                elif ev.code == "r":
                    with contextlib.suppress(ValueError):
                        cols, rows = ev.data.split("x")
                        self._size = (int(cols), int(rows))

    async def _repaint(self) -> None:
        """The screen as the recording shows it up to its last complete line; following goes on from there."""
        def build() -> tuple[int, str]:
            upto = complete_end(self.path)
            return upto, snapshot(self.path, upto, *self._size)

        async with self._lock:
            try:
                self._pos, screen = await asyncio.to_thread(build)
            except OSError as e:
                screen = f"\x1b[0m\x1b[H\x1b[2J(cannot show the screen so far: {e.strerror})\r\n"
            self.relay.output(self, screen.encode())


def complete_end(path: Path) -> int:
    """The offset just after the last complete line of a file still being written."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - SNAPSHOT_TAIL)
        f.seek(start)
        tail = f.read(size - start)
    return start + tail.rfind(b"\n") + 1
