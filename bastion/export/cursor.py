"""Each sink's cursor (the ``seq`` of the last audit event it was sent) and who holds it, in the store.

**The chain is the queue.** Audit events get their ``seq`` while the chain's head row is locked, and keep the lock
until they commit, so an event is visible only after every event before it is: reading ``seq > cursor`` in order
never skips one that commits later. Nothing is copied to an outbox; the cursor is one row per sink.

**One exporter per sink.** A node exports a sink only while it holds the sink's lease: taken or renewed by a
conditional ``UPDATE ... WHERE sink = :s AND (lease free OR lease_token = mine)`` that must touch exactly one row
(on PostgreSQL a concurrent claim waits for the first and then finds the lease taken; SQLite serialises writers).
The cursor moves only by a compare-and-set on (lease token, old seq), so an exporter that lost its lease (it
stalled past it) cannot move it back or forth. A node that dies leaves a lease that expires; another node goes on
from the cursor, re-sending at most the batch that was in flight: at least once, in order.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from bastion.export.schema import record
from bastion.store.db import Store, _aware, now
from bastion.store.models import AuditEvent, AuditExportCursor


@dataclass(frozen=True)
class Held:
    """A sink this exporter holds (until its lease runs out, unless renewed): events after ``seq`` are next."""

    sink: str
    token: str
    seq: int


def new_token() -> str:
    return secrets.token_hex(16)


def head_seq(store: Store) -> int:
    """The newest position of the audit chain (0: no event yet)."""
    with store.tx() as s:
        return int(s.scalar(select(func.max(AuditEvent.seq))) or 0)


def _ensure(store: Store, sink: str, start: str) -> None:
    """The sink's row, made at its first start: at the beginning of the chain, or (``start: new``) at its head."""
    with store.tx() as s:
        if s.get(AuditExportCursor, sink) is not None:
            return
    seq = head_seq(store) if start == "new" else 0
    try:
        with store.tx() as s:
            s.add(AuditExportCursor(sink=sink, seq=seq, exported=0, created_at=now()))
    except IntegrityError:  # another node made it first: theirs stands
        pass


def claim(store: Store, sink: str, token: str, node: str, lease: float, start: str | None = "all") -> Held | None:
    """Take or renew the lease of ``sink`` for ``lease`` seconds; None when another exporter holds it. ``start``:
    where the sink starts if the store has no row for it yet (None: it has one, this exporter held it)."""
    if start is not None:
        _ensure(store, sink, start)
    t = now()
    with store.tx() as s:
        res = s.execute(update(AuditExportCursor).where(
            AuditExportCursor.sink == sink,
            or_(AuditExportCursor.lease_until.is_(None), AuditExportCursor.lease_until < t,
                AuditExportCursor.lease_token == token))
            .values(lease_token=token, lease_until=t + timedelta(seconds=lease), holder=node))
        assert isinstance(res, CursorResult)
        if res.rowcount != 1:
            return None
        row = s.get(AuditExportCursor, sink, populate_existing=True)
        assert row is not None
        return Held(sink, token, row.seq)


def events_after(store: Store, seq: int, limit: int, until_seq: int | None = None) -> list[dict[str, Any]]:
    """Up to ``limit`` exported events after chain position ``seq`` (oldest first)."""
    q = select(AuditEvent).where(AuditEvent.seq > seq)
    if until_seq is not None:
        q = q.where(AuditEvent.seq <= until_seq)
    with store.tx() as s:
        return [record(ev) for ev in s.scalars(q.order_by(AuditEvent.seq).limit(limit))]


def first_seq_since(store: Store, since: datetime) -> int:
    """The cursor that makes :func:`events_after` start at the first event at or after ``since``."""
    with store.tx() as s:
        first = s.scalar(select(func.min(AuditEvent.seq)).where(AuditEvent.ts >= since))
        return int(first) - 1 if first is not None else head_seq(store)


def advance(store: Store, held: Held, seq: int, sent: int, lease: float) -> bool:
    """Move the cursor to ``seq`` (every event up to it was sent) and renew the lease; False if this exporter
    no longer holds the sink (nothing is changed then)."""
    t = now()
    with store.tx() as s:
        res = s.execute(update(AuditExportCursor).where(
            AuditExportCursor.sink == held.sink, AuditExportCursor.lease_token == held.token,
            AuditExportCursor.seq == held.seq)
            .values(seq=seq, exported=AuditExportCursor.exported + sent, sent_at=t, last_error=None,
                    last_error_at=None, lease_until=t + timedelta(seconds=lease)))
        assert isinstance(res, CursorResult)
        return res.rowcount == 1


def failed(store: Store, held: Held, error: str) -> None:
    """Note why the last attempt failed (``audit export --status`` shows it); the cursor stays."""
    with store.tx() as s:
        s.execute(update(AuditExportCursor).where(AuditExportCursor.sink == held.sink,
                                                  AuditExportCursor.lease_token == held.token)
                  .values(last_error=error[:1000], last_error_at=now()))


def release(store: Store, tokens: Collection[str]) -> None:
    """Give back the leases of these tokens (the exporter is stopping): another node may go on at once."""
    if not tokens:
        return
    with store.tx() as s:
        s.execute(update(AuditExportCursor).where(AuditExportCursor.lease_token.in_(list(tokens)))
                  .values(lease_token=None, lease_until=None))


@dataclass
class SinkStatus:
    """What ``bastion audit export --status`` shows of one sink."""

    sink: str
    seq: int = 0
    behind: int = 0  # events of the chain not yet sent
    exported: int = 0
    holder: str | None = None  # the node holding the lease now, if any
    sent_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        iso = (lambda d: d.isoformat() if d else None)  # noqa: E731
        return {"sink": self.sink, "seq": self.seq, "behind": self.behind, "exported": self.exported,
                "holder": self.holder, "sent_at": iso(self.sent_at), "last_error": self.last_error,
                "last_error_at": iso(self.last_error_at)}


def status(store: Store, sinks: list[str]) -> list[SinkStatus]:
    """Every configured sink (a sink not started yet is at 0) and every sink the store knows."""
    head, t = head_seq(store), now()
    out = {name: SinkStatus(name, behind=head) for name in sinks}
    with store.tx() as s:
        for row in s.scalars(select(AuditExportCursor).order_by(AuditExportCursor.sink)):
            live = row.lease_until is not None and _aware(row.lease_until) > t
            out[row.sink] = SinkStatus(row.sink, row.seq, max(0, head - row.seq), row.exported,
                                       row.holder if live else None, _aware(row.sent_at), row.last_error,
                                       _aware(row.last_error_at))
    return list(out.values())
