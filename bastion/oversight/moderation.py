"""Moderated sessions: a resource may require ``count`` people of given roles to watch a session live.

Segregation of duties beyond after-the-fact approval: on such a resource the operator's session waits until enough
moderators observe it (from F4, or ``ssh -t bastion observe SESSION``), its input pauses whenever they are fewer
(keystrokes are dropped, not queued: nothing typed unwatched runs later), and it ends when they stay fewer for the
resource's ``moderator_grace``. Every step is a marker in the recording and an audit event.

Moderators observe from their own connection, which is often another process or another node than the one carrying
the session: they announce themselves with published events (``join``, a ``beat`` every :data:`BEAT` seconds while
they watch, ``leave``), and a moderator not heard from for :data:`STALE` seconds (a process that died) no longer
counts. One in the same process joins directly and counts until it leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

BEAT = 2.0
STALE = 3 * BEAT + 1.0


def may_moderate(moderator_roles: Iterable[str], user: str, roles: Iterable[str], operator: str) -> bool:
    """``user`` (holding ``roles``) counts as a moderator of ``operator``'s session: one of the moderator roles, and
    never the operator themselves."""
    return user != operator and bool(set(moderator_roles) & set(roles))


@dataclass
class Moderation:
    """Who moderates one session now. ``present``: moderator -> when last heard (monotonic; ``inf`` for one in this
    process, who counts until it leaves)."""

    operator: str
    roles: tuple[str, ...]
    count: int
    grace: float
    wait: float
    present: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ever: list[str] = field(default_factory=list)  # everyone who moderated, in order (the audit report lists them)

    def qualifies(self, user: str, roles: Iterable[str]) -> bool:
        return may_moderate(self.roles, user, roles, self.operator)

    def join(self, who: str, *, local: bool = False) -> bool:
        """``who`` watches (or is still watching: a beat); whether this is news."""
        new = who not in self.present
        self.present[who] = math.inf if local else time.monotonic()
        if who not in self.ever:
            self.ever.append(who)
        if new:
            self.changed.set()
        return new

    def leave(self, who: str) -> bool:
        """``who`` stopped watching; whether they were counted."""
        if self.present.pop(who, None) is None:
            return False
        self.changed.set()
        return True

    def expire(self, now: float | None = None) -> list[str]:
        """Forget moderators not heard from for :data:`STALE` seconds; who was forgotten."""
        now = time.monotonic() if now is None else now
        gone = [w for w, t in self.present.items() if now - t > STALE]
        for w in gone:
            self.leave(w)
        return gone

    @property
    def satisfied(self) -> bool:
        return len(self.present) >= self.count

    def watching(self) -> list[str]:
        return sorted(self.present)

    async def until(self, want: bool, timeout: float, stop: asyncio.Event | None = None) -> bool:
        """Wait until :attr:`satisfied` is ``want`` (True: enough moderators; False: too few), ``stop`` is set, or
        ``timeout`` passes; whether it came to ``want``. Stale moderators are dropped as time goes."""
        deadline = time.monotonic() + timeout
        while True:
            self.expire()
            if self.satisfied == want:
                return True
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return False
            self.changed.clear()
            waits = [asyncio.ensure_future(self.changed.wait())]
            if stop is not None:
                waits.append(asyncio.ensure_future(stop.wait()))
            try:
                await asyncio.wait(waits, timeout=min(left, BEAT), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()


@dataclass
class Enforcer:
    """While a moderated session runs: pause its input when moderators are too few, resume when they are back,
    end it after the grace period. ``say``: a line for the operator; ``mark``: a recording marker; ``pause``:
    input on (None) or off (the callable run for each dropped keystroke batch); ``end``: ends the session."""

    moderation: Moderation
    say: Callable[[str], None]
    mark: Callable[[str], None]
    pause: Callable[[Callable[[], None] | None], None]
    end: Callable[[str], None]
    _told: float = 0.0

    def _dropped(self) -> None:
        """A keystroke while input is paused: said at most every few seconds, never queued."""
        now = time.monotonic()
        if now - self._told > 5.0:
            self._told = now
            self.say("input is paused: no moderator is watching (what you type is dropped)")

    async def run(self) -> None:
        m = self.moderation
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await m.until(False, math.inf)
                self.pause(self._dropped)
                self.mark(f"input paused: {len(m.present)} of {m.count} moderator(s) watching")
                self.say(f"input paused: no moderator is watching; the session ends in {m.grace:g}s "
                         "unless one joins")
                if not await m.until(True, m.grace):
                    self.mark(f"session ended: no moderator for {m.grace:g}s")
                    self.end(f"no moderator watched for {m.grace:g}s")
                    return
                self.pause(None)
                self.mark(f"input resumed: moderated by {', '.join(m.watching())}")
                self.say(f"input resumed: moderated by {', '.join(m.watching())}")
