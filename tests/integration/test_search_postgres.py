"""Substring search on a PostgreSQL store (the machine's server on 127.0.0.1:5432): migration 0007 puts the
normalised lines under a pg_trgm GIN index that the search's LIKE uses, carries rows indexed before it over, and a
query's LIKE wildcards, escapes and quotes are taken literally."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import text

from bastion.store.db import MIGRATIONS, Store
from bastion.store.search import index_recording, search
from bastion.store.textquery import normalise, plan
from recorder.asciicast import CastWriter
from tests.support.postgres import scratch_database

SID = "20261130-000001-dddddddddddd"
LINES = ["removed 'victim2'", "100% of_it! \\o/", 'say "NEAR" a*b', "Straße   MIXED case"]


@pytest.fixture()
def pg_url() -> Iterator[str]:
    with scratch_database("bastion_search") as url:
        yield url


def session(store: Store, path: Path) -> None:
    w = CastWriter(path, 80, 24, title="t", env={"TERM": "dumb"})
    for line in LINES:
        w.output(line.encode() + b"\r\n")
    w.input(b"import os\nos.getcwd()\n")
    sha = w.close()
    store.start_session(SID, user="alice", resource="web", kind="ssh", mode="exec", command="python3 -",
                        client_addr="", node="n1", recording_path=path)
    store.end_session(SID, outcome="exited", exit_status=0, message="", sha256=sha, size=path.stat().st_size)


def test_substring_search_on_postgres(pg_url: str, tmp_path: Path) -> None:
    store = Store(pg_url)
    store.migrate()
    session(store, tmp_path / "c.cast")
    assert index_recording(store, SID, tmp_path / "c.cast") == len(LINES) + 2
    found = [(h.kind, h.text) for h in search(store, "EMOVED 'v")]
    assert found == [("screen", "removed 'victim2'")]
    assert [(h.kind, h.text) for h in search(store, "s.getcw")] == [("stdin", "os.getcwd()")]
    assert [h.text for h in search(store, "strasse mixed")] == ["Straße   MIXED case"]
    for query in ("%", "_", "!", "\\", "0% of_", '"near"', "a*b", "o/", "%%", "of%it", "o_", "e_s", "!!", "ed"):
        expected = [line for line in LINES if normalise(query) in normalise(line)]
        assert [h.text for h in search(store, query, kind="screen")] == expected, query
    with store.engine.begin() as c:  # the trigram index is there, and LIKE uses it
        assert c.scalar(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_recording_text_norm'"))
        c.execute(text("SET LOCAL enable_seqscan = off"))
        p = plan("victim2", "postgresql")
        shown = "\n".join(c.scalars(text(f"EXPLAIN SELECT * FROM recording_text rt WHERE {p.where}"), p.params))
    assert "ix_recording_text_norm" in shown, shown
    store.engine.dispose()


def test_rows_indexed_before_0007_are_carried_over_on_postgres(pg_url: str) -> None:
    store = Store(pg_url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", pg_url.replace("%", "%%"))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")
        conn.execute(text("INSERT INTO sessions (id, \"user\", resource, kind, mode, client_addr, node, started_at, "
                          "outcome, message) VALUES (:sid, 'alice', 'web', 'ssh', 'exec', '', 'n', "
                          "'2026-11-01 10:00:00+00', 'exited', '')"), {"sid": SID})
        conn.execute(text("INSERT INTO recording_text (session_id, t, kind, text) VALUES "
                          "(:sid, 1.5, 'screen', 'Removed  VICTIM2')"), {"sid": SID})
    store.migrate()
    assert [(h.text, h.t) for h in search(store, "moved victim")] == [("Removed  VICTIM2", 1.5)]
    store.engine.dispose()
