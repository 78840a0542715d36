"""The store also runs on PostgreSQL (the machine's server on 127.0.0.1:5432), migrations included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.store.db import Store
from tests.support.postgres import scratch_database


@pytest.fixture()
def pg_url() -> Iterator[str]:
    with scratch_database("bastion_test") as url:
        yield url


def test_migrate_and_session_lifecycle_on_postgres(pg_url: str, tmp_path: Path) -> None:
    store = Store(pg_url)
    store.migrate()
    store.migrate()  # idempotent
    store.touch_user("alice")
    a = "20261122-000001-aaaaaaaaaaaa"
    b = "20261122-000002-bbbbbbbbbbbb"
    for sid in (a, b):
        store.start_session(sid, user="alice", resource="web", kind="ssh", mode="exec", command="id",
                            client_addr="127.0.0.1:1", node="n1", recording_path=tmp_path / f"{sid}.cast")
    store.end_session(a, outcome="exited", exit_status=0, message="exited with status 0", sha256="1" * 64, size=10)
    store.audit("alice", "session.end", "exited", resource="web", session_id=a, exit_status=0)
    assert store.mark_interrupted("n1") == 1  # b was still active when "the daemon died"
    rows = {r.id: r for r in store.sessions()}
    assert rows[a].outcome == "exited" and rows[a].sha256 == "1" * 64 and rows[a].duration >= 0
    assert rows[b].outcome == "interrupted"
    assert store.audit_events()[0].detail == {"exit_status": 0}
    store.engine.dispose()


def test_search_and_verify_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL full-text (tsvector) answers like SQLite's FTS5, and the chains verify there too."""
    from bastion.store.search import index_recording, search
    from bastion.store.verify import verify
    from recorder.asciicast import CastWriter

    store = Store(pg_url)
    store.migrate()
    sid = "20261129-000001-cccccccccccc"
    path = tmp_path / "c.cast"
    w = CastWriter(path, 80, 24, title="t")
    w.output(b"$ cat /etc/motd\r\nWelcome to db-primary-7\r\n\x1b[1mbold\x1b[0m words here\r\n")
    w.marker("policy: allow: cat /etc/motd")
    sha = w.close()
    store.start_session(sid, user="alice", resource="db", kind="ssh", mode="interactive", command=None,
                        client_addr="", node="n1", recording_path=path)
    store.end_session(sid, outcome="exited", exit_status=0, message="", sha256=sha, size=path.stat().st_size)
    store.audit("alice", "session.end", "exited", resource="db", session_id=sid)
    assert index_recording(store, sid, path) == 4
    hits = search(store, "db-primary-7")
    assert [(h.session, h.kind, h.text) for h in hits] == [(sid, "screen", "Welcome to db-primary-7")]
    assert [h.text for h in search(store, "BOLD words")] == ["bold words here"]
    assert [h.kind for h in search(store, "cat /etc/motd")] == ["screen", "marker"]
    assert search(store, "db-primary-8") == [] and search(store, "db-primary-7", user="bob") == []
    rep = verify(store)
    assert rep.ok, rep.problems
    path.write_bytes(path.read_bytes().replace(b"primary-7", b"primary-8"))
    assert [p.kind for p in verify(store).problems] == ["modified"]
    store.engine.dispose()
