"""Review from any SSH client, through the stock ``ssh``: ``review`` lists, ``approve N`` / ``deny N --reason``
decide with the queue screen's checks (no self-approval, N distinct approvers), ``ssh -t bastion review N`` opens
the queue on that request. The operator's held command runs (or fails) as if decided in the TUI."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.db import Store
from tests.integration.conftest import BastionEnv
from tests.integration.test_approvals_e2e import exec_bg, requests, wait_stderr_line
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal


@pytest.fixture()
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="rv", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ssh(env: BastionEnv, user: str, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_argv(env.keys[user], env.port, user, *words, tty=False), capture_output=True,
                          text=True, timeout=60)


def held(env: BastionEnv, user: str, command: str) -> tuple[subprocess.Popen[str], int]:
    """``command`` run by ``user`` in the exec form, waiting for approval; and its request's number."""
    proc = exec_bg(env, user, command)
    wait_stderr_line(proc, "waiting for approval")
    rid = max(r.id for r in requests(env).pending() if r.requester == user and r.text == command)
    return proc, rid


def test_a_reviewer_lists_and_approves_and_the_held_command_runs(bastion_env: BastionEnv, work: Path) -> None:
    env = bastion_env
    f = work / "f"
    f.write_text("x")
    proc, rid = held(env, "alice", f"chmod 600 {f} && stat -c %a {f}")
    listed = ssh(env, "bob", "review")
    assert listed.returncode == 0, listed.stderr
    assert f"#{rid}  alice → web  rule chmod-needs-approval  approvals 0/1" in listed.stdout
    assert f"chmod 600 {f} && stat -c %a {f}" in listed.stdout
    assert f"approve {rid}" in listed.stdout and f"deny {rid} --reason" in listed.stdout
    as_json = json.loads(ssh(env, "bob", "review", "--json").stdout)
    assert any(r["id"] == rid and r["requester"] == "alice" for r in as_json["pending"])
    detail = ssh(env, "bob", "review", str(rid))
    assert detail.returncode == 0 and f"#{rid}" in detail.stdout
    # the requester cannot approve her own request, nor can someone who reviews nothing
    own = ssh(env, "alice", "approve", str(rid))
    assert own.returncode == 1 and "review no resource" in own.stderr
    nobody = ssh(env, "mallory", "approve", str(rid))
    assert nobody.returncode == 1
    assert proc.poll() is None  # still held
    ok = ssh(env, "bob", "approve", str(rid), "--reason", "looks fine")
    assert ok.returncode == 0 and f"#{rid}: approved" in ok.stdout, ok.stderr
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == "600\n", err
    assert "approved by bob" in err
    events = Store(load_config(env.config).database_url).audit_events(200)
    assert any(e.actor == "bob" and e.action == "approval.decision" and e.outcome == "approve"
               and e.detail.get("request_id", rid) == rid for e in events)
    # decided: no longer listed, and a second decision is refused
    assert f"#{rid} " not in ssh(env, "bob", "review").stdout
    again = ssh(env, "bob", "deny", str(rid), "--reason", "too late")
    assert again.returncode == 1 and "refused" in again.stderr


def test_deny_needs_a_reason_and_the_reason_reaches_the_operator(bastion_env: BastionEnv, work: Path) -> None:
    env = bastion_env
    f = work / "g"
    f.write_text("x")
    proc, rid = held(env, "alice", f"chmod 640 {f}")
    for words in (("deny", str(rid)), ("deny", str(rid), "--reason", "  "), ("deny", str(rid), "-r")):
        bare = ssh(env, "bob", *words)
        assert bare.returncode == 2, words
    assert "a reason is required" in ssh(env, "bob", "deny", str(rid)).stderr
    assert proc.poll() is None
    # as typed in a shell: ssh joins the words with spaces, the apostrophe arrives bare, and it is all the reason
    no = ssh(env, "bob", "deny", str(rid), "--reason", "don't, not during the freeze")
    assert no.returncode == 0 and f"#{rid}: denied" in no.stdout, no.stderr
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "denied by bob: don't, not during the freeze" in err


def test_self_approval_is_refused_and_two_approvers_are_two(bastion_env: BastionEnv, work: Path) -> None:
    env = bastion_env
    f = work / "h"
    f.write_text("x")
    proc, rid = held(env, "carol", f"chmod 600 {f}")  # carol operates and reviews
    assert f"#{rid} " not in ssh(env, "carol", "review").stdout  # not in her own queue
    mine = ssh(env, "carol", "approve", str(rid))
    assert mine.returncode == 1 and "your own request" in mine.stderr
    hidden = ssh(env, "carol", "review", str(rid))
    assert hidden.returncode == 1 and "no such request among those you may decide" in hidden.stderr
    assert ssh(env, "bob", "approve", str(rid)).returncode == 0
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    proc, rid = held(env, "alice", f"chown root {f} && echo OWNED")
    first = ssh(env, "bob", "approve", str(rid))
    assert first.returncode == 0 and "approval is recorded (1/2)" in first.stdout and "waits for 1 more" in first.stdout
    twice = ssh(env, "bob", "approve", str(rid))
    assert twice.returncode == 1  # the same reviewer does not count twice
    assert proc.poll() is None
    second = ssh(env, "dave", "approve", str(rid))
    assert second.returncode == 0 and f"#{rid}: approved" in second.stdout
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == "OWNED\n"


@pytest.mark.parametrize(("words", "says"), [
    (("approve",), "which request?"),
    (("approve", "12x"), "is not a request number"),
    (("approve", "1", "2"), "unexpected '2'"),
    (("approve", "1", "--force"), "unexpected '--force'"),
    (("review", "--reason", "x"), "unexpected '--reason'"),
    (("deny", "1", "--reason"), "--reason needs a value"),
    (("approve", "'unbalanced"), "cannot split the arguments"),
])
def test_a_malformed_review_command_is_refused_with_its_usage(bastion_env: BastionEnv, words: tuple[str, ...],
                                                              says: str) -> None:
    out = ssh(bastion_env, "bob", *words)
    assert out.returncode == 2 and says in out.stderr and "ssh " in out.stderr and "review" in out.stderr


def test_what_a_request_draws_on_a_terminal_is_written_out(bastion_env: BastionEnv, work: Path) -> None:
    """A command with a terminal escape in it (clear the screen, move the cursor) is listed with the escape written
    out: the reviewer reads what runs."""
    env = bastion_env
    name = f"{work}/a\x1b[2J\x1b[Hb"
    proc, rid = held(env, "alice", f"chmod 600 '{name}'")
    listed = ssh(env, "bob", "review", str(rid))
    assert "\x1b" not in listed.stdout and "\\x1b[2J\\x1b[Hb" in listed.stdout
    assert ssh(env, "bob", "deny", str(rid), "--reason", "what is that name?").returncode == 0
    proc.communicate(timeout=30)


def test_review_n_with_a_terminal_opens_the_queue_on_that_request(bastion_env: BastionEnv, work: Path) -> None:
    env = bastion_env
    f = work / "i"
    f.write_text("x")
    other, other_id = held(env, "alice", f"chmod 604 {f}")
    proc, rid = held(env, "alice", f"chmod 600 {f} && echo DONE")
    with Terminal(ssh_argv(env.keys["bob"], env.port, "bob", "-t", "review", str(rid)), cols=140, rows=30) as bob:
        bob.wait_for(r"Pending approval requests")
        bob.wait_for(rf"request #{rid}: a: approve")
        bob.send("a")
        bob.wait_for(rf"Approve request #{rid}\?")  # the cursor is on the request named, not the first one
        bob.send("y")
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and out == "DONE\n"
    assert other.poll() is None
    assert ssh(env, "bob", "deny", str(other_id), "--reason", "one at a time").returncode == 0
    other.communicate(timeout=30)
