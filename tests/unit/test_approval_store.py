"""Approval rules enforced by the store itself: no self-approval, N distinct reviewers, one decision each."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.store.approvals import ACCESS_RULE, ApprovalStore, DecisionRefused
from bastion.store.db import Store


@pytest.fixture()
def db(tmp_path: Path) -> ApprovalStore:
    s = Store(f"sqlite:///{tmp_path / 'a.db'}")
    s.migrate()
    return ApprovalStore(s)


def req(db: ApprovalStore, n: int = 1, timeout: float = 60, session: str = "s1") -> int:
    return db.create(requester="alice", resource="web", session_id=session, text="chmod 600 f", rule="chmod",
                     reason="", approvals_needed=n, approver_roles=["reviewers"], timeout=timeout,
                     node="n1").id


def test_self_approval_refused_and_not_recorded(db: ApprovalStore) -> None:
    rid = req(db)
    with pytest.raises(DecisionRefused, match="your own request"):
        db.decide(rid, "alice", True, "")
    r = db.get(rid)
    assert r.status == "pending" and list(r.decisions) == []  # type: ignore[union-attr]


def test_n_distinct_reviewers_and_one_decision_each(db: ApprovalStore) -> None:
    rid = req(db, n=2)
    assert db.decide(rid, "bob", True, "").status == "pending"
    with pytest.raises(DecisionRefused, match="already decided"):
        db.decide(rid, "bob", True, "again")
    r = db.decide(rid, "dave", True, "")
    assert r.status == "approved" and r.status_reason == "approved by bob, dave"
    with pytest.raises(DecisionRefused, match="already approved"):
        db.decide(rid, "erin", False, "late")


def test_deny_needs_reason_and_wins(db: ApprovalStore) -> None:
    rid = req(db, n=2)
    with pytest.raises(DecisionRefused, match="needs a reason"):
        db.decide(rid, "bob", False, "  ")
    db.decide(rid, "bob", True, "")
    r = db.decide(rid, "dave", False, "change freeze")
    assert r.status == "denied" and r.status_reason == "denied by dave: change freeze"


def test_expired_requests_cannot_be_approved(db: ApprovalStore) -> None:
    rid = req(db, timeout=0.001)
    import time

    time.sleep(0.01)
    with pytest.raises(DecisionRefused, match="expired"):
        db.decide(rid, "bob", True, "")
    assert db.get(rid).status == "expired"  # type: ignore[union-attr]


def test_cancel_by_session_and_node(db: ApprovalStore) -> None:
    a, b, c = req(db, session="s1"), req(db, session="s2"), req(db, session="s2")
    assert db.finish(c, "withdrawn", "by alice") and not db.finish(c, "expired", "x")
    assert db.cancel_pending(session_id="s2", reason="session ended") == [b]
    assert db.cancel_pending(node="n1", reason="restart") == [a]
    assert [db.get(i).status for i in (a, b, c)] == [  # type: ignore[union-attr]
        "cancelled", "cancelled", "withdrawn"]


def test_access_grants_last_their_ttl_and_can_be_revoked(db: ApprovalStore) -> None:
    command = req(db)
    access = db.create(requester="alice", resource="prod", session_id="s2", text="open prod (reason: x)",
                       rule=ACCESS_RULE, reason="", approvals_needed=1, approver_roles=[], timeout=60,
                       node="n1").id
    assert db.access_granted("alice", "prod", 600) is None  # pending is not granted
    db.decide(access, "bob", True, "")
    db.decide(command, "bob", True, "")
    assert db.access_granted("alice", "prod", 600).request.id == access  # type: ignore[union-attr]
    assert db.access_granted("alice", "prod", 0.000001) is None  # past its ttl
    assert db.access_granted("carol", "prod", 600) is None and db.access_granted("alice", "web", 600) is None
    with pytest.raises(DecisionRefused, match="not a request for access"):
        db.revoke(command, "bob", "no")  # an approved command is not a grant
    with pytest.raises(DecisionRefused, match="needs a reason"):
        db.revoke(access, "bob", "  ")
    assert db.revoke(access, "bob", "done").status_reason == "revoked by bob: done"
    assert db.access_granted("alice", "prod", 600) is None
    with pytest.raises(DecisionRefused, match="is revoked, not granted access"):
        db.revoke(access, "bob", "again")
