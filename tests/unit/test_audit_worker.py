"""The daemon's indexer runs in a child process: a daemon that stops takes its indexer with it (the next start
queues the recording again), so a long indexing never outlives the daemon that started it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace

from bastion.audit.worker import AuditWorker
from bastion.store.db import Store
from recorder.storage import RecordingStorage


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


async def test_stopping_the_worker_stops_its_indexer(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.migrate()
    config = SimpleNamespace(signing_key=None, path=tmp_path / "bastion.yaml",
                             recordings=SimpleNamespace(retention_days=None))
    worker = AuditWorker(config, store, RecordingStorage(tmp_path))  # type: ignore[arg-type]
    pidfile = tmp_path / "indexer.pid"
    worker.indexer = lambda sid: ["sh", "-c", f'echo $$ > {pidfile}; exec sleep 600']  # type: ignore[method-assign]
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
