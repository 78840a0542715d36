"""Red-team probes of issue 22 (moderated sessions, review from any SSH client), through the stock OpenSSH client
against a real daemon in front of a real sshd.

A probe that finds a hole is ``xfail(strict=True, reason="HOLE: ...")``: it asserts what the bastion promises, and
fails today. Every other probe passes: the defence held.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.oversight.moderation import STALE
from bastion.store.approvals import ApprovalStore
from bastion.store.db import Store
from tests.integration.conftest import BastionEnv, own_bastion
from tests.integration.test_approvals_e2e import wait_stderr_line
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
PROMPT = r"[#$] \Z"
GRACE = 4


@pytest.fixture(scope="module")
def env(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    """``web-moderated`` (no policy, one moderator of role reviewers, 4 s grace), ``web-quick`` (chmod held for any
    reviewer of the resource, expiring after 3 s) and a narrow reviewer role for eve (``secret-*`` only)."""
    base = bastion_env
    d = tmp_path_factory.mktemp("issue22")
    text = base.config.read_text()
    web = re.search(r"^  web:\n(?:    .*\n)+", text, re.M)
    assert web is not None
    # no command policy: what the moderator watches is all there is (a policy would block `sh` before any wait)
    moderated = web.group().replace("  web:\n", "  web-moderated:\n", 1).replace("    policy: guarded\n", "") + (
        "    moderators: {roles: [reviewers], count: 1}\n"
        f"    moderator_grace: {GRACE}\n"
        "    moderator_wait: 60\n")
    quick = web.group().replace("  web:\n", "  web-quick:\n", 1).replace("policy: guarded", "policy: quick")
    policies = ("  quick:\n    default: allow\n    rules:\n"
                "      - {name: quick-chmod, programs: [chmod], action: require_approval, timeout: 3}\n")
    roles = '  narrow: {groups: [auditors], review: ["secret-*"]}\n'
    with own_bastion(base, d, extra_resources=moderated + quick, extra_policies=policies, extra_roles=roles) as e:
        yield e


@pytest.fixture()
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="i22", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# -- helpers ---------------------------------------------------------------------------------------------------------
def store(env: BastionEnv) -> Store:
    return Store(load_config(env.config).database_url)


def ssh(env: BastionEnv, user: str, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_argv(env.keys[user], env.port, user, *words, tty=False), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def popen(argv: list[str], stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sid_of(text: str) -> str:
    m = re.search(r"observe (\S+)\)", text)
    assert m is not None, text
    return m.group(1)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def observe(env: BastionEnv, user: str, sid: str) -> Terminal:
    t = Terminal(ssh_argv(env.keys[user], env.port, user, "-t", "observe", sid), cols=140, rows=30)
    t.__enter__()
    return t


def open_moderated(env: BastionEnv, user: str = "alice") -> Terminal:
    t = Terminal(ssh_argv(env.keys[user], env.port, user, "-t", "web-moderated"), cols=140, rows=30)
    t.__enter__()
    t.wait_for_raw(r"waiting for a moderator")
    return t


def moderated_shell(env: BastionEnv) -> tuple[Terminal, Terminal]:
    """alice's interactive session on web-moderated, open and at its prompt, with bob watching."""
    alice = open_moderated(env)
    bob = observe(env, "bob", sid_of(alice.raw_text()))
    alice.wait_for_raw(r"moderated by bob: the session opens")
    alice.wait_for_raw(PROMPT)
    return alice, bob


def held(env: BastionEnv, resource: str, command: str, user: str = "alice") -> tuple[subprocess.Popen[str], int]:
    """``user`` runs ``command`` on ``resource`` in the exec form; it waits for approval: the request's number."""
    proc = popen(ssh_argv(env.keys[user], env.port, user, resource, "--", command, tty=False))
    wait_stderr_line(proc, "waiting for approval")
    reqs = ApprovalStore(store(env)).pending()
    rid = max(r.id for r in reqs if r.requester == user and r.text == command)
    return proc, rid


# -- moderated sessions: input while nobody watches -----------------------------------------------------------------
REFUSED = "is moderated: it opens only with a terminal"


def test_stdin_piped_to_a_moderated_resource_is_refused_not_run_later(env: BastionEnv) -> None:
    """Without a terminal a moderator has no screen to watch, and input sent before one joined could not be told
    from input sent after: the session is refused before the target is contacted, its stdin never run."""
    proc = popen(ssh_argv(env.keys["alice"], env.port, "alice", "web-moderated", "--", "sh", tty=False),
                 stdin=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write("echo PIPED-$((2+3))\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert REFUSED in err and "PIPED-5" not in out and proc.returncode == 1


# the end of input while paused is dropped like a key: tests/unit/test_relay_pause.py (through an sshd
# target with a pty, a channel EOF never reaches the shell anyway, so an end-to-end probe could not fail)


def test_keys_typed_while_waiting_are_dropped_with_a_terminal(env: BastionEnv) -> None:
    alice = open_moderated(env)
    try:
        alice.send("echo TYPED-$((9*9))\r")
        with observe(env, "bob", sid_of(alice.raw_text())):
            alice.wait_for_raw(r"the session opens")
            alice.wait_for_raw(PROMPT)
            alice.send("echo MARK-$((1+2))\r")
            alice.wait_for(r"MARK-3")
            assert "TYPED-81" not in alice.raw_text()
            alice.send("exit\r")
            alice.wait_exit(30)
    finally:
        alice.close()


@pytest.mark.parametrize("form", ["exec", "scp", "sftp", "jump"])
def test_other_ways_in_wait_for_a_moderator_too(env: BastionEnv, work: Path, form: str) -> None:
    """USER+RESOURCE (exec, scp, sftp) and a -J hop (ProxyCommand ... -W, what -J does) to web-moderated, none with
    a terminal: refused (no moderator could watch them), nothing reaches the target."""
    key, port = str(env.keys["alice"]), str(env.port)
    opts = ["-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o",
            "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o",
            "BatchMode=yes"]
    src, dst = work / "src", work / "dst"
    src.write_text("payload\n")
    if form == "exec":
        argv = ssh_argv(env.keys["alice"], env.port, "alice+web-moderated", f"touch {dst}", tty=False)
    elif form == "scp":
        argv = ["scp", "-O", "-P", port, *opts, str(src), f"alice+web-moderated@127.0.0.1:{dst}"]
    elif form == "sftp":
        (work / "batch").write_text(f"put {src} {dst}\n")
        argv = ["sftp", "-P", port, *opts, "-b", str(work / "batch"), "alice+web-moderated@127.0.0.1"]
    else:
        proxy = " ".join(["ssh", *opts, "-p", port, "-W", "%h:%p", "alice@127.0.0.1"])
        argv = ["ssh", *opts, "-o", f"ProxyCommand={proxy}", "-p", "22", "-T", "alice@web-moderated",
                f"touch {dst}"]
    proc = popen(argv)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert REFUSED in err or form in ("scp", "sftp") and proc.returncode != 0, err
    assert not dst.exists()


# -- moderated sessions: who counts -----------------------------------------------------------------------------------
def test_a_second_connection_of_the_operator_is_not_her_moderator(env: BastionEnv) -> None:
    """carol operates and reviews: her own observation does not open her session (nor does it from F4)."""
    carol = open_moderated(env, "carol")
    try:
        sid = sid_of(carol.raw_text())
        with observe(env, "carol", sid) as own:
            own.wait_for_raw(r"waiting for a moderator")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                assert "the session opens" not in carol.raw_text()
                time.sleep(0.1)
    finally:
        carol.close()


def test_a_killed_moderator_client_stops_counting(env: BastionEnv) -> None:
    alice, bob = moderated_shell(env)
    try:
        os.kill(bob.child.pid, signal.SIGKILL)  # the moderator's own ssh process (started here)
        alice.wait_for_raw(r"input paused: no moderator is watching", timeout=STALE + 3)
        alice.wait_for_raw(rf"no moderator watched for {GRACE}s", timeout=GRACE + 10)
    finally:
        bob.close()
        alice.close()


def test_a_frozen_moderator_client_stops_counting(env: BastionEnv) -> None:
    alice, bob = moderated_shell(env)
    try:
        os.kill(bob.child.pid, signal.SIGSTOP)  # the moderator's own ssh process (started here)
        try:
            alice.wait_for_raw(r"input paused: no moderator is watching", timeout=STALE + 3)
        finally:
            os.kill(bob.child.pid, signal.SIGCONT)
    finally:
        bob.close()
        alice.close()


def test_keys_and_breaks_while_paused_are_dropped(env: BastionEnv) -> None:
    """Keys and ~B (a break: Relay.send_break is gated like a key) while no moderator watches: dropped, the notice
    says so, and the session still ends after the grace period."""
    alice, bob = moderated_shell(env)
    try:
        bob.send("q")
        alice.wait_for_raw(r"input paused")
        alice.send("\r~B")
        alice.wait_for_raw(r"what you type is dropped")
        alice.wait_for_raw(rf"no moderator watched for {GRACE}s", timeout=GRACE + 10)
    finally:
        bob.close()
        alice.close()


# -- review from any SSH client -------------------------------------------------------------------------------------
@pytest.mark.parametrize("sep", ["\n", "\x1c", "\u2028"])
def test_review_shows_the_whole_held_command(env: BastionEnv, work: Path, sep: str) -> None:
    f = work / "f"
    f.write_text("x")
    command = f"chmod 600 {f} " + (f"'{sep * 24}'" if sep != "\n" else sep * 24) + "; echo HIDDEN-TAIL"
    proc, rid = held(env, "web", command)
    try:
        listed = ssh(env, "bob", "review", str(rid))
        assert listed.returncode == 0, listed.stderr
        whole = ssh(env, "bob", "review")
    finally:
        ssh(env, "bob", "deny", str(rid), "--reason", "probe")
        stop(proc)
    assert "HIDDEN-TAIL" in listed.stdout  # `review N`: the whole text
    # the list: whole, or it says what it left out and where to read it
    assert "HIDDEN-TAIL" in whole.stdout or f"more line(s): ssh -p {env.port} bastion review {rid}" in whole.stdout


@pytest.mark.parametrize(("words", "says"), [
    (("approve", "1", "--reason", "x", "2"), None),  # the reason is "x 2": request 1 only (no such request: 1)
    (("approve", "--", "1"), None),  # "--" separates like "RES -- CMD": approve 1
    (("approve", "\uff11"), "is not a request number"),
    (("approve", "\u0661"), "is not a request number"),  # Arabic-Indic one
    (("approve", "+1"), "is not a request number"),
    (("approve", "1", "-r", "ok", "--json"), None),  # all of it a reason
    (("deny", "1", "--reason", "\x1b[2Jlooks fine"), "control characters"),
    (("deny", "1", "--reason", "ok\u202eenif"), "control characters"),
    (("deny", "1", "--reason", "line\u2028two"), "control characters"),
    (("deny", "1", "--reason", "x" * 501), "longer than 500"),
    (("deny", "1", "--reason=", "x"), None),
    (("review", "1", "2"), "unexpected '2'"),
])
def test_review_parse_confusion(env: BastionEnv, words: tuple[str, ...], says: str | None) -> None:
    out = ssh(env, "bob", *words)
    if says is not None:
        assert out.returncode == 2 and says in out.stderr, out.stderr
    else:  # parsed: refused later (request 1 is long decided), never a second request touched
        assert out.returncode == 1 and "refused" in out.stderr, out.stderr


def test_review_refusals(env: BastionEnv, work: Path) -> None:
    """Self-approval, a reviewer of other resources, an expired request, a withdrawn one."""
    f = work / "g"
    f.write_text("x")
    proc, rid = held(env, "web-quick", f"chmod 600 {f}", user="carol")  # carol operates and reviews
    try:
        narrow = ssh(env, "eve", "approve", str(rid))  # eve reviews secret-* only
        assert narrow.returncode == 1 and "may not decide" in narrow.stderr, narrow.stderr
        assert f"#{rid} " not in ssh(env, "eve", "review").stdout
        own = ssh(env, "carol", "approve", str(rid))
        assert own.returncode == 1 and "your own request" in own.stderr, own.stderr
    finally:
        _, err = proc.communicate(timeout=30)  # no decision: it expires after 3 s
    assert proc.returncode != 0 and "expired" in err, err
    expired = ssh(env, "bob", "approve", str(rid))
    assert expired.returncode == 1 and "refused" in expired.stderr
    proc, rid = held(env, "web", f"chmod 644 {f}")
    stop(proc)  # the operator hangs up: the request is withdrawn or cancelled
    deadline = time.monotonic() + 20
    while ApprovalStore(store(env)).get(rid).status == "pending":  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    late = ssh(env, "bob", "approve", str(rid))
    assert late.returncode == 1 and "refused" in late.stderr
