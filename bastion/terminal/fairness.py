"""Fairness inside one event loop: bulk output never makes another session's keystrokes wait.

The daemon moves every session's bytes on one event loop, and a loop turn runs every callback that is ready. When
one operator ``cat``s a large file, its target delivers a large chunk each turn, and recording and re-encrypting it
used to hold the turn for as long as it took: every other session's echo waited behind it (tens of milliseconds
with three such streams). Here a relay hands a large chunk (or any chunk while it still has some queued) to the
loop's :class:`BulkScheduler` and stops reading that endpoint; the scheduler delivers *one* queued chunk per loop
turn, round robin over the relays that have some, and the relay reads its endpoint again once its queue is empty.
Small chunks -- echoes, prompts, a line of output -- are delivered at once, so an interactive session waits at most
for one bulk chunk per turn, however many bulk sessions there are. Bulk sessions share what is left fairly, and
backpressure reaches each bulk sender (its SSH window fills) rather than everyone.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Protocol

BULK_CHUNK = 4096  # bytes: a chunk at least this large is bulk (a keystroke's echo, a prompt, are far smaller)
BLOCKED_RETRY = 0.02  # seconds before a relay whose recording is behind the disk gets another turn


class Drains(Protocol):
    def drain_one(self) -> bool | None:
        """Deliver one queued chunk; whether more are queued (None: it cannot deliver now, try again soon)."""
        ...


class BulkScheduler:
    """One per event loop (:func:`scheduler`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready: deque[Drains] = deque()
        self._scheduled = False

    def add(self, relay: Drains) -> None:
        """``relay`` has queued output (called when its queue becomes non-empty)."""
        self._ready.append(relay)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        """One chunk of one relay, then the rest of the loop (I/O, other sessions) runs before the next."""
        self._scheduled = False
        if not self._ready:
            return
        relay = self._ready.popleft()
        more = relay.drain_one()
        if more:
            self._ready.append(relay)
        elif more is None:  # its recording is behind the disk: it waits, the others go on
            self._loop.call_later(BLOCKED_RETRY, self.add, relay)
        if self._ready:
            self._scheduled = True
            self._loop.call_soon(self._turn)


_schedulers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BulkScheduler] = weakref.WeakKeyDictionary()


def scheduler() -> BulkScheduler:
    """The running loop's scheduler."""
    loop = asyncio.get_running_loop()
    s = _schedulers.get(loop)
    if s is None:
        s = _schedulers[loop] = BulkScheduler(loop)
    return s
