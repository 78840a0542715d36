"""The delivery loop: claim due notifications, send them, record the outcome, back off on failure.

**Where it runs.** One loop per node, in the process that keeps the node's books (the node process of
``processes: per-connection``, the daemon itself with ``processes: one``), never in connection processes: those
live as long as one SSH connection, so a loop there would be cut off mid-delivery and multiply the store's polling
by the number of connections. Nodes sharing a PostgreSQL store each run one; the atomic claim
(:mod:`bastion.notify.outbox`) makes that safe, and a node that dies leaves leases that expire into the others'
hands. Enqueueing, on the other hand, happens in whichever process records the event (one insert, in the audit
event's own transaction).

**Never in the operator's way.** Nothing here is awaited by a session: a slow or dead receiver costs this loop
time, not anyone's typing. Each failure is one log line (no traceback) and the row's ``last_error``, which
``bastion notify status`` shows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bastion.config import Config
from bastion.config.notify import EmailTarget, SlackTarget, WebhookTarget
from bastion.notify import outbox
from bastion.notify.send import DeliveryError, send
from bastion.store.db import Store, now

log = logging.getLogger(__name__)
PRUNE_EVERY = 3600.0  # seconds between deletions of old delivered and failed rows
BATCH = 20  # rows claimed at a time (each is delivered concurrently with the others of its batch)

Sender = Callable[[Config, WebhookTarget | SlackTarget | EmailTarget, dict[str, Any]], Awaitable[None]]


class Deliverer:
    """One node's delivery loop. ``config`` is a getter: targets and delivery settings follow a reload."""

    def __init__(self, store: Store, config: Callable[[], Config], sender: Sender = send):
        self.store, self.config, self.sender = store, config, sender
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._held: dict[str, outbox.Claimed] = {}  # token -> what this worker is delivering now
        self._pruned = 0.0

    def wake(self) -> None:
        """Something was enqueued (here, or in another process that said so): look now, not at the next poll."""
        self._wake.set()

    def wake_threadsafe(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """``wake`` for code running in a worker thread (the store's audit hook runs there)."""
        def wake() -> None:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop is closed: nothing to wake
                pass
        return wake

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="notify-delivery")

    async def stop(self) -> None:
        """Stop the loop; deliveries in flight are abandoned and their leases given back (the next start, or
        another node, sends them)."""
        held = list(self._held)  # before the cancellation, whose cleanup forgets them
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:
            await asyncio.to_thread(outbox.release, self.store, held)
        except Exception as e:
            log.warning("notify: cannot give back %d lease(s) (they expire): %s", len(held), e)

    async def run(self) -> None:
        while True:
            d = self.config().notify.delivery
            try:
                n = await self.tick()
            except Exception as e:  # the store is away: one line, and the next poll tries again
                log.warning("notify: delivery loop: %s: %s", type(e).__name__, " ".join(str(e).split())[:300])
                n = 0
            if n < BATCH:
                try:
                    await asyncio.wait_for(self._wake.wait(), d.poll)
                except TimeoutError:
                    pass
                self._wake.clear()

    async def tick(self) -> int:
        """Claim and deliver one batch; returns how many were claimed."""
        cfg = self.config()
        if time.monotonic() - self._pruned > PRUNE_EVERY:
            self._pruned = time.monotonic()
            n = await asyncio.to_thread(outbox.prune, self.store, cfg.notify.delivery.keep_days)
            if n:
                log.info("notify: pruned %d old delivered or failed notification(s)", n)
        claimed = await asyncio.to_thread(outbox.claim, self.store, cfg.notify.delivery.lease, BATCH)
        for c in claimed:
            self._held[c.token] = c
        await asyncio.gather(*(self._deliver(cfg, c) for c in claimed))
        return len(claimed)

    async def _deliver(self, cfg: Config, c: outbox.Claimed) -> None:
        try:
            target = cfg.notify.target(c.target)
            if target is None:
                await asyncio.to_thread(outbox.failed, self.store, c, "the target is no longer configured")
                log.warning("notify %s: %s %s dropped: the target is no longer configured", c.target, c.event,
                            c.payload.get("id", "")[:12])
                return
            try:
                await self.sender(cfg, target, c.payload)
            except DeliveryError as e:
                await self._failed(cfg, c, str(e))
            except Exception as e:  # a bug in a sender must not stop the loop: it is an error like any other
                await self._failed(cfg, c, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
            else:
                if await asyncio.to_thread(outbox.delivered, self.store, c):
                    log.info("notify %s: %s %s delivered (attempt %d)", c.target, c.event,
                             c.payload.get("id", "")[:12], c.attempts)
        finally:
            self._held.pop(c.token, None)

    async def _failed(self, cfg: Config, c: outbox.Claimed, error: str) -> None:
        """Retry later, or give up once the notification is older than ``max_age``."""
        d = cfg.notify.delivery
        delay = outbox.backoff(c.attempts, d.backoff, d.max_backoff)
        if (now() - c.created_at).total_seconds() + delay > d.max_age:
            await asyncio.to_thread(outbox.failed, self.store, c, error)
            log.error("notify %s: %s %s failed for good after %d attempt(s): %s", c.target, c.event,
                      c.payload.get("id", "")[:12], c.attempts, error)
            return
        await asyncio.to_thread(outbox.retry, self.store, c, error, delay)
        log.warning("notify %s: %s %s not delivered (attempt %d, next in %.1fs): %s", c.target, c.event,
                    c.payload.get("id", "")[:12], c.attempts, delay, error)
