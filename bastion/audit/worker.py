"""The daemon's side of the audit trail after a session: build the recording's search index and seek keyframes,
then upload it when a bucket is configured (in a niced child process, one at a time, so the daemon's event loop
never waits for it), and sign the chain heads when a signing key is configured."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from bastion import metrics
from bastion.audit.indexing import UPLOAD_FAILED
from bastion.config import Config
from bastion.store.db import Store
from recorder.archive import archive_root, prune_archive
from recorder.storage import RecordingStorage, is_remote

log = logging.getLogger(__name__)
INDEX_TIMEOUT = 3600.0
PRUNE_EVERY = 3600.0


class AuditWorker:
    def __init__(self, config: Config, store: Store, storage: RecordingStorage) -> None:
        self.config, self.store, self.storage = config, store, storage
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._key: Any = None
        self.indexed: asyncio.Event = asyncio.Event()  # set whenever the queue runs empty (tests wait on it)

    async def start(self) -> None:
        """Load the signing key, queue recordings left unindexed (a crash, an older version) or not uploaded, start
        the worker."""
        if self.config.signing_key is not None:
            from bastion.store.verify import load_private_key

            self._key = await asyncio.to_thread(load_private_key, self.config.signing_key)
        # a local path that is not a file here is another node's (no shared directory): that node indexes it
        todo = [sid for sid, path in await asyncio.to_thread(self.store.unindexed)
                if is_remote(path) or Path(path).is_file()]
        if self.storage.remote:  # uploads owed for recordings made here (a crash, an outage)
            owed = await asyncio.to_thread(self.store.local_recordings)
            todo += [sid for sid, path in owed if sid not in todo and Path(path).is_file()]
        for sid in todo:
            self._queue.put_nowait(sid)
        self._task = asyncio.create_task(self._run())
        if self.config.recordings.retention_days:
            self._pruner = asyncio.create_task(self._prune_loop(self.config.recordings.retention_days))

    async def stop(self) -> None:
        for task in (self._task, self._pruner):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass

    async def _prune_loop(self, days: float) -> None:
        """Apply the retention now and then every hour (every node may; each recording is pruned once)."""
        from bastion.audit.report import prune

        while True:
            try:
                done = await asyncio.to_thread(prune, self.store, days, self.storage)
                if done:
                    log.info("retention: pruned %d recording(s) older than %g days", len(done), days)
                gone = await asyncio.to_thread(prune_archive, archive_root(self.config.recordings_dir), days)
                if gone:
                    log.info("retention: pruned %d archived file(s) not sent for %g days", len(gone), days)
            except Exception:
                log.exception("retention: pruning failed")
            await asyncio.sleep(PRUNE_EVERY)

    async def closed(self, sid: str) -> None:
        """A session's recording was closed and chained: sign the heads, queue the indexing."""
        if self._key is not None:
            from bastion.store.verify import sign_heads

            try:
                await asyncio.to_thread(sign_heads, self.store, self._key)
            except Exception:
                log.exception("signing the chain heads failed")
        self._queue.put_nowait(sid)

    async def _run(self) -> None:
        while True:
            if self._queue.empty():
                self.indexed.set()
            sid = await self._queue.get()
            self.indexed.clear()
            await self._index(sid)

    def indexer(self, sid: str) -> list[str]:
        """The command that indexes (and uploads) one recording."""
        return ["nice", "-n", "10", sys.executable, "-m", "bastion.audit.indexing", "--config", str(self.config.path),
                sid]

    async def _index(self, sid: str) -> None:
        cmd = self.indexer(sid)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            log.error("cannot start the indexer for session %s: %s", sid, e)
            return
        try:
            _, err = await asyncio.wait_for(proc.communicate(), INDEX_TIMEOUT)
        except asyncio.CancelledError:  # the daemon stops: so does its indexer (the next start queues it again)
            proc.kill()
            await asyncio.shield(proc.wait())
            raise
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.error("indexing session %s took longer than %.0f s; stopped (bastion audit reindex retries)",
                      sid, INDEX_TIMEOUT)
            return
        if proc.returncode == UPLOAD_FAILED:
            metrics.recording_failed("upload")
        if proc.returncode != 0:
            log.error("indexing session %s failed: %s", sid, err.decode(errors="replace").strip()[-500:])
