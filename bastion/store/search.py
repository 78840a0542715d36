"""Full-text search across recordings: the index is built when a recording closes (``index_recording``) and can be
rebuilt (``reindex``). SQLite uses FTS5, PostgreSQL a ``tsvector`` with a GIN index; both narrow the candidates by
words, then every hit is confirmed as a case-insensitive substring of the line, so both stores answer the same.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from bastion.store.db import Store, _aware, now
from bastion.store.models import Recording, Session
from bastion.store.rows import SearchHit
from recorder.storage import RecordingStorage, StorageError
from recorder.textindex import index_rows

__all__ = ["index_recording", "reindex", "search"]

log = logging.getLogger(__name__)
_WORD = re.compile(r"[^\W_]+")  # letters and digits: how both indexes split text into words
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
        batch.append({"sid": session_id, "t": round(row.t, 3), "kind": row.kind, "text": row.text})
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


def _insert(s: Any, batch: list[dict[str, Any]]) -> None:
    s.execute(text("INSERT INTO recording_text (session_id, t, kind, text) VALUES (:sid, :t, :kind, :text)"), batch)


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


def _normalise(s: str) -> str:
    return " ".join(s.split()).casefold()


def search(store: Store, query: str, *, user: str | None = None, resource: str | None = None,
           since: datetime | None = None, kind: str | None = None, limit: int = 50) -> list[SearchHit]:
    """Lines of recordings containing ``query`` (case-insensitive; whitespace runs match any whitespace), newest
    session first, then by offset."""
    needle = _normalise(query)
    if not needle:
        raise ValueError("give something to search for")
    words = _WORD.findall(query)
    sqlite = store.engine.dialect.name == "sqlite"
    where: list[str] = []
    params: dict[str, Any] = {"lim": max(limit * 5, 200)}
    if words and sqlite:
        where.append("rt.text MATCH :q")
        params["q"] = '"' + " ".join(words).replace('"', '""') + '"'
    elif words:
        where.append("rt.tsv @@ phraseto_tsquery('simple', :q)")
        params["q"] = " ".join(words)
    else:  # only punctuation: no words to look up, scan
        where.append("lower(rt.text) LIKE :like")
        params["like"] = "%" + query.strip().lower().replace("\\", "").replace("%", "").replace("_", "") + "%"
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
    sql = "SELECT rt.session_id, rt.t, rt.kind, rt.text FROM recording_text rt JOIN sessions s ON s.id = rt.session_id"
    sql += " WHERE " + " AND ".join(where) + " ORDER BY s.started_at DESC, rt.t LIMIT :lim"
    hits: list[SearchHit] = []
    with store.tx() as s:
        rows = s.execute(text(sql), params).all()
        sessions = {r.id: r for r in s.scalars(select(Session).where(Session.id.in_({r[0] for r in rows})))}
    for sid, t, kind_, line in rows:
        if needle not in _normalise(line):
            continue
        sess = sessions.get(sid)
        hits.append(SearchHit(session=sid, user=sess.user if sess else "", resource=sess.resource if sess else "",
                              started_at=_aware(sess.started_at) if sess else None, t=float(t), kind=kind_,
                              text=line))
        if len(hits) >= limit:
            break
    return hits
