"""The time-limit wording and the idle watch, on a stand-in relay (the end-to-end behaviour is in
tests/integration/test_time_limits.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bastion.sessions.timeouts import IdleWatch, fmt_seconds, warning_lead


def test_wording_and_warning_lead() -> None:
    assert [fmt_seconds(x) for x in (6, 119.4, 119.6, 900, 5400, 7200, 28800, 30600)] == [
        "6 s", "119 s", "2 min", "15 min", "90 min", "2 h", "8 h", "8 h 30 min"]
    assert warning_lead(8) == 2 and warning_lead(900) == 60 and warning_lead(28800) == 300


class FakeRelay:
    def __init__(self) -> None:
        self.last_input = time.monotonic()


async def test_warns_once_per_quiet_spell_then_closes() -> None:
    relay = FakeRelay()
    events: list[tuple[str, Any]] = []
    watch = IdleWatch(relay, lambda: 0.8, lambda left: events.append(("warn", round(left, 1))),  # type: ignore[arg-type]
                      lambda: events.append(("close", time.monotonic() - relay.last_input)))
    task = asyncio.ensure_future(watch.run())
    await asyncio.sleep(0.7)  # warned (0.2 s before), not closed
    assert [e[0] for e in events] == ["warn"] and 0 < events[0][1] <= 0.2
    relay.last_input = time.monotonic()  # a key: the clock starts again, and a new quiet spell warns again
    await asyncio.sleep(0.5)
    assert [e[0] for e in events] == ["warn"]
    await asyncio.wait_for(task, 2)
    assert [e[0] for e in events] == ["warn", "warn", "close"] and events[-1][1] >= 0.8


async def test_no_limit_now_means_no_close() -> None:
    relay = FakeRelay()
    relay.last_input -= 3600
    limit: list[float | None] = [None]
    closed: list[bool] = []
    watch = IdleWatch(relay, lambda: limit[0], lambda left: None, lambda: closed.append(True))  # type: ignore[arg-type]
    watch.IDLE_CHECK = 0.05
    task = asyncio.ensure_future(watch.run())
    await asyncio.sleep(0.3)
    assert not closed and not task.done()  # idle for an hour, but no limit applies
    limit[0] = 60.0  # a session on a resource with a limit starts: it applies at the next look
    await asyncio.wait_for(task, 2)
    assert closed == [True]
