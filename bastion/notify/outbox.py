"""The outbox's rows: claimed with a lease, finished by the lease holder, counted for admins.

**Exactly one claimant.** :func:`claim` picks due rows with a plain SELECT, then takes each with a conditional
UPDATE (``... WHERE id = :id AND status = 'pending' AND next_at <= now AND lease free``) and keeps only those whose
row count is 1. On PostgreSQL a concurrent UPDATE of the same row waits for the first and re-checks the WHERE
against the row it committed (the lease is then taken: 0 rows); on SQLite writers are serialised. Either way two
workers -- processes of one node or nodes sharing the store -- never both hold a row. A holder that dies leaves a
lease that expires, and the row is tried again: delivery is *at least* once per attempt that crashed mid-way, and
exactly once otherwise; receivers de-duplicate on the event id (docs/notifications.md).

**Only the holder finishes.** Each claim gets a random token; finishing is conditional on it, so a worker whose
lease ran out (a very slow receiver) cannot overwrite what the next holder recorded.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import CursorResult

from bastion.store.db import Store, _aware, now
from bastion.store.models import NotifyOutbox


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds until ``lease_until``."""

    id: int
    token: str
    target: str
    event: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int  # including this one


def backoff(attempt: int, base: float, cap: float, rand: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): ``base * 2**(attempt-1)`` capped at
    ``cap``, then jittered down by up to half (nodes retrying one dead receiver spread out instead of
    hammering it together)."""
    r = random.random() if rand is None else rand  # noqa: S311 (jitter, not a secret)
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 60))
    return ceiling * (0.5 + 0.5 * r)


def _free(t: datetime) -> Any:
    return or_(NotifyOutbox.lease_until.is_(None), NotifyOutbox.lease_until < t)


def claim(store: Store, lease: float, limit: int = 20) -> list[Claimed]:
    """Take up to ``limit`` due deliveries for ``lease`` seconds (oldest first)."""
    t = now()
    with store.tx() as s:
        ids = list(s.scalars(select(NotifyOutbox.id).where(
            NotifyOutbox.status == "pending", NotifyOutbox.next_at <= t, _free(t))
            .order_by(NotifyOutbox.id).limit(limit)))
    got: list[Claimed] = []
    for rid in ids:
        token = secrets.token_hex(16)
        with store.tx() as s:
            res = s.execute(update(NotifyOutbox).where(
                NotifyOutbox.id == rid, NotifyOutbox.status == "pending", NotifyOutbox.next_at <= t, _free(t))
                .values(lease_until=t + timedelta(seconds=lease), lease_token=token, last_attempt_at=t,
                        attempts=NotifyOutbox.attempts + 1))
            assert isinstance(res, CursorResult)
            if res.rowcount != 1:
                continue  # another worker took it between the SELECT and here
            row = s.get(NotifyOutbox, rid, populate_existing=True)
            assert row is not None
            got.append(Claimed(row.id, token, row.target, row.event, dict(row.payload), _aware(row.created_at),
                               row.attempts))
    return got


def _finish(store: Store, c: Claimed, **values: Any) -> bool:
    with store.tx() as s:
        res = s.execute(update(NotifyOutbox).where(NotifyOutbox.id == c.id, NotifyOutbox.lease_token == c.token,
                                                   NotifyOutbox.status == "pending")
                        .values(lease_until=None, lease_token=None, **values))
        assert isinstance(res, CursorResult)
        return res.rowcount == 1


def delivered(store: Store, c: Claimed) -> bool:
    return _finish(store, c, status="delivered", done_at=now(), last_error=None)


def retry(store: Store, c: Claimed, error: str, delay: float) -> bool:
    return _finish(store, c, next_at=now() + timedelta(seconds=delay), last_error=error[:1000])


def failed(store: Store, c: Claimed, error: str) -> bool:
    return _finish(store, c, status="failed", done_at=now(), last_error=error[:1000])


def release(store: Store, tokens: list[str]) -> None:
    """Give back what this worker holds (it is stopping): due again at once, for the next worker."""
    if not tokens:
        return
    with store.tx() as s:
        s.execute(update(NotifyOutbox).where(NotifyOutbox.lease_token.in_(tokens), NotifyOutbox.status == "pending")
                  .values(lease_until=None, lease_token=None, attempts=NotifyOutbox.attempts - 1))


def prune(store: Store, keep_days: float) -> int:
    """Delete delivered and failed rows older than ``keep_days`` (the audit log keeps the events themselves)."""
    cutoff = now() - timedelta(days=keep_days)
    with store.tx() as s:
        res = s.execute(delete(NotifyOutbox).where(NotifyOutbox.status.in_(("delivered", "failed")),
                                                   NotifyOutbox.done_at < cutoff))
        assert isinstance(res, CursorResult)
        return res.rowcount


@dataclass
class TargetStatus:
    """What ``bastion notify status`` shows of one target."""

    target: str
    pending: int = 0
    delivered: int = 0
    failed: int = 0
    oldest_pending: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        iso = (lambda d: d.isoformat() if d else None)  # noqa: E731
        return {"target": self.target, "pending": self.pending, "delivered": self.delivered, "failed": self.failed,
                "oldest_pending": iso(self.oldest_pending), "last_error": self.last_error,
                "last_error_at": iso(self.last_error_at)}


def status(store: Store, targets: list[str]) -> list[TargetStatus]:
    """Counts per target and status, the oldest pending row, and the newest error (of a row still pending or
    failed: an error a later attempt got past is history)."""
    out = {t: TargetStatus(t) for t in targets}
    with store.tx() as s:
        for target, st, n, oldest in s.execute(
                select(NotifyOutbox.target, NotifyOutbox.status, func.count(), func.min(NotifyOutbox.created_at))
                .group_by(NotifyOutbox.target, NotifyOutbox.status)):
            row = out.setdefault(target, TargetStatus(target))
            if st in ("pending", "delivered", "failed"):
                setattr(row, st, n)
            if st == "pending":
                row.oldest_pending = _aware(oldest)
        for row in out.values():
            last = s.execute(select(NotifyOutbox.last_error, NotifyOutbox.last_attempt_at).where(
                NotifyOutbox.target == row.target, NotifyOutbox.last_error.is_not(None),
                and_(NotifyOutbox.status != "delivered"))
                .order_by(NotifyOutbox.last_attempt_at.desc()).limit(1)).first()
            if last is not None:
                row.last_error, row.last_error_at = last[0], _aware(last[1])
    return list(out.values())


def routed_count(store: Store, event_id: str) -> int:
    """How many targets an audit event was queued for (``waiting for a moderator — N notified``)."""
    with store.tx() as s:
        return int(s.scalar(select(func.count()).select_from(NotifyOutbox).where(NotifyOutbox.event_id == event_id))
                   or 0)
