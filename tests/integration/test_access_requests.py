"""Access on request, through the stock OpenSSH client: a role may *ask* for a resource it cannot open; a reviewer
of that resource grants it in the live queue (not the requester: segregation of duties), and the grant lasts
`request_ttl`: later sessions open without asking, the recording names the grant, and a denial refuses the
session. The menu marks such resources and asks the operator why before the request goes out."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.approvals import ACCESS_RULE, ApprovalStore
from bastion.store.db import Store
from bastion.store.rows import RequestRecord
from tests.integration.conftest import BastionEnv, own_bastion
from tests.integration.test_approvals_e2e import reviewer_queue, wait_stderr_line
from tests.support.review import approve
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
ROLE = "  breakglass: {groups: [ops], request: [secret-db], request_ttl: 600}\n"


@pytest.fixture(scope="module")
def access_env(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    with own_bastion(bastion_env, tmp_path_factory.mktemp("access"), extra_roles=ROLE) as env:
        yield env


def run_bg(env: BastionEnv, user: str, command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(ssh_argv(env.keys[user], env.port, user, "secret-db", "--", command, tty=False),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def requests(env: BastionEnv) -> list[RequestRecord]:
    return [r for r in ApprovalStore(Store(load_config(env.config).database_url)).recent(limit=100)
            if r.rule == ACCESS_RULE]


def test_access_is_asked_for_granted_by_a_reviewer_and_lasts(access_env: BastionEnv) -> None:
    env = access_env
    with reviewer_queue(env, "bob") as bob:
        proc = run_bg(env, "alice", "echo GRANTED-RUN-$((20+22))")
        line = wait_stderr_line(proc, "waiting for approval")
        assert "access to secret-db needs a reviewer's approval" in line and "rule access-request" in line
        bob.wait_for(r"alice\s+secret-db\s+open secret-db -- echo GRANTED-RUN", timeout=10)
        approve(bob)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and out == "GRANTED-RUN-42\n", err
        # within the grant: no new request, straight through
        again = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "secret-db", "--", "echo AGAIN",
                                        tty=False), capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and again.stdout == "AGAIN\n" and "waiting" not in again.stderr
    reqs = requests(env)
    assert len(reqs) == 1 and reqs[0].requester == "alice" and reqs[0].status == "approved"
    assert [d.reviewer for d in reqs[0].decisions] == ["bob"]
    sessions = json.loads(env.bastion("sessions", "list", "--json").stdout)
    s = next(x for x in sessions if x["command"] == "echo AGAIN")
    assert f"access to secret-db granted by bob (request #{reqs[0].id}) until" in Path(s["recording"]).read_text()
    with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", tty=True), cols=130, rows=30) as t:
        t.wait_for(r"secret-db\s+ssh\s+\[granted until \d\d:\d\d UTC\] only for admins")
    # nobody without the role may even ask: the same answer as for an unknown resource
    out = subprocess.run(ssh_argv(env.keys["mallory"], env.port, "mallory", "secret-db", "--", "id", tty=False),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no such resource or not permitted: secret-db" in out.stderr


def test_a_reviewer_revokes_granted_access(access_env: BastionEnv) -> None:
    env = access_env
    granted = [r for r in requests(env) if r.requester == "alice" and r.status == "approved"]
    assert len(granted) == 1
    with reviewer_queue(env, "bob") as bob:
        bob.wait_for(rf"#{granted[0].id}\s+alice\s+secret-db\s+open secret-db.*approved")
        bob.send("r")  # the queue has focus: revoking is for the Decided list
        bob.wait_for(r"r revokes granted access: choose it in the Decided list")
        bob.send_key("tab")
        bob.send("r")
        bob.wait_for(rf"Revoke alice's access to secret-db \(request #{granted[0].id}\): why\?")
        bob.send("incident closed\r")
        bob.wait_for(rf"request #{granted[0].id}: revoked by bob: incident closed")
    proc = run_bg(env, "alice", "echo AFTER-REVOKE")  # asks again
    try:
        wait_stderr_line(proc, "waiting for approval")
    finally:
        proc.kill()
        proc.wait()
    events = [e for e in Store(load_config(env.config).database_url).audit_events() if e.action == "access.revoke"]
    assert [(e.actor, e.outcome, e.detail["reason"]) for e in events] == [("bob", "revoked", "incident closed")]


def test_the_requester_cannot_grant_it_and_a_denial_refuses(access_env: BastionEnv) -> None:
    env = access_env
    with reviewer_queue(env, "carol") as carol, reviewer_queue(env, "dave") as dave:
        proc = run_bg(env, "carol", "echo SHOULD-NOT-RUN")  # carol is in ops (may ask) and a reviewer herself
        wait_stderr_line(proc, "waiting for approval")
        dave.wait_for(r"carol\s+secret-db\s+open secret-db", timeout=10)
        carol.wait_for(r"Pending approval requests")
        assert "SHOULD-NOT-RUN" not in carol.screen_text()  # her own request is not hers to decide
        dave.send("d")
        dave.wait_for(r"why\?")
        dave.send("use the runbook account\r")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1 and out == ""
        assert "denied by dave: use the runbook account" in err


def test_the_menu_marks_it_and_asks_why(access_env: BastionEnv) -> None:
    env = access_env
    with Terminal(ssh_argv(env.keys["carol"], env.port, "carol", tty=True), cols=130, rows=30) as t:
        t.wait_for(r"secret-db\s+ssh\s+\[on request\] only for admins")
        t.send("secret")
        t.wait_for(r"Filter: secret")
        t.send_key("enter")
        t.wait_for(r"Access to secret-db needs a reviewer's approval \(it lasts 10m00s\)")
        t.send("incident 4242 on the ledger")
        t.wait_for(r"incident 4242 on the ledger")
        t.send("\r")
        t.wait_for_raw(r"waiting for approval \(request #\d+, rule access-request\)")
        deadline = time.monotonic() + 10
        while not (mine := [r for r in requests(env) if r.requester == "carol" and r.status == "pending"]):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert mine[0].text == "open secret-db (reason: incident 4242 on the ledger)"
        t.send("\x03")  # Ctrl-C withdraws
        t.wait_for(r"withdrawn")
