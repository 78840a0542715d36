"""The SQLite store: migrations, session lifecycle, recording hash chain, interrupted sessions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bastion.store.db import GENESIS, Store


def make(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'b.db'}")
    s.migrate()
    return s


def test_recordings_are_hash_chained_in_close_order(tmp_path: Path) -> None:
    store = make(tmp_path)
    ids = ["20261122-000001-a", "20261122-000002-b", "20261122-000003-c"]
    for sid in ids:
        store.start_session(sid, user="alice", resource="web", kind="ssh", mode="interactive", command=None,
                            client_addr="", node="n", recording_path=tmp_path / sid)
    for sid, digest in zip(ids, ("a" * 64, "b" * 64, "c" * 64), strict=True):
        store.end_session(sid, outcome="exited", exit_status=0, message="", sha256=digest, size=1)
    from sqlalchemy import select

    from bastion.store.models import Recording

    with store.tx() as s:
        recs = {r.session_id: r for r in s.scalars(select(Recording))}
    prev = GENESIS
    for sid in ids:
        r = recs[sid]
        assert r.prev_chain == prev
        assert r.chain == hashlib.sha256(json.dumps([prev, sid, r.sha256], separators=(",", ":")).encode()).hexdigest()
        prev = r.chain


def test_interrupted_sessions_only_for_own_node(tmp_path: Path) -> None:
    store = make(tmp_path)
    for sid, node in (("s1", "n1"), ("s2", "n2")):
        store.start_session(sid, user="u", resource="r", kind="ssh", mode="exec", command="x", client_addr="",
                            node=node, recording_path=tmp_path / sid)
    assert store.mark_interrupted("n1") == 1
    assert {r.id: r.outcome for r in store.sessions()} == {"s1": "interrupted", "s2": "active"}
    assert store.session("nope") is None and store.session("s2").resource == "r"  # type: ignore[union-attr]


def test_node_heartbeats_and_expiry(tmp_path: Path) -> None:
    from sqlalchemy import text

    store = make(tmp_path)
    for node in ("a", "b", "c"):
        store.heartbeat(node, starting=True)
        store.start_session(f"s-{node}", user="alice", resource="web", kind="ssh", mode="exec", command="x",
                            client_addr="", node=node, recording_path=tmp_path / f"{node}.cast")
    store.heartbeat("c", stopping=True)  # a clean stop: its restart takes care of its sessions
    with store.engine.begin() as c:
        c.execute(text("UPDATE nodes SET heartbeat_at = '2000-01-01 00:00:00'"))
    store.heartbeat("b")  # b is alive
    assert store.expired_nodes(60) == ["a"]
    store.mark_interrupted("a")
    assert store.expired_nodes(60) == []  # nothing left to take over
    store.heartbeat("c", starting=True)
    assert store.session("s-c").outcome == "active"  # type: ignore[union-attr]
