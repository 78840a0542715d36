"""A reviewer's reason is shown on the requester's terminal: ApprovalService.decide takes one line of printable
text (at most 500 characters) whatever client it came from (the queue screen, ``ssh bastion deny``, a taken-over
session process speaking RPC), and refuses anything else before the store hears of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bastion.config.schema import Role
from bastion.context import ConnectionContext
from bastion.oversight.approvals import ApprovalService
from bastion.store.approvals import DecisionRefused
from bastion.store.db import Store

ROLES = {"reviewers": Role(groups=["reviewers"], review=True)}


@pytest.mark.parametrize("reason", ["\x1b[2J\x1b[Hall clear", "two\nlines", "\u202eevil", "x" * 501, None, 5])
def test_a_reason_that_would_act_on_a_terminal_is_refused(tmp_path: Path, reason: object) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.migrate()
    service = ApprovalService(store, "n1", lambda: ROLES, spawn=lambda aw: None, publish=lambda e: None)
    rid = service.db.create(requester="alice", resource="web", session_id="s1", text="chmod 600 f", rule="chmod",
                            reason="", approvals_needed=1, approver_roles=["reviewers"], timeout=60, node="n1").id
    bob = ConnectionContext("127.0.0.1", "bastion")
    bob.set_identity("bob", ["reviewers"], roles=ROLES, source="key")
    with pytest.raises(DecisionRefused, match="one line of printable text"):
        asyncio.run(service.decide(bob, rid, False, reason))  # type: ignore[arg-type]
    assert service.db.get(rid).status == "pending"  # type: ignore[union-attr]
    assert asyncio.run(service.decide(bob, rid, False, "not during the freeze")).status == "denied"
