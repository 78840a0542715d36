"""Event-loop lag: how late a periodic timer fires. A loop that is busy (a long callback, a blocking call, a
flood of output) fires it late, and every keystroke relayed by that loop waits as long."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bastion import metrics

log = logging.getLogger(__name__)
INTERVAL = 1.0  # seconds: one wake-up a second per process, only while metrics are on


async def watch_loop(process: str, *, interval: float = INTERVAL, tick: Callable[[], None] | None = None) -> None:
    """Measure this loop's lag every ``interval`` for ``process`` (node, connection, daemon) until cancelled;
    ``tick`` runs after each measure (the one-process daemon sets its connections gauge there)."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        metrics.loop_lag(process, loop.time() - start - interval)
        if tick is not None:
            try:
                tick()
            except Exception:
                log.exception("metrics: a periodic update failed")
