"""What the endpoint asks the store and the disk: readiness checks, and the backlogs a scrape reports.

It has a small engine of its own (one pooled connection, checked before use, short connect and statement
timeouts), so a scrape or a health check never waits behind the daemon's pool, never hangs on a store that went
away, and finds the store again by itself when it comes back. Every count is capped (``COUNT_CAP``): a backlog of
a million rows is reported as the cap, cheaply, rather than counted.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from bastion.store.chain import AUDIT as AUDIT_CHAIN
from bastion.store.models import ApprovalRequest, AuditExportCursor, ChainHead, Node, NotifyOutbox, Recording

TIMEOUT = 2.0  # seconds: connecting, and any one statement
COUNT_CAP = 10000


def probe_engine(url: str) -> Engine:
    """An engine for health checks and scrapes only (see the module's docstring)."""
    kwargs: dict[str, Any] = {"pool_size": 1, "max_overflow": 1, "pool_timeout": TIMEOUT, "pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": TIMEOUT}
    elif url.startswith("postgresql"):
        ms = int(TIMEOUT * 1000)
        kwargs["connect_args"] = {"connect_timeout": int(TIMEOUT) or 1, "options": f"-c statement_timeout={ms}"}
    return create_engine(url, **kwargs)


@dataclass(frozen=True)
class Backlogs:
    """What a scrape reports of the store (counts capped at COUNT_CAP)."""

    approvals_pending: int
    oldest_pending_age: float  # seconds; 0 when none waits
    search_unindexed: int
    notify_pending: int
    export_behind: dict[str, int]  # sink -> audit events not yet sent to it
    heartbeat_ages: dict[str, float]  # node -> seconds since its last beat (nodes not stopped cleanly)


def _age(t: datetime | None, now: datetime) -> float:
    if t is None:
        return 0.0
    return max(0.0, (now - (t if t.tzinfo else t.replace(tzinfo=UTC))).total_seconds())


def _capped(q: Any) -> Any:
    """``count(*)`` of at most COUNT_CAP rows of ``q`` (a select of one column)."""
    return select(func.count()).select_from(q.limit(COUNT_CAP).subquery())


def backlogs(engine: Engine, *, cluster: bool) -> Backlogs:
    """One round of cheap queries (indexed columns, capped counts); raises when the store cannot answer."""
    now = datetime.now(UTC)
    with engine.connect() as c:
        pending = c.scalar(_capped(select(ApprovalRequest.id).where(ApprovalRequest.status == "pending"))) or 0
        oldest = c.scalar(select(func.min(ApprovalRequest.created_at)).where(ApprovalRequest.status == "pending"))
        unindexed = c.scalar(_capped(select(Recording.session_id).where(
            Recording.chain.is_not(None), Recording.indexed_at.is_(None), Recording.pruned_at.is_(None)))) or 0
        notify = c.scalar(_capped(select(NotifyOutbox.id).where(NotifyOutbox.status == "pending"))) or 0
        head = c.scalar(select(ChainHead.seq).where(ChainHead.name == AUDIT_CHAIN)) or 0
        export = {sink: max(0, head - seq) for sink, seq in c.execute(
            select(AuditExportCursor.sink, AuditExportCursor.seq))}
        beats: dict[str, float] = {}
        if cluster:
            beats = {name: _age(at, now) for name, at in c.execute(
                select(Node.name, Node.heartbeat_at).where(Node.stopped_at.is_(None)).limit(256))}
    return Backlogs(int(pending), _age(oldest, now), int(unindexed), int(notify), export, beats)


def store_answers(engine: Engine) -> None:
    """``SELECT 1``: raises when the store cannot answer within the timeouts."""
    with engine.connect() as c:
        c.execute(text("SELECT 1"))


def heartbeat_age(engine: Engine, node: str) -> float | None:
    """Seconds since ``node`` last beat (None: it never did)."""
    with engine.connect() as c:
        at = c.scalar(select(Node.heartbeat_at).where(Node.name == node))
    return None if at is None else _age(at, datetime.now(UTC))


def writable(directory: Path) -> None:
    """Create and remove a file in ``directory``: raises OSError when recordings could not be written there."""
    fd, name = tempfile.mkstemp(prefix=".ready-", dir=directory)
    os.close(fd)
    os.unlink(name)
