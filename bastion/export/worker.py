"""The export loop: for each configured sink, hold its lease, send the events after its cursor in batches, move
the cursor past what was sent, and back off while the sink is away.

**Where it runs.** Like the notifications' delivery loop (:mod:`bastion.notify.worker`), one per node, in the
process that keeps the node's books (the node process of ``processes: per-connection``, the daemon with
``processes: one``); connection processes only append audit events. Nodes sharing a store each run one, and the
lease (:mod:`bastion.export.cursor`) makes one of them the exporter of each sink; when it stops (its leases are
given back) or dies (they expire) another goes on from the cursor.

**Never in the operator's way.** Nothing here is awaited by a session; a sink that is away costs this loop retries
(one log line each, no traceback) and the sink's ``last_error``, which ``bastion audit export --status`` shows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bastion.config import Config
from bastion.config.export import AnySink
from bastion.export import cursor
from bastion.export.sinks import DeliveryError, Sink, build
from bastion.notify.outbox import backoff
from bastion.store.db import Store

log = logging.getLogger(__name__)


@dataclass
class _State:
    model: AnySink
    sink: Sink
    token: str = field(default_factory=cursor.new_token)
    attempts: int = 0  # failed in a row
    not_before: float = 0.0  # monotonic: no attempt before this (backing off)
    holding: bool = False


class Exporter:
    """One node's export loop. ``config`` is a getter: sinks and timings follow a reload."""

    def __init__(self, store: Store, config: Callable[[], Config], node: str):
        self.store, self.config, self.node = store, config, node
        self._states: dict[str, _State] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="audit-export")

    async def stop(self) -> None:
        """Stop the loop and give back every lease (another node goes on at once); a batch in flight is sent
        again by whoever continues."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        states, self._states = list(self._states.values()), {}
        try:
            await asyncio.to_thread(cursor.release, self.store, [s.token for s in states])
        except Exception as e:
            log.warning("audit export: cannot give back %d lease(s) (they expire): %s", len(states), e)
        for s in states:
            s.sink.close()

    async def run(self) -> None:
        while True:
            cfg = self.config()
            try:
                busy = await self.tick(cfg)
            except Exception as e:  # the store is away: one line, and the next poll tries again
                log.warning("audit export: %s: %s", type(e).__name__, " ".join(str(e).split())[:300])
                busy = False
            if not busy:
                try:
                    await asyncio.wait_for(self._wake.wait(), cfg.audit.export.delivery.poll)
                except TimeoutError:
                    pass
                self._wake.clear()

    async def tick(self, cfg: Config) -> bool:
        """One batch for each sink that is due; True when one had more waiting than a batch holds."""
        self._follow(cfg)
        t = time.monotonic()
        due = [s for s in self._states.values() if s.not_before <= t]
        done = await asyncio.gather(*(asyncio.to_thread(self._export, cfg, s) for s in due))
        return any(done)

    def _follow(self, cfg: Config) -> None:
        """Sinks as the config has them now: new ones built, changed ones rebuilt, removed ones let go."""
        models = {m.name: m for m in cfg.audit.export.sinks()}
        gone = [s for name, s in self._states.items() if name not in models]
        for name in [n for n in self._states if n not in models]:
            del self._states[name]
        for s in gone:
            s.sink.close()
        if gone:
            self.store_release([s.token for s in gone])
        for name, model in models.items():
            old = self._states.get(name)
            if old is not None and old.model == model:
                continue
            if old is not None:
                old.sink.close()
            sink = build(cfg, model, cfg.audit.export.delivery.timeout)
            self._states[name] = _State(model, sink, old.token if old else cursor.new_token())

    def store_release(self, tokens: list[str]) -> None:
        try:
            cursor.release(self.store, tokens)
        except Exception as e:
            log.warning("audit export: cannot give back %d lease(s) (they expire): %s", len(tokens), e)

    def _export(self, cfg: Config, st: _State) -> bool:
        """Send one batch to one sink (in a worker thread); True when a whole batch went and more may wait."""
        d = cfg.audit.export.delivery
        held = cursor.claim(self.store, st.model.name, st.token, self.node, d.lease,
                            None if st.holding else st.model.start)
        if held is None:
            if st.holding:
                log.warning("audit export %s: another node exports it now", st.model.name)
            st.holding = False
            return False
        if not st.holding:
            log.info("audit export %s: exporting from #%d", st.model.name, held.seq + 1)
            st.holding = True
        events = cursor.events_after(self.store, held.seq, d.batch)
        if not events:
            return False
        try:
            st.sink.send(events)
        except DeliveryError as e:
            self._failed(cfg, st, held, len(events), str(e))
            return False
        except Exception as e:  # a bug in a sink must not stop the loop: it is a failure like any other
            self._failed(cfg, st, held, len(events), f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
            return False
        if not cursor.advance(self.store, held, events[-1]["seq"], len(events), d.lease):
            log.warning("audit export %s: lost the sink to another exporter; #%d-#%d may arrive twice",
                        st.model.name, events[0]["seq"], events[-1]["seq"])
            st.holding = False
            return False
        if st.attempts:
            log.info("audit export %s: sent again after %d failed attempt(s)", st.model.name, st.attempts)
        st.attempts, st.not_before = 0, 0.0
        return len(events) == d.batch

    def _failed(self, cfg: Config, st: _State, held: cursor.Held, n: int, error: str) -> None:
        d = cfg.audit.export.delivery
        st.attempts += 1
        delay = backoff(st.attempts, d.backoff, d.max_backoff)
        st.not_before = time.monotonic() + delay
        cursor.failed(self.store, held, error)
        log.warning("audit export %s: %d event(s) from #%d not sent (attempt %d, next in %.1fs): %s",
                    st.model.name, n, held.seq + 1, st.attempts, delay, error)
