"""Engine, migrations and the small set of queries the daemon and CLI need."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, overload

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import and_, create_engine, event, exists, or_, select, text, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

from bastion.store.chain import AUDIT, GENESIS, RECORDINGS, audit_link, file_sha256, recording_link
from bastion.store.models import AuditEvent, ChainHead, Node, Recording, Session, User
from bastion.store.rows import SessionRecord

MIGRATIONS = Path(__file__).parent / "migrations"
__all__ = ["GENESIS", "Store", "new_session_id", "now"]


def now() -> datetime:
    return datetime.now(UTC)


@overload
def _aware(dt: datetime) -> datetime: ...
@overload
def _aware(dt: None) -> None: ...


def _aware(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


def new_session_id() -> str:
    """A sortable, unguessable session id: UTC time + 48 random bits."""
    return now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(6)


class Store:
    """Access to the bastion's database (SQLite by default, PostgreSQL by URL)."""

    def __init__(self, url: str, *, pool_size: int | None = None):
        """``pool_size``: database connections this process keeps (a connection process needs one or two; many of
        them must not exhaust the server's connections)."""
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        elif pool_size is not None:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time; threads of this process queue here (woken at once) instead of in
        # SQLite's busy handler, which sleeps in steps of up to 100 ms and made 6 writers crawl (bench/concurrent.py)
        self._serial: threading.RLock | None = threading.RLock() if url.startswith("sqlite") else None
        # called inside the transaction that appends each audit event (the notifications' outbox is written
        # there: an event is recorded and owed to its receivers together, or neither); None: nothing to do
        self.on_audit: Callable[[OrmSession, AuditEvent], None] | None = None

    @property
    def shared(self) -> bool:
        """Whether several nodes may share this store (PostgreSQL): then sessions, requests and events of other
        nodes are in it too, and NOTIFY reaches them."""
        return self.engine.dialect.name == "postgresql"

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def tx(self) -> Iterator[OrmSession]:
        """One transaction (committed on success, rolled back on error)."""
        if self._serial is None:
            with self._sessions.begin() as s:
                yield s
            return
        with self._serial, self._sessions.begin() as s:
            yield s

    # -- users -------------------------------------------------------------------------------------------
    def touch_user(self, name: str, source: str = "local") -> None:
        """Create the user row if needed and record a login time."""
        with self.tx() as s:
            u = s.scalar(select(User).where(User.name == name))
            if u is None:
                u = User(name=name, source=source, created_at=now())
                s.add(u)
            u.last_login_at = now()

    # -- audit -------------------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, outcome: str, *, resource: str | None = None,
              session_id: str | None = None, client_addr: str = "", **detail: Any) -> str:
        """Append an audit event, chained to the previous one; its hash (its id: notifications carry it).
        ``detail`` must never carry secrets."""
        with self.tx() as s:
            head = lock_head(s, AUDIT)
            ev = AuditEvent(ts=now(), actor=actor, action=action, outcome=outcome, resource=resource,
                            session_id=session_id, client_addr=client_addr, detail=detail, seq=head.seq,
                            prev_hash=head.head)
            ev.hash = audit_link(head.head, head.seq, ts=ev.ts, actor=actor, action=action, outcome=outcome,
                                 resource=resource, session_id=session_id, client_addr=client_addr, detail=detail)
            head.head = ev.hash
            s.add(ev)
            if self.on_audit is not None:
                self.on_audit(s, ev)
            return ev.hash

    def audit_events(self, limit: int = 1000, *, session_id: str | None = None) -> list[AuditEvent]:
        """Newest first."""
        q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if session_id is not None:
            q = q.where(AuditEvent.session_id == session_id)
        with self.tx() as s:
            return list(s.scalars(q))

    # -- sessions ----------------------------------------------------------------------------------------
    def start_session(self, sid: str, *, user: str, resource: str, kind: str, mode: str, command: str | None,
                      client_addr: str, node: str, recording_path: Path) -> str:
        """Create a session row (outcome ``active``) and its recording row; return the session id."""
        with self.tx() as s:
            s.add(Session(id=sid, user=user, resource=resource, kind=kind, mode=mode, command=command,
                          client_addr=client_addr, node=node, started_at=now(), outcome="active", message=""))
            s.flush()
            s.add(Recording(session_id=sid, path=str(recording_path)))
        return sid

    def end_session(self, sid: str, *, outcome: str, exit_status: int | None, message: str,
                    sha256: str | None, size: int | None) -> None:
        """Close a session and chain its recording's hash to the previous closed recording."""
        with self.tx() as s:
            row = s.get(Session, sid)
            if row is None:
                return
            row.ended_at = now()
            row.outcome = outcome
            row.exit_status = exit_status
            row.message = message[:2000]
            rec = s.scalar(select(Recording).where(Recording.session_id == sid))
            if rec is not None and sha256 is not None and rec.chain is None:
                head = lock_head(s, RECORDINGS)
                rec.seq, rec.prev_chain = head.seq, head.head
                rec.sha256 = sha256
                rec.size = size
                rec.closed_at = now()
                rec.chain = head.head = recording_link(rec.prev_chain, sid, sha256)

    def mark_interrupted(self, node: str, *, ids: Collection[str] | None = None) -> int:
        """Sessions of ``node`` still ``active`` -- the daemon (or, with ``ids``, the connection process that
        carried these) died under them -- become ``interrupted``."""
        n = 0
        q = select(Session).where(Session.outcome == "active", Session.node == node)
        if ids is not None:
            q = q.where(Session.id.in_(list(ids)))
        with self.tx() as s:
            for row in s.scalars(q):
                row.outcome = "interrupted"
                row.ended_at = row.ended_at or now()
                row.message = "the bastion stopped while this session was active"
                n += 1
                rec = s.scalar(select(Recording).where(Recording.session_id == row.id))
                if rec is not None and rec.chain is None:  # the cast is valid up to the last flushed event
                    try:
                        sha, size = file_sha256(rec.path), os.path.getsize(rec.path)
                    except OSError:
                        continue
                    head = lock_head(s, RECORDINGS)
                    rec.seq, rec.prev_chain, rec.sha256, rec.size, rec.closed_at = head.seq, head.head, sha, size, now()
                    rec.chain = head.head = recording_link(rec.prev_chain, row.id, sha)
        return n

    def sessions(self, limit: int = 200, *, user: str | None = None, resource: str | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 outcome: str | None = None, policy: str | None = None,
                 before: tuple[datetime, str] | None = None, risk: str | None = None,
                 reviewed: bool | None = None) -> list[SessionRecord]:
        """Newest first, with their recordings; optionally filtered (``resource`` and
        ``user`` accept ``*`` globs; ``policy``: sessions where something was ``blocked``, ``warned``, ``held``
        for approval or ``denied``). ``before`` (a row's ``(started_at, id)``, see :func:`cursor_of`) gives the
        page after that row: a list of any length is read a page at a time, each read as cheap as the first."""
        q = select(Session, Recording).join(Recording, Recording.session_id == Session.id, isouter=True)
        for col, value in ((Session.user, user), (Session.resource, resource)):
            if value:
                q = q.where(col.like(_like(value), escape="\\") if "*" in value else col == value)
        if since is not None:
            q = q.where(Session.started_at >= since)
        if until is not None:
            q = q.where(Session.started_at < until)
        if outcome:
            q = q.where(Session.outcome == outcome)
        if policy:
            q = q.where(_policy_filter(policy))
        if risk or reviewed is not None:  # an auditor's filters (bastion.store.reviews): risky, not yet reviewed
            from bastion.store.reviews import reviewed_condition, risk_condition

            q = q.where(risk_condition(risk)) if risk else q
            q = q.where(reviewed_condition(reviewed)) if reviewed is not None else q
        if before is not None:
            at, sid = before
            q = q.where(or_(Session.started_at < at, and_(Session.started_at == at, Session.id < sid)))
        with self.tx() as s:
            rows = s.execute(q.order_by(Session.started_at.desc(), Session.id.desc()).limit(limit)).all()
            return [_session_record(sess, rec) for sess, rec in rows]

    def session_notes(self, sids: list[str]) -> dict[str, dict[str, Any]]:
        """Each session's risks and standing verdict (bastion.store.reviews), for a list of sessions at once."""
        from bastion.store.reviews import ReviewStore

        notes = ReviewStore(self)
        risks, verdicts = notes.risks(sids), notes.verdicts(sids)
        return {sid: {"risk": risks.get(sid, []), "verdict": verdicts.get(sid, "")} for sid in sids}

    # -- nodes ---------------------------------------------------------------------------------------------
    def heartbeat(self, node: str, *, starting: bool = False, stopping: bool = False) -> None:
        """This node is alive (or starting, or stopping cleanly)."""
        with self.tx() as s:
            row = s.get(Node, node)
            t = now()
            if row is None:
                row = Node(name=node, started_at=t, heartbeat_at=t)
                s.add(row)
            if starting:
                row.started_at, row.stopped_at = t, None
            row.heartbeat_at = t
            if stopping:
                row.stopped_at = t

    def expired_nodes(self, older_than: float) -> list[str]:
        """Nodes that stopped beating ``older_than`` seconds ago without a clean stop, and still have active
        sessions."""
        cutoff = now() - timedelta(seconds=older_than)
        with self.tx() as s:
            return list(s.scalars(select(Node.name).where(
                Node.heartbeat_at < cutoff, Node.stopped_at.is_(None),
                exists().where(Session.node == Node.name, Session.outcome == "active"))))

    def notify(self, channel: str, payload: str) -> None:
        """PostgreSQL NOTIFY (other nodes LISTEN); nothing on SQLite, where one daemon is all there is."""
        if self.engine.dialect.name != "postgresql":
            return
        with self.tx() as s:
            s.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload[:7900]})

    def unindexed(self, limit: int = 1000) -> list[tuple[str, str]]:
        """Sessions whose closed recording has no search index yet, with its location (oldest first)."""
        with self.tx() as s:
            return [(sid, path) for sid, path in s.execute(select(Recording.session_id, Recording.path).where(
                Recording.chain.is_not(None), Recording.indexed_at.is_(None), Recording.pruned_at.is_(None))
                .order_by(Recording.seq).limit(limit))]

    def local_recordings(self, limit: int = 1000) -> list[tuple[str, str]]:
        """Closed, chained recordings still named by a local path: (session id, path), oldest first (with a bucket
        configured, the ones whose upload is owed)."""
        with self.tx() as s:
            return [(sid, path) for sid, path in s.execute(
                select(Recording.session_id, Recording.path).where(
                    Recording.chain.is_not(None), Recording.pruned_at.is_(None),
                    Recording.path.not_like("s3://%")).order_by(Recording.seq).limit(limit))]

    def set_recording_path(self, sid: str, ref: str) -> None:
        """Record a recording's new location (its content, hash and chain link are unchanged)."""
        with self.tx() as s:
            s.execute(update(Recording).where(Recording.session_id == sid).values(path=ref))

    def session(self, sid: str) -> SessionRecord | None:
        """One session with its recording; None if there is no session ``sid``."""
        with self.tx() as s:
            row = s.execute(select(Session, Recording).join(Recording, Recording.session_id == Session.id,
                                                            isouter=True).where(Session.id == sid)).first()
            return _session_record(*row) if row else None


POLICY_FILTERS = ("blocked", "warned", "held", "denied")


def _policy_filter(policy: str) -> Any:
    """A condition on sessions: something in them was blocked, warned about, held, or denied by a reviewer."""
    from bastion.store.models import ApprovalRequest

    if policy in ("blocked", "warned"):
        outcomes = ("block", "blocked") if policy == "blocked" else ("warn",)
        return exists().where(AuditEvent.session_id == Session.id, AuditEvent.outcome.in_(outcomes))
    if policy in ("held", "denied"):
        cond = exists().where(ApprovalRequest.session_id == Session.id)
        return cond.where(ApprovalRequest.status == "denied") if policy == "denied" else cond
    raise ValueError(f"policy filter must be one of {', '.join(POLICY_FILTERS)}")


def _like(glob: str) -> str:
    """A ``*`` glob as a LIKE pattern (``%`` and ``_`` taken literally)."""
    return glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")


def lock_head(s: OrmSession, chain: str) -> ChainHead:
    """Take the next position of ``chain``: the head row is updated first, which locks it until the transaction
    ends (a row lock on PostgreSQL, the write lock on SQLite), so concurrent appends queue up. The returned row's
    ``seq`` is the new position and ``head`` the previous link; the caller sets ``head`` to the new link."""
    res = s.execute(update(ChainHead).where(ChainHead.name == chain).values(seq=ChainHead.seq + 1))
    assert isinstance(res, CursorResult)  # an UPDATE's result, which carries the row count
    if not res.rowcount:  # a store created before the chains: start one
        s.add(ChainHead(name=chain, seq=1, head=GENESIS))
        s.flush()
    row = s.get(ChainHead, chain, populate_existing=True)
    assert row is not None
    return row


def _session_record(sess: Session, rec: Recording | None) -> SessionRecord:
    return SessionRecord(
        id=sess.id, user=sess.user, resource=sess.resource, kind=sess.kind, mode=sess.mode, command=sess.command,
        client_addr=sess.client_addr, node=sess.node, started_at=_aware(sess.started_at),
        ended_at=_aware(sess.ended_at), outcome=sess.outcome, exit_status=sess.exit_status, message=sess.message,
        recording=rec.path if rec else None, sha256=rec.sha256 if rec else None)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit does not wait for fsync (the WAL is synced at checkpoints); the database stays
    # consistent on power loss, only the last commits may be lost. Recordings are fsynced when they close.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
