"""The node's metrics endpoint: what a scrape shows and what ``/readyz`` checks, put together from the config.

One process per node serves it: the node process (``processes: per-connection``) or the daemon (``processes:
one``), the process that keeps the node's books and has an event loop (see :mod:`bastion.metrics.http` for why not
the supervisor). A scrape adds up every process's files (:class:`~bastion.metrics.files.LockedCollector`) and asks
the store for its backlogs (:mod:`bastion.metrics.probe`); the store's numbers are cluster-wide, so with several
nodes every node reports the same ones (use ``max``, not ``sum``, across nodes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.engine import Engine

from bastion import metrics
from bastion.metrics import probe
from bastion.metrics.files import LockedCollector
from bastion.metrics.http import MetricsServer, tls_context
from bastion.metrics.loop import watch_loop

if TYPE_CHECKING:
    from bastion.config import Config

log = logging.getLogger(__name__)
WARN_EVERY = 60.0  # seconds between two log lines about a store that does not answer scrapes


class StoreCollector:
    """The store's backlogs, asked at each scrape (cheap, capped queries; see :func:`probe.backlogs`)."""

    def __init__(self, engine: Engine, cluster: bool) -> None:
        self.engine, self.cluster = engine, cluster
        self._warned = 0.0

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("bastion_store_up", "Whether the store answered this scrape's queries (1) or not")
        try:
            b = probe.backlogs(self.engine, cluster=self.cluster)
        except Exception as e:
            if time.monotonic() - self._warned > WARN_EVERY:
                self._warned = time.monotonic()
                log.warning("metrics: the store did not answer: %s", str(e).splitlines()[0] if str(e) else e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, doc, value in (
                ("bastion_approval_requests_pending", "Approval requests waiting for reviewers (cluster-wide)",
                 b.approvals_pending),
                ("bastion_approval_oldest_pending_age_seconds", "Age of the oldest pending approval request (0: "
                 "none waits)", b.oldest_pending_age),
                ("bastion_search_index_backlog", "Closed recordings not yet in the search index",
                 b.search_unindexed),
                ("bastion_notify_outbox_backlog", "Notifications waiting to be delivered", b.notify_pending)):
            yield GaugeMetricFamily(name, doc, value=value)
        export = GaugeMetricFamily("bastion_audit_export_backlog", "Audit events not yet sent to each export sink",
                                   labels=["sink"])
        for sink, behind in sorted(b.export_behind.items()):
            export.add_metric([sink], behind)
        yield export
        if self.cluster:
            beats = GaugeMetricFamily("bastion_node_heartbeat_age_seconds", "Seconds since each node (not stopped "
                                      "cleanly) last beat in the shared store", labels=["node"])
            for node, age in sorted(b.heartbeat_ages.items()):
                beats.add_metric([node], age)
            yield beats


class InfoCollector:
    def __init__(self, node: str, processes: str) -> None:
        try:
            version = metadata.version("bastion")
        except metadata.PackageNotFoundError:
            version = "unknown"
        self.labels = [node, processes, version]

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("bastion_info", "This node: its name, process model and version",
                                 labels=["node", "processes", "version"])
        info.add_metric(self.labels, 1)
        yield info


class InProcess:
    """Without multiprocess mode (tests that never called ``use_directory``): this process's own metrics."""

    def collect(self) -> Iterator[Metric]:
        yield from metrics.REGISTRY.collect()


class Endpoint:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` for this node, and watches this process's event loop."""

    def __init__(self, config: Config, node: str, *, process: str, shared: bool,
                 listening: Callable[[], bool], tick: Callable[[], None] | None = None) -> None:
        assert config.metrics is not None
        m = config.metrics
        self.config, self.node, self.process, self.shared = config, node, process, shared
        self.listening, self.tick = listening, tick
        self.engine = probe.probe_engine(config.database_url)
        reg = self.registry = CollectorRegistry(auto_describe=False)
        folder = os.environ.get(metrics.MULTIPROC_ENV)
        reg.register(LockedCollector(Path(folder)) if folder else InProcess())
        reg.register(StoreCollector(self.engine, shared))
        reg.register(InfoCollector(node, config.processes))
        reg.register(ProcessCollector(registry=None))
        if process == "node":  # the supervisor's memory and CPU too (this process's parent)
            parent = os.getppid()
            reg.register(ProcessCollector(namespace="bastion_supervisor", pid=lambda: parent, registry=None))
        host, port = m.address
        self.server = MetricsServer(
            host, port, self.scrape, self.ready,
            tls=tls_context(config.resolve(m.tls.cert_file), config.resolve(m.tls.key_file)) if m.tls else None,
            token_file=config.resolve(m.token_file) if m.token_file else None)
        self._probe: asyncio.Future[list[tuple[bool, str]]] | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        metrics.preinit()
        self._watch = asyncio.create_task(watch_loop(self.process, tick=self.tick))
        await self.server.start()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self.server.stop()
        self.engine.dispose()

    def scrape(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _checks(self) -> list[tuple[bool, str]]:
        """The checks that touch the store and the disk (in a worker thread)."""
        out: list[tuple[bool, str]] = []
        try:
            probe.store_answers(self.engine)
            out.append((True, "store: ok"))
        except Exception as e:
            out.append((False, f"store: unreachable ({type(e).__name__})"))
        try:
            probe.writable(self.config.recordings_dir)
            out.append((True, "recordings: writable"))
        except OSError as e:
            out.append((False, f"recordings: not writable ({e.strerror or type(e).__name__})"))
        if self.shared and out[0][0]:
            expiry = self.config.cluster.node_expiry_seconds
            try:
                age = probe.heartbeat_age(self.engine, self.node)
                ok = age is not None and age <= expiry
                out.append((ok, f"heartbeat: {'none yet' if age is None else f'{age:.1f} s ago'}"
                                + ("" if ok else f" (over {expiry:g} s: other nodes take this one's sessions)")))
            except Exception as e:
                out.append((False, f"heartbeat: cannot be read ({type(e).__name__})"))
        return out

    async def ready(self) -> tuple[bool, list[str]]:
        """Listening, the store answers, recordings can be written, and (several nodes) this node's heartbeat is
        fresh. One store check at a time: a hung one is waited for, not piled up."""
        listening = self.listening()
        lines = [(listening, "listening: yes" if listening else "listening: not yet")]
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(asyncio.to_thread(self._checks))
        try:
            lines += await asyncio.wait_for(asyncio.shield(self._probe), probe.TIMEOUT + 1)
        except TimeoutError:
            lines.append((False, f"store: no answer within {probe.TIMEOUT + 1:g} s"))
        except Exception as e:
            lines.append((False, f"checks failed: {type(e).__name__}"))
        ok = all(good for good, _ in lines)
        return ok, [("ready" if ok else "not ready")] + [f"{'ok  ' if good else 'FAIL'} {text}" for good, text in lines]
