"""Session time limits: ``limits.idle_timeout`` (no input on a connection with a terminal) and
``limits.max_session_duration`` (a brokered session's length). Each warns before it acts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bastion.config import Config
from bastion.oversight.live import LiveSession
from bastion.terminal.relay import Relay


def fmt_seconds(sec: float) -> str:
    """A length of time in words an operator reads at a glance: 45 s, 15 min, 2 h 30 min."""
    sec = int(round(sec))
    if sec < 120:
        return f"{sec} s"
    if sec < 7200:
        return f"{round(sec / 60)} min"
    h, m = divmod(round(sec / 60), 60)
    return f"{h} h" + (f" {m} min" if m else "")


def warning_lead(limit: float) -> float:
    """How long before a limit the operator is warned: a minute (five for long limits), at most a quarter of it."""
    return min(300.0 if limit >= 3600 else 60.0, limit / 4)


class IdleWatch:
    """Watches a relay's input against ``timeout()`` (read anew each round: a brokered session's resource may set
    its own; None: no limit now): ``warn(left)`` once when the connection has been idle for the timeout minus the
    warning lead (again after new input), then ``close()`` when it has been idle for the timeout."""

    IDLE_CHECK = 5.0  # seconds between looks while no limit applies

    def __init__(self, relay: Relay, timeout: Callable[[], float | None], warn: Callable[[float], None],
                 close: Callable[[], None]):
        self.relay, self.timeout, self.warn, self.close = relay, timeout, warn, close

    async def run(self) -> None:
        warned_at: float | None = None
        while True:
            timeout = self.timeout()
            if not timeout:
                await asyncio.sleep(self.IDLE_CHECK)
                continue
            lead = warning_lead(timeout)
            last = self.relay.last_input
            idle = time.monotonic() - last
            if idle >= timeout:
                self.close()
                return
            if idle >= timeout - lead:
                if warned_at != last:
                    warned_at = last
                    self.warn(timeout - idle)
                await asyncio.sleep(min(timeout - idle, 1.0) + 0.01)
            else:
                await asyncio.sleep(min(timeout - lead - idle, self.IDLE_CHECK) + 0.01)


def time_limit(config: Config, resource: str | None, name: str) -> float | None:
    """A time limit (``idle_timeout``, ``max_session_duration``): the resource's own, else the daemon's."""
    res = config.resources.get(resource) if resource is not None else None
    limit = getattr(res, name, None) or getattr(config.limits, name)
    return float(limit) if limit else None


def duration_timers(live: LiveSession, limit: float | None) -> list[asyncio.TimerHandle]:
    """Timers that warn the operator, then end the session, at ``limit`` (``limits.max_session_duration``)."""
    if not limit:
        return []
    loop = asyncio.get_running_loop()
    lead = warning_lead(limit)
    return [loop.call_later(limit - lead, live.notify, f"this session closes in {fmt_seconds(lead)}: it "
                            f"reaches the maximum session duration ({fmt_seconds(limit)})"),
            loop.call_later(limit, live.expire, "expired",
                            f"it reached the maximum session duration ({fmt_seconds(limit)})")]
