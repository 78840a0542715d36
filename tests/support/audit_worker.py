"""An :class:`AuditWorker` on a scratch SQLite store whose indexer child is a command of the test's choosing: the
worker's process handling (start, stop, exit statuses) tested without indexing anything."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from bastion.audit.worker import AuditWorker
from bastion.store.db import Store
from recorder.storage import RecordingStorage


def audit_worker(tmp_path: Path, indexer: Callable[[str], list[str]]) -> AuditWorker:
    """The worker (not started); ``indexer(session_id)`` is the argv of the child it runs for each recording."""
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.migrate()
    config = SimpleNamespace(signing_key=None, path=tmp_path / "bastion.yaml",
                             recordings=SimpleNamespace(retention_days=None))
    worker = AuditWorker(config, store, RecordingStorage(tmp_path))  # type: ignore[arg-type]
    worker.indexer = indexer  # type: ignore[method-assign]
    return worker
