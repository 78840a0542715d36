"""Segregation of duties end to end: operators and reviewers on real `ssh` connections at once."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.approvals import ApprovalStore
from bastion.store.db import Store
from tests.integration.conftest import BastionEnv
from tests.support.procs import stop_ssh_client
from tests.support.review import approve
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
PROMPT = r"[#$] \Z"


@pytest.fixture()
def tmp_path() -> Iterator[Path]:  # short paths: whole commands fit in the reviewer's queue columns
    d = Path(tempfile.mkdtemp(prefix="bq", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def argv(env: BastionEnv, user: str, *extra: str, tty: bool | None = None) -> list[str]:
    return ssh_argv(env.keys[user], env.port, user, *extra, tty=tty)


def requests(env: BastionEnv) -> ApprovalStore:
    return ApprovalStore(Store(load_config(env.config).database_url))


@contextmanager
def reviewer_queue(env: BastionEnv, user: str = "bob") -> Iterator[Terminal]:
    """A reviewer's TUI, on the approvals screen."""
    with Terminal(argv(env, user, tty=True), cols=120, rows=30) as t:
        t.wait_for(r"roles: .*reviewers")
        t.send_key("f2")
        t.wait_for(r"Pending approval requests")
        yield t


def exec_bg(env: BastionEnv, user: str, command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(argv(env, user, "web", "--", command, tty=False), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_stderr_line(proc: subprocess.Popen[str], needle: str, timeout: float = 15) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if needle in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"{needle!r} not on stderr: {seen!r}")


@pytest.mark.parametrize("spelling", [
    "rm -f {f}", "/bin/rm -f {f}", "\\rm -f {f}", "command rm -f {f}", "sudo rm -f {f}", "$(echo rm) -f {f}",
    "r''m -f {f}", "ls; rm -f {f}", "echo x | xargs rm -f {f}", "sh -c 'rm -f {f}'", "env rm -f {f}",
])
def test_exec_form_blocks_every_spelling(bastion_env: BastionEnv, tmp_path: Path, spelling: str) -> None:
    victim = tmp_path / "victim"
    victim.write_text("still here")
    out = subprocess.run(argv(bastion_env, "alice", "web", "--", spelling.format(f=victim), tty=False),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "blocked by rule 'no-rm'" in out.stderr
    assert victim.read_text() == "still here"


def test_exec_approval_flow_approve_and_deny(bastion_env: BastionEnv, tmp_path: Path) -> None:
    env = bastion_env
    f = tmp_path / "f"
    f.write_text("x")
    f.chmod(0o644)
    with reviewer_queue(env) as bob:
        proc = exec_bg(env, "alice", f"chmod 600 {f} && stat -c %a {f}")
        line = wait_stderr_line(proc, "waiting for approval")
        assert "rule chmod-needs-approval" in line and "Ctrl-C to withdraw" in line
        bob.wait_for(rf"alice\s+web\s+chmod 600 {f}", timeout=5)  # live, without a keypress
        rid = max(r.id for r in requests(env).pending() if r.requester == "alice")
        dialog = approve(bob)  # says what it approves before the deliberate key
        assert f"Approve request #{rid}?" in dialog and "requester: alice" in dialog and "resource: web" in dialog
        assert f"command: chmod 600 {f} && stat -c %a {f}" in dialog
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and out == "600\n", err
        assert "approved by bob" in err
        # the same command again is a new request: approvals are not reusable across sessions
        proc = exec_bg(env, "alice", f"chmod 640 {f}")
        wait_stderr_line(proc, "waiting for approval")
        bob.wait_for(rf"chmod 640 {f}", timeout=5)
        bob.send("d")
        bob.wait_for(r"why\?")
        bob.send("\r")  # no reason yet: the dialog stays, so what is typed next is never a queue shortcut
        bob.wait_for(r"A reason is needed")
        bob.send("not during the freeze, ask again on a Monday\r")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        assert "denied by bob: not during the freeze, ask again on a Monday" in err
    assert oct(f.stat().st_mode & 0o777) == "0o600"


def test_self_approval_is_impossible_and_n_distinct_approvers(bastion_env: BastionEnv, tmp_path: Path) -> None:
    env = bastion_env
    f = tmp_path / "owned"
    f.write_text("x")
    proc = exec_bg(env, "carol", f"chmod 600 {f}")  # carol is an operator AND a reviewer
    wait_stderr_line(proc, "waiting for approval")
    rid = max(r.id for r in requests(env).pending() if r.requester == "carol")
    with reviewer_queue(env, "carol") as carol:
        time.sleep(1)
        assert f"chmod 600 {f}" not in carol.screen_text()  # her own request is not in her queue...
    from bastion.store.approvals import DecisionRefused

    with pytest.raises(DecisionRefused, match="your own request"):  # ...and the store refuses it outright
        requests(env).decide(rid, "carol", True, "")
    with reviewer_queue(env, "bob") as bob:
        bob.wait_for(rf"carol\s+web\s+chmod 600 {f}")
        approve(bob)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    # two distinct reviewers for chown
    proc = exec_bg(env, "alice", f"chown root {f} && echo OWNED")
    wait_stderr_line(proc, "waiting for approval")
    with reviewer_queue(env, "bob") as bob:
        bob.wait_for(rf"chown root {f}.*0/2")
        approve(bob)
        bob.wait_for(r"pending")
        time.sleep(0.5)
        assert proc.poll() is None  # one approval of two: still waiting
    with reviewer_queue(env, "dave") as dave:
        dave.wait_for(rf"chown root {f}.*1/2")
        approve(dave)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == "OWNED\n"


def test_interactive_block_approve_edit_and_withdraw(bastion_env: BastionEnv, tmp_path: Path) -> None:
    env = bastion_env
    f = tmp_path / "g"
    f.write_text("x")
    f.chmod(0o644)
    with Terminal(argv(env, "alice", "web", tty=True), cols=120, rows=30) as alice, reviewer_queue(env) as bob:
        alice.wait_for_raw(PROMPT)
        alice.send(f"rm -f {f}\r")
        alice.wait_for(r"blocked by rule 'no-rm': deleting files is not allowed")
        assert f.exists()
        alice.send(f"chmod 600 {f}; stat -c MODE=%a {f}\r")
        alice.wait_for(r"waiting for approval \(request #\d+, rule chmod-needs-approval\)")
        bob.wait_for(rf"chmod 600 {f}")
        approve(bob)
        alice.wait_for(r"approved by bob")
        alice.wait_for(r"MODE=600")
        # recall the approved line and edit it: the edited text needs its own approval
        alice.send("\x1b[A")
        time.sleep(0.3)
        alice.send("\x17" * 7)  # Ctrl-W back over the seven words
        alice.send(f"chmod 777 {f}\r")
        alice.wait_for(r"waiting for approval .*rule chmod-needs-approval")
        alice.send_key("ctrl-c")
        alice.wait_for(r"request withdrawn")
        bob.wait_for(r"withdrawn")
        alice.send(f"stat -c FINAL=%a {f}\r")
        alice.wait_for(r"FINAL=600")
        alice.send("exit\r")
        alice.wait_exit()
    statuses = [r.status for r in requests(env).recent(requester="alice", limit=3)]
    assert statuses[0] == "withdrawn" and "approved" in statuses


def test_exec_requester_hanging_up_withdraws(bastion_env: BastionEnv, tmp_path: Path) -> None:
    env = bastion_env
    proc = exec_bg(env, "alice", f"chmod 600 {tmp_path}")
    wait_stderr_line(proc, "waiting for approval")
    rid = max(r.id for r in requests(env).pending() if r.requester == "alice")
    stop_ssh_client(proc, sig=signal.SIGINT)  # Ctrl-C on a non-interactive ssh: the client goes away
    deadline = time.monotonic() + 10
    while requests(env).get(rid).status == "pending" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert requests(env).get(rid).status == "withdrawn"


def test_hangups_while_held_or_refused_are_one_log_line(bastion_env: BastionEnv, tmp_path: Path) -> None:
    """A client that goes away while its command waits for reviewers, or while it is being refused, is normal: the
    daemon logs a line, never a traceback, and goes on serving."""
    env = bastion_env
    seen = env.log.stat().st_size
    proc = exec_bg(env, "alice", f"chmod 600 {tmp_path}")
    wait_stderr_line(proc, "waiting for approval")
    rid = max(r.id for r in requests(env).pending() if r.requester == "alice")
    proc.kill()  # kill -9: no goodbye from the client
    proc.wait(10)
    hung_up = rf"alice@\S+: web: the client hung up before it was told: request #{rid} withdrawn"
    deadline = time.monotonic() + 15
    while not re.search(hung_up, env.log.read_text()[seen:]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert requests(env).get(rid).status == "withdrawn"
    # clients killed at every moment of their exec request: before, while and after it is held or blocked
    burst = [exec_bg(env, "alice", f"chmod 600 {tmp_path}" if i % 2 else f"rm -f {tmp_path}/none") for i in range(12)]
    for p in burst:
        p.kill()
        p.communicate(timeout=10)
        time.sleep(0.05)
    deadline = time.monotonic() + 15
    while any(r.requester == "alice" for r in requests(env).pending()) and time.monotonic() < deadline:
        time.sleep(0.1)  # each held one is withdrawn when the daemon sees its client gone
    out = subprocess.run(argv(env, "alice", "web", "--", "echo still serving", tty=False), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and out.stdout == "still serving\n", out.stderr
    log = env.log.read_text()[seen:]
    assert "Traceback" not in log and "Task exception was never retrieved" not in log, log
    assert len(re.findall(hung_up, log)) == 1, log
