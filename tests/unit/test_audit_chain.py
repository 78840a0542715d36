"""Hash chains in the SQLite store: appends under contention, the migration's backfill, and what verify reports for
recordings (gaps, relinking, unchained, interrupted, pruned) and signatures (forged, rewritten)."""

from __future__ import annotations

import base64
import hashlib
import threading
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text

from bastion.store.chain import audit_link
from bastion.store.db import MIGRATIONS, Store
from bastion.store.models import AuditEvent, ChainSignature, Recording
from bastion.store.verify import sign_heads, verify
from recorder.asciicast import CastWriter


def make(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'b.db'}")
    s.migrate()
    return s


def session(store: Store, tmp_path: Path, sid: str, body: bytes = b"hello\r\n", *, close: bool = True) -> Path:
    path = tmp_path / f"{sid}.cast"
    w = CastWriter(path, 80, 24, title=sid)
    w.output(body)
    store.start_session(sid, user="alice", resource="web", kind="ssh", mode="exec", command="x", client_addr="",
                        node="n1", recording_path=path)
    if close:
        sha = w.close()
        store.end_session(sid, outcome="exited", exit_status=0, message="", sha256=sha, size=path.stat().st_size)
    else:
        assert w.backlog == 0  # a daemon killed mid-session: the file is as far as it got (flushed per event)
    return path


def kinds(store: Store, **kw: object) -> list[tuple[str, str]]:
    return [(p.kind, p.chain) for p in verify(store, **kw).problems]  # type: ignore[arg-type]


def test_concurrent_appends_make_one_unbroken_chain(tmp_path: Path) -> None:
    store = make(tmp_path)
    other = Store(store.url)  # a second engine: another process or node on the same database

    def write(st: Store, who: str) -> None:
        for i in range(40):
            st.audit(who, "test", "ok", n=i)

    threads = [threading.Thread(target=write, args=(st, f"w{i}")) for i, st in enumerate((store, other, store))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store.tx() as s:
        seqs = list(s.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)))
    assert seqs == list(range(1, 121))
    assert verify(store).ok


def test_migration_chains_rows_written_before_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        for i in range(3):
            conn.execute(text("INSERT INTO audit_events (ts, actor, action, outcome, client_addr, detail) "
                              "VALUES (:ts, 'alice', 'login', 'ok', '', '{}')"),
                         {"ts": f"2026-11-0{i + 1} 10:00:00.000000"})
        conn.execute(text("INSERT INTO sessions (id, user, resource, kind, mode, client_addr, node, started_at, "
                          "outcome, message) VALUES ('s1', 'alice', 'web', 'ssh', 'exec', '', 'n', "
                          "'2026-11-01 10:00:00', 'exited', '')"))
        conn.execute(text("INSERT INTO recordings (session_id, path, sha256, closed_at) "
                          f"VALUES ('s1', '{tmp_path / 'nope.cast'}', '{'a' * 64}', '2026-11-01 10:00:01')"))
    store.migrate()
    assert kinds(store, check_files=False) == []
    store.audit("bob", "after", "ok")  # new events continue the backfilled chain
    with store.tx() as s:
        assert list(s.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq))) == [1, 2, 3, 4]
    assert kinds(store) == [("missing", "recordings")]  # the file was never there


def test_recording_chain_problems(tmp_path: Path) -> None:
    store = make(tmp_path)
    paths = [session(store, tmp_path, f"s{i}") for i in range(4)]
    assert verify(store).ok
    with store.engine.begin() as c:
        row = c.execute(text("SELECT * FROM recordings WHERE session_id = 's1'")).mappings().one()
        c.execute(text("DELETE FROM recordings WHERE session_id = 's1'"))
    assert kinds(store) == [("missing", "recordings")]  # a gap at position 2
    with store.engine.begin() as c:
        names = ", ".join(row)
        c.execute(text(f"INSERT INTO recordings ({names}) VALUES ({', '.join(f':{k}' for k in row)})"), dict(row))
        c.execute(text("UPDATE recordings SET sha256 = :h WHERE session_id = 's2'"), {"h": "f" * 64})
    got = kinds(store)  # the stored hash changed: the link no longer matches, and neither does the file
    assert ("altered", "recordings") in got and ("modified", "recordings") in got
    with store.engine.begin() as c:
        c.execute(text("UPDATE recordings SET sha256 = :h WHERE session_id = 's2'"),
                  {"h": hashlib.sha256(paths[2].read_bytes()).hexdigest()})
    assert verify(store).ok


def test_interrupted_session_is_chained_as_far_as_it_got(tmp_path: Path) -> None:
    store = make(tmp_path)
    session(store, tmp_path, "done")
    session(store, tmp_path, "cut", b"partial output\r\n", close=False)
    rep = verify(store)
    assert rep.ok and any("cut is active" in n for n in rep.notes)
    assert store.mark_interrupted("n1") == 1
    assert verify(store).ok
    with store.tx() as s:
        rec = s.scalar(select(Recording).where(Recording.session_id == "cut"))
        assert rec is not None and rec.seq == 2 and rec.sha256
    with store.engine.begin() as c:  # a closed session whose recording never joined the chain
        c.execute(text("UPDATE recordings SET seq = NULL, chain = NULL WHERE session_id = 'cut'"))
        c.execute(text("UPDATE chain_heads SET seq = 1, head = (SELECT chain FROM recordings WHERE session_id = "
                       "'done') WHERE name = 'recordings'"))
    assert kinds(store) == [("unchained", "recordings")]


def test_pruned_recordings_stay_in_the_chain(tmp_path: Path) -> None:
    store = make(tmp_path)
    p = session(store, tmp_path, "old")
    session(store, tmp_path, "new")
    p.unlink()
    with store.engine.begin() as c:
        c.execute(text("UPDATE recordings SET pruned_at = '2026-11-29 00:00:00' WHERE session_id = 'old'"))
    rep = verify(store)
    assert rep.ok and any("1 recording(s) pruned" in n for n in rep.notes)


def test_signatures(tmp_path: Path) -> None:
    store = make(tmp_path)
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    session(store, tmp_path, "a")
    store.audit("alice", "x", "ok")
    store.audit("alice", "y", "ok")
    signed = sign_heads(store, key)
    assert {s["chain"] for s in signed} == {"recordings", "audit"}
    rep = verify(store, public_key=key.public_key())
    assert rep.ok and sum("matches" in n for n in rep.notes) == 2
    assert kinds(store, public_key=other.public_key()) == [("signature", "recordings"), ("signature", "audit")]
    # a rewritten chain: event 2 changed and its link recomputed by someone without the key
    with store.tx() as s:
        ev = s.scalar(select(AuditEvent).where(AuditEvent.seq == 2))
        assert ev is not None
        ev.actor = "mallory"
        ev.hash = audit_link(ev.prev_hash or "", 2, ts=ev.ts, actor=ev.actor, action=ev.action, outcome=ev.outcome,
                             resource=ev.resource, session_id=ev.session_id, client_addr=ev.client_addr,
                             detail=ev.detail)
        s.execute(text("UPDATE chain_heads SET head = :h WHERE name = 'audit'"), {"h": ev.hash})
    assert kinds(store) == []  # consistent without the key...
    assert kinds(store, public_key=key.public_key()) == [("altered", "audit")]  # ...not with it
    # a forged signature row
    with store.tx() as s:
        s.add(ChainSignature(chain="recordings", seq=1, head="0" * 64, key_id=signed[0]["key_id"],
                             signature=base64.b64encode(b"\0" * 64).decode(), signed_at=datetime.now(UTC)))
    assert ("signature", "recordings") in kinds(store, public_key=key.public_key())
