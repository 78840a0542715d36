"""The daemon's indexer runs in a child process: a daemon that stops takes its indexer with it (the next start
queues the recording again), so a long indexing never outlives the daemon that started it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.support.audit_worker import audit_worker


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


async def test_stopping_the_worker_stops_its_indexer(tmp_path: Path) -> None:
    pidfile = tmp_path / "indexer.pid"
    worker = audit_worker(tmp_path, lambda sid: ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 600"])
    await worker.start()
    await worker.closed("s1")
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.05)
    pid = int(pidfile.read_text())
    assert alive(pid)
    await worker.stop()
    assert not alive(pid)
