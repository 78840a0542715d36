"""Scrape time of the metrics endpoint with N connection processes' files (issue 25: < 50 ms under 500 open
sessions), and what folding dead processes into the archive saves.

Each of N forked processes counts what a connection process with one busy session counts (event-loop lag, keystroke
latencies, a session started, bytes both ways, a policy decision), then exits without being reaped as dead, so its
files stay as a living one's do. A scrape is what ``/metrics`` builds: every file merged under the lock, plus the
store's backlogs (a fresh SQLite store), in the text format.

    .venv/bin/python bench/metrics.py [--processes 500] [--scrapes 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine, table  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from bastion import metrics  # noqa: E402
from bastion.metrics.endpoint import StoreCollector  # noqa: E402
from bastion.metrics.files import LockedCollector, Reaper, file_count, prepare  # noqa: E402
from bastion.metrics.probe import probe_engine  # noqa: E402
from bastion.store.db import Store  # noqa: E402


def connection_process(i: int) -> None:
    metrics.loop_lag("connection", 0.002)
    for _ in range(20):
        metrics.observe_keystroke(0.0008)
    metrics.session_started("ssh", f"web{i % 20}")
    metrics.relayed("in", "ssh", 200)
    metrics.relayed("out", "ssh", 40000)
    metrics.policy_decision("allow", f"rule{i % 10}")


def fork_all(n: int) -> list[int]:
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                connection_process(i)
            finally:
                os._exit(0)
        pids.append(pid)
        os.waitpid(pid, 0)
    return pids


def time_scrapes(registry: CollectorRegistry, n: int) -> tuple[float, float, int]:
    times, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        size = len(generate_latest(registry))
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.95) - 1] * 1000, size


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=500)
    ap.add_argument("--scrapes", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-metrics-") as tmp:
        folder = Path(tmp) / "metrics"
        prepare(folder)
        metrics.use_directory(folder)
        metrics.set_connections(args.processes)
        metrics.set_processes("connection", args.processes)
        store = Store(f"sqlite:///{tmp}/bastion.db")
        store.migrate()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(LockedCollector(folder))
        registry.register(StoreCollector(probe_engine(store.url), cluster=False))
        pids = fork_all(args.processes)
        files = file_count(folder)
        live = time_scrapes(registry, args.scrapes)
        reaper = Reaper(folder)
        for pid in pids:  # the same processes, ended and reaped: their counts folded into the archive
            reaper.dead(pid)
        folded = time_scrapes(registry, args.scrapes)
        rows = [[f"{args.processes} living connection processes", files, *live],
                [f"the same {args.processes}, reaped and folded", file_count(folder), *folded]]
    print(table(f"Metrics scrape ({machine()})", ["files of", "files", "median ms", "p95 ms", "bytes"], rows))
    print(f"\ntarget: a scrape under {args.processes} open sessions < 50 ms: "
          f"{'met' if live[1] < 50 else 'NOT met'} (p95 {live[1]:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
