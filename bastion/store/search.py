"""Substring search across recordings: the index is built when a recording closes (``index_recording``) and can be
rebuilt (``reindex``). Each indexed line is stored as shown and normalised (``normalise``: case folded, whitespace
runs made one space); a search is the normalised query as a plain substring of the normalised line.

SQLite narrows with an FTS5 table whose ``trigram`` tokenizer indexes every 3-character piece of the normalised line
(SQLite >= 3.34); the query goes to FTS5 as one quoted phrase, so nothing in it is an FTS5 operator. Without the
tokenizer (older SQLite: migration 0007 says so in the log) the table is a plain one and every search reads it.
PostgreSQL narrows with a ``pg_trgm`` GIN index under ``LIKE`` (its wildcards escaped). A query of fewer than 3
characters has no trigram: both stores then read every line that the filters leave (slower, same answer).

A hit's time is when its text became visible: the latest time of its characters (``recorder.textindex`` keeps when
each character of a line last changed; ``times`` stores them in runs, migration 0010). Rows indexed before that
have none and give their row's time until they are indexed again (0010 queues every kept recording for it).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from bastion.store.db import Store, _aware, now
from bastion.store.models import Recording, Session
from bastion.store.rows import SearchHit
from bastion.store.textquery import MIN_INDEXED, encode_times, normalise, normalise_times, plan, visible_at
from recorder.storage import RecordingStorage, StorageError
from recorder.textindex import IndexRow, index_rows

__all__ = ["MIN_INDEXED", "index_recording", "normalise", "reindex", "search", "trigram_index"]

log = logging.getLogger(__name__)
BATCH = 2000


def index_recording(store: Store, session_id: str, path: Path | str) -> int:
    """(Re)build the index rows of one recording; returns how many rows. A damaged tail is indexed up to the damage.

    Rows go in batches, each its own short transaction: a long recording must not hold the database's write lock
    (on SQLite, the whole database) while the daemon needs it to close other sessions."""
    errors: list[str] = []
    n = 0
    drop_index(store, session_id)
    batch: list[dict[str, Any]] = []
    for row in index_rows(path, errors):
        batch.append(_values(session_id, row))
        if len(batch) >= BATCH:
            with store.tx() as s:
                _insert(s, batch)
            n += len(batch)
            batch = []
    with store.tx() as s:
        if batch:
            _insert(s, batch)
            n += len(batch)
        rec = s.scalar(select(Recording).where(Recording.session_id == session_id))
        if rec is not None:
            rec.indexed_at = now()
    for e in errors:
        log.warning("index of session %s: %s", session_id, e)
    return n


def _values(session_id: str, row: IndexRow) -> dict[str, Any]:
    """One row of the index. ``t`` is exact (the recording's own time, so ``replay --from`` a hit includes the
    event that showed it); a line whose characters appeared at different times (a prompt, then the command typed on
    it) keeps their times in ``times`` (runs over ``norm``), so a hit can point at the moment its own text became
    visible; NULL when every character of ``norm`` has the row's time."""
    norm = normalise(row.text)
    t, times = row.t, None
    if row.times and min(row.times) == max(row.times):  # the common case: written at once (no Python loop)
        t = row.times[0]
    elif row.times:
        folded, per_char = normalise_times(row.text, row.times)
        if folded == norm and per_char:  # always so; a mismatch would only cost the precision
            t = min(per_char)
            times = encode_times(per_char) if max(per_char) != t else None
    return {"sid": session_id, "t": t, "kind": row.kind, "text": row.text, "norm": norm, "times": times}


def _insert(s: Any, batch: list[dict[str, Any]]) -> None:
    s.execute(text("INSERT INTO recording_text (session_id, t, kind, text, norm, times) "
                   "VALUES (:sid, :t, :kind, :text, :norm, :times)"), batch)


def drop_index(store: Store, session_id: str) -> None:
    with store.tx() as s:
        s.execute(text("DELETE FROM recording_text WHERE session_id = :sid"), {"sid": session_id})


def reindex(store: Store, storage: RecordingStorage,
            session_id: str | None = None) -> tuple[dict[str, int], list[str]]:
    """Rebuild the index of one session's recording, or of every recording still kept: the lines indexed per
    session, and what could not be read (a recording that is gone loses its index)."""
    with store.tx() as s:
        q = select(Recording.session_id, Recording.path, Recording.sha256).where(Recording.pruned_at.is_(None))
        if session_id is not None:
            q = q.where(Recording.session_id == session_id)
        todo = s.execute(q.order_by(Recording.id)).all()
    done: dict[str, int] = {}
    problems: list[str] = []
    for sid, ref, sha in todo:
        try:
            path = storage.local(ref, sha)
        except FileNotFoundError:
            drop_index(store, sid)
            continue
        except (OSError, StorageError) as e:
            problems.append(f"session {sid}: {e}")
            continue
        done[sid] = index_recording(store, sid, str(path))
    return done, problems


def trigram_index(store: Store) -> bool:
    """Whether the store's ``recording_text`` has a trigram index (PostgreSQL: always asked through LIKE, which
    pg_trgm serves when its index exists)."""
    if store.engine.dialect.name != "sqlite":
        return True
    with store.engine.connect() as c:
        sql = c.scalar(text("SELECT sql FROM sqlite_master WHERE name = 'recording_text'"))
    return bool(sql) and "trigram" in str(sql).lower()


def search(store: Store, query: str, *, user: str | None = None, resource: str | None = None,
           since: datetime | None = None, kind: str | None = None, limit: int = 50) -> list[SearchHit]:
    """Lines of recordings containing ``query`` (case-insensitive; a whitespace run matches any whitespace run),
    newest session first, then by offset. Queries shorter than ``MIN_INDEXED`` characters read every line."""
    p = plan(query, store.engine.dialect.name, trigram_index(store))
    where = [p.where]
    params: dict[str, Any] = {**p.params, "lim": limit}
    if user:
        where.append("s.user = :user")
        params["user"] = user
    if resource:
        where.append("s.resource = :resource")
        params["resource"] = resource
    if since:
        where.append("s.started_at >= :since")
        params["since"] = since
    if kind:
        where.append("rt.kind = :kind")
        params["kind"] = kind
    # the WHERE terms are fixed strings chosen above; every value is a bound parameter
    sql = ("SELECT rt.session_id, rt.t, rt.kind, rt.text, rt.norm, rt.times FROM recording_text rt "
           "JOIN sessions s ON s.id = rt.session_id")
    sql += " WHERE " + " AND ".join(where) + " ORDER BY s.started_at DESC, rt.t LIMIT :lim"
    hits: list[SearchHit] = []
    with store.tx() as s:
        rows = s.execute(text(sql), params).all()
        sessions = {r.id: r for r in s.scalars(select(Session).where(Session.id.in_({r[0] for r in rows})))}
    for sid, t, kind_, line, norm, times in rows:
        if p.needle not in norm:  # the index only narrows; the answer is this test (never expected to drop one)
            log.warning("search: row of session %s matched %r in the index but not as a substring", sid, query)
            continue
        sess = sessions.get(sid)
        hits.append(SearchHit(session=sid, user=sess.user if sess else "", resource=sess.resource if sess else "",
                              started_at=_aware(sess.started_at) if sess else None,
                              t=visible_at(norm, times, p.needle, float(t)), kind=kind_,
                              text=line))
    first = {sid: i for i, sid in reversed(list(enumerate(h.session for h in hits)))}
    hits.sort(key=lambda h: (first[h.session], h.t))  # a hit's time is its text's, not its row's
    return hits

