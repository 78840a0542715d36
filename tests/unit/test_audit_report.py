"""`bastion audit report` data (sessions, blocked commands, approvals with requester and approvers, terminations)
and retention: old recordings go, each one stays named in the chains."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from bastion.audit.report import CSV_COLUMNS, build_report, prune, report_csv
from bastion.store.approvals import ApprovalStore
from bastion.store.db import Store
from bastion.store.search import index_recording, search
from bastion.store.verify import verify
from recorder.asciicast import CastWriter
from recorder.seekindex import build, save, sidecar
from recorder.storage import RecordingStorage


def make(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'b.db'}")
    s.migrate()
    return s


def session(store: Store, tmp_path: Path, sid: str, word: str, user: str = "alice") -> Path:
    path = tmp_path / f"{sid}.cast"
    w = CastWriter(path, 80, 24, title=sid)
    w.output(f"{word}\r\n".encode())
    store.start_session(sid, user=user, resource="web", kind="ssh", mode="exec", command=f"echo {word}",
                        client_addr="127.0.0.1:1", node="n", recording_path=path)
    sha = w.close()
    store.end_session(sid, outcome="exited", exit_status=0, message="", sha256=sha, size=path.stat().st_size)
    index_recording(store, sid, path)
    save(build(path), path)
    return path


def test_report_sections_json_and_csv(tmp_path: Path) -> None:
    store = make(tmp_path)
    session(store, tmp_path, "s1", "one")
    store.audit("alice", "command.blocked", "blocked", resource="web", rule="no-rm", text="rm -rf /", mode="exec")
    store.audit("alice", "sql.block", "block", resource="db", session_id="s1", rule="no-drop", text="DROP TABLE t")
    store.audit("bob", "session.terminate", "ok", resource="web", session_id="s1", user="alice", reason="why not")
    approvals = ApprovalStore(store)
    a = approvals.create(requester="alice", resource="web", session_id="s1", text="chmod 600 f", rule="chmod",
                         reason="", approvals_needed=2, approver_roles=["reviewers"], timeout=60, node="n")
    approvals.decide(a.id, "bob", True, "")
    approvals.decide(a.id, "carol", True, "ok by me")
    d = approvals.create(requester="alice", resource="web", session_id="s1", text="chown x f", rule="chown",
                         reason="", approvals_needed=1, approver_roles=[], timeout=60, node="n")
    approvals.decide(d.id, "dave", False, "not today")
    until = datetime.now(UTC) + timedelta(minutes=1)
    rep = build_report(store, until - timedelta(days=1), until)
    assert [s["id"] for s in rep["sessions"]] == ["s1"]
    assert [(b["action"], b["rule"], b["text"]) for b in rep["blocked"]] == [
        ("command.blocked", "no-rm", "rm -rf /"), ("sql.block", "no-drop", "DROP TABLE t")]
    assert [(x["requester"], x["status"], x["approvers"], x["deniers"]) for x in rep["approvals"]] == [
        ("alice", "approved", ["bob", "carol"], []), ("alice", "denied", [], ["dave"])]
    assert rep["summary"] == {"sessions": 1, "blocked": 2, "approvals": 2, "approved": 1, "terminations": 1,
                              "self_approved": 0, "unreviewed_risky": 1}
    # s1 had a block, held requests (one denied): nobody has looked at it yet
    assert [(u["session"], u["risk"]) for u in rep["unreviewed_risky"]] == [("s1", ["blocked", "held", "denied"])]
    assert rep["terminations"] == [{"time": rep["terminations"][0]["time"], "by": "bob", "user": "alice",
                                    "resource": "web", "session": "s1", "reason": "why not"}]
    rows = list(csv.DictReader(io.StringIO(report_csv(rep))))
    assert list(rows[0]) == CSV_COLUMNS
    assert [r["record"] for r in rows] == ["session", "blocked", "blocked", "approval", "approval", "termination",
                                           "unreviewed"]
    assert rows[3]["approvers"] == "bob carol" and "carol approved: ok by me" in rows[3]["detail"]
    assert rows[4]["outcome"] == "denied" and "dave denied: not today" in rows[4]["detail"]
    # a period before everything: empty, not an error
    empty = build_report(store, until - timedelta(days=10), until - timedelta(days=9))
    assert empty["summary"]["sessions"] == 0 and empty["approvals"] == []


def test_retention_prunes_old_recordings_and_keeps_them_in_the_chain(tmp_path: Path) -> None:
    store = make(tmp_path)
    old = session(store, tmp_path, "old", "ancientword")
    new = session(store, tmp_path, "new", "freshword")
    with store.engine.begin() as c:
        c.execute(text("UPDATE sessions SET started_at = :t WHERE id = 'old'"),
                  {"t": datetime.now(UTC) - timedelta(days=100)})
    storage = RecordingStorage(tmp_path)
    assert [d["session"] for d in prune(store, 90, storage, dry_run=True)] == ["old"] and old.exists()
    done = prune(store, 90, storage)
    assert [d["session"] for d in done] == ["old"]
    assert not old.exists() and not sidecar(old).exists() and new.exists() and sidecar(new).exists()
    assert search(store, "ancientword") == [] and search(store, "freshword")
    assert prune(store, 90, storage) == []  # once
    rep = verify(store)
    assert rep.ok and any("1 recording(s) pruned" in n for n in rep.notes)
    pruned = [e for e in store.audit_events() if e.action == "recording.pruned"]
    assert len(pruned) == 1 and pruned[0].session_id == "old" and pruned[0].detail["sha256"]
    rows = build_report(store, datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))
    assert [p["session"] for p in rows["pruned"]] == ["old"]


def test_session_filters(tmp_path: Path) -> None:
    store = make(tmp_path)
    for sid, user in (("a1", "alice"), ("b1", "bob"), ("a2", "alice")):
        session(store, tmp_path, sid, sid, user=user)
    store.audit("alice", "command.block", "block", resource="web", session_id="a1", rule="r", text="rm x")
    store.audit("alice", "command.warn", "warn", resource="web", session_id="a2", rule="r", text="ls")
    approvals = ApprovalStore(store)
    req = approvals.create(requester="bob", resource="web", session_id="b1", text="chmod", rule="c", reason="",
                           approvals_needed=1, approver_roles=[], timeout=60, node="n")
    approvals.decide(req.id, "carol", False, "no")

    def ids(**kw: object) -> set[str]:
        return {r.id for r in store.sessions(**kw)}  # type: ignore[arg-type]

    assert ids(user="alice") == {"a1", "a2"} and ids(user="al*") == {"a1", "a2"} and ids(user="a_ice") == set()
    assert ids(policy="blocked") == {"a1"} and ids(policy="warned") == {"a2"}
    assert ids(policy="held") == {"b1"} and ids(policy="denied") == {"b1"}
    assert ids(user="alice", policy="held") == set()
    assert ids(since=datetime.now(UTC) + timedelta(hours=1)) == set()
    with pytest.raises(ValueError):
        store.sessions(policy="nonsense")


def test_tui_filter_words() -> None:
    from tui.recordings import parse_filter

    assert parse_filter("alice resource='web *' since=7d policy=blocked bogus=1") == {
        "user": "alice", "resource": "web *", "since": "7d", "policy": "blocked"}
    assert parse_filter('user="unterminated') == {"user": '"unterminated'}


def test_indexing_a_long_recording_never_locks_out_the_daemon(tmp_path: Path) -> None:
    """The index goes in in short transactions: meanwhile, other writers (the daemon closing sessions) get the
    SQLite write lock within a short busy timeout, never 'database is locked'."""
    import threading

    from sqlalchemy import event

    store = make(tmp_path)
    path = tmp_path / "long.cast"
    w = CastWriter(path, 80, 24, title="long")
    for i in range(30):
        w.output("".join(f"line {i}-{j} of a long recording\r\n" for j in range(2000)).encode())
    w.close()
    store.start_session("long", user="alice", resource="web", kind="ssh", mode="exec", command="cat", client_addr="",
                        node="n", recording_path=path)
    daemon = Store(store.url)
    event.listen(daemon.engine, "connect", lambda c, _r: c.execute("PRAGMA busy_timeout=1000"))
    done = threading.Event()
    errors: list[BaseException] = []

    def index() -> None:
        try:
            index_recording(store, "long", path)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            done.set()

    threading.Thread(target=index).start()
    writes = 0
    while not done.is_set():
        daemon.audit("alice", "session.end", "exited", session_id=f"other-{writes}")  # raises if locked out
        writes += 1
    assert not errors and writes > 0
    assert len(search(store, "line 29-1999 of a long recording")) == 1
