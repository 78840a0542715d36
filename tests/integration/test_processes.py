"""``processes: per-connection``: each SSH connection is served by a process of its own. Checked end to end with
the stock client: two connections, two processes (neither the supervisor); a connection process killed mid-session
takes only its own session, which the node process marks interrupted with its recording chained, while another
connection goes on and the limits free its slot; the daemon killed with ``kill -9`` takes every connection process
with it; and SIGHUP reaches the connection processes (a new resource is usable on a connection opened before)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.db import Store
from tests.integration.conftest import BastionEnv, own_bastion
from tests.support.procs import children
from tests.support.ssh_client import ssh_argv

pytestmark = pytest.mark.slow
SLOW = "seq 1 100000 | while read i; do echo line-$i; sleep 0.05; done"


@pytest.fixture()
def env(bastion_env: BastionEnv, tmp_path: Path) -> Iterator[BastionEnv]:
    with own_bastion(bastion_env, tmp_path, extra_top="processes: per-connection\n") as e:
        yield e


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def active(store: Store, n: int, timeout: float = 30) -> list[str]:
    """The ids of the ``n`` active sessions, once there are that many."""
    deadline = time.monotonic() + timeout
    while len(ids := [s.id for s in store.sessions() if s.outcome == "active"]) != n:
        assert time.monotonic() < deadline, f"{len(ids)} active sessions, not {n}"
        time.sleep(0.1)
    return ids


def connection_processes(env: BastionEnv, n: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(pids := [p for p in children(env.proc.pid) if comm(p) == "bastion-conn"]) != n:
        assert time.monotonic() < deadline, [(p, comm(p)) for p in children(env.proc.pid)]
        time.sleep(0.1)
    return pids


def exec_client(env: BastionEnv, command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", command, tty=False),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_process_per_connection_and_a_dead_one_takes_only_its_own(env: BastionEnv) -> None:
    store = Store(load_config(env.config).database_url)
    first, second = exec_client(env, SLOW), exec_client(env, SLOW)
    try:
        sids = active(store, 2)
        pids = connection_processes(env, 2)  # forked by the supervisor itself, named for ps
        assert env.proc.pid not in pids and [p for p in children(env.proc.pid) if comm(p) == "bastion-node"]
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while [s.outcome for s in map(store.session, sids) if s is not None].count("active") != 1:
            assert time.monotonic() < deadline, "the node process never closed the dead one's books"
            time.sleep(0.1)
        rows = [store.session(sid) for sid in sids]
        dead = next(r for r in rows if r is not None and r.outcome != "active")
        assert dead.outcome == "interrupted" and dead.sha256  # its recording chained as far as it got
        ok = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", "echo still-served",
                                     tty=False), capture_output=True, text=True, timeout=60)
        assert ok.stdout == "still-served\n", ok.stderr
        assert env.bastion("audit", "verify").returncode == 0
    finally:
        for c in (first, second):
            c.kill()
            c.wait()


def test_kill_9_of_the_daemon_takes_every_connection_process(env: BastionEnv) -> None:
    store = Store(load_config(env.config).database_url)
    client = exec_client(env, SLOW)
    try:
        active(store, 1)
        (pid,) = connection_processes(env, 1)
        everyone = tree(env.proc.pid)
        assert pid in everyone
        env.proc.send_signal(signal.SIGKILL)
        env.proc.wait()
        deadline = time.monotonic() + 10
        while alive := [p for p in everyone[1:] if comm(p).startswith("bastion")]:
            assert time.monotonic() < deadline, alive
            time.sleep(0.1)
        assert client.wait(30) != 0
    finally:
        client.kill()
        client.wait()


def test_reload_reaches_open_connections(env: BastionEnv) -> None:
    """A connection held open (OpenSSH multiplexing: later sessions ride on it) sees a resource added by reload."""
    mux = Path(tempfile.mkdtemp(prefix="bx-", dir="/tmp")) / "m"
    base = ssh_argv(env.keys["alice"], env.port, "alice", tty=False)
    master = [base[0], "-M", "-S", str(mux), "-o", "ControlPersist=yes", "-N", "-f", *base[1:]]
    assert subprocess.run(master, capture_output=True, text=True, timeout=60).returncode == 0
    try:
        def run(res: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([base[0], "-S", str(mux), *base[1:], res, "--", "echo via-the-same-connection"],
                                  capture_output=True, text=True, timeout=60)

        assert run("web").stdout == "via-the-same-connection\n"
        before = run("web2")
        assert before.returncode != 0 and "web2" in before.stderr  # not yet a resource
        text = env.config.read_text()
        env.config.write_text(text.replace("  web:\n", "  web2:\n" + _copy_of_web(text) + "  web:\n", 1))
        env.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while (after := run("web2")).returncode != 0:
            assert time.monotonic() < deadline, after.stderr
            time.sleep(0.2)
        assert after.stdout == "via-the-same-connection\n"
    finally:
        subprocess.run([base[0], "-S", str(mux), "-O", "exit", *base[1:]], capture_output=True, timeout=30)


def _copy_of_web(text: str) -> str:
    """The lines of resource ``web`` (to add the same target under another name)."""
    lines = text.split("\n")
    start = lines.index("  web:") + 1
    body = []
    for ln in lines[start:]:
        if not ln.startswith("    "):
            break
        body.append(ln)
    return "\n".join(body) + "\n"


def test_a_request_held_by_a_dead_connection_process_is_cancelled(env: BastionEnv) -> None:
    """Killed while its operator waits for a reviewer: the request cannot be approved into nobody's session."""
    from bastion.store.approvals import ApprovalStore

    store = Store(load_config(env.config).database_url)
    approvals = ApprovalStore(store)
    client = exec_client(env, "chmod 600 /nonexistent")  # held for a reviewer by the web policy
    try:
        deadline = time.monotonic() + 30
        while not (pending := approvals.pending()):
            assert time.monotonic() < deadline, "the command was never held"
            time.sleep(0.1)
        (pid,) = connection_processes(env, 1)
        os.kill(pid, signal.SIGKILL)
        while (req := approvals.get(pending[0].id)) is not None and req.status == "pending":
            assert time.monotonic() < deadline + 30, "the dead process's request stayed pending"
            time.sleep(0.1)
        assert req is not None and req.status == "cancelled"
    finally:
        client.kill()
        client.wait()
