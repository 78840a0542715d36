"""Several nodes on one PostgreSQL store: a reviewer on node B decides a request held on node A (B's queue hears of
it through LISTEN/NOTIFY), sessions and search span the nodes, a reviewer on B observes and terminates a session
on A, and when node A dies its sessions are marked interrupted by B once A's heartbeat is overdue."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.store.db import Store
from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port
from tests.support.postgres import scratch_database
from tests.support.review import approve
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow


@pytest.fixture()
def pg_url() -> Iterator[str]:
    with scratch_database("bastion_nodes") as url:
        yield url


@pytest.fixture()
def nodes(bastion_env: BastionEnv, pg_url: str, tmp_path: Path) -> Iterator[dict[str, BastionEnv]]:
    base = bastion_env
    shared = tmp_path / "recordings"  # shared storage: one directory both nodes write
    out: dict[str, BastionEnv] = {}
    try:
        for name in ("A", "B"):
            d = tmp_path / name
            (d / "state").mkdir(parents=True)
            port = free_port()
            cfg = write_config(d, port, base.keys, base.target, base.target_key,
                               extra_top=f"cluster: {{node_name: node-{name}, heartbeat_seconds: 0.5, "
                                         "node_expiry_seconds: 3}\n")
            cfg.write_text(cfg.read_text().replace("database: sqlite:///state/bastion.db", f"database: {pg_url}")
                           .replace("recordings_dir: state/recordings", f"recordings_dir: {shared}"))
            log = d / "out.log"
            out[name] = BastionEnv(d, cfg, port, base.keys, base.target, base.target_key,
                                   start_bastion(cfg, port, log), log)
        yield out
    finally:
        for env in out.values():
            stop_bastion(env.proc)


def test_reviewer_on_b_decides_a_request_held_on_a(nodes: dict[str, BastionEnv], pg_url: str) -> None:
    a, b = nodes["A"], nodes["B"]
    with Terminal(ssh_argv(b.keys["bob"], b.port, "bob", tty=True), cols=120, rows=30) as bob:
        bob.wait_for(r"roles: .*reviewers")
        bob.send_key("f2")
        bob.wait_for(r"Nothing waits for you")
        held = subprocess.Popen(ssh_argv(a.keys["alice"], a.port, "alice", "web", "--", "chmod 600 /nonexistent",
                                         tty=False), stderr=subprocess.PIPE, text=True)
        try:
            assert held.stderr is not None and "waiting for approval" in held.stderr.readline()
            t0 = time.monotonic()
            bob.wait_for(r"alice\s+web\s+chmod 600 /nonexistent", timeout=10)  # pushed from node A
            pushed = time.monotonic() - t0
            approve(bob)
            _, err = held.communicate(timeout=20)
            assert "approved" in err  # released on node A by bob's decision on node B
        finally:
            held.kill()
    assert pushed < 4.5, f"B's queue showed A's request after {pushed:.1f} s: not pushed (it polls every 5 s)"
    # the sessions list, search and recordings span the nodes
    out = subprocess.run(ssh_argv(a.keys["alice"], a.port, "alice", "web", "--", "echo ON-NODE-$((2*21))",
                                  tty=False), capture_output=True, text=True, timeout=60)
    assert out.stdout == "ON-NODE-42\n"
    rows = json.loads(b.bastion("sessions", "list", "--json").stdout)
    assert any(r["command"] == "echo ON-NODE-$((2*21))" and r["node"] == "node-A" for r in rows)
    assert "node-A" in b.bastion("sessions", "list").stdout
    deadline = time.monotonic() + 30
    while not (hits := json.loads(b.bastion("audit", "search", "ON-NODE-42", "--json").stdout or "[]")):
        assert time.monotonic() < deadline, "A's recording never became searchable from B"
        time.sleep(0.3)
    assert hits[0]["kind"] == "screen"
    assert b.bastion("audit", "verify").returncode == 0


def test_a_dead_node_s_sessions_are_interrupted_by_the_other(nodes: dict[str, BastionEnv], pg_url: str) -> None:
    a, b = nodes["A"], nodes["B"]
    client = subprocess.Popen(ssh_argv(a.keys["alice"], a.port, "alice", "web", "--", "sleep 60", tty=False))
    store = Store(pg_url)
    try:
        deadline = time.monotonic() + 20
        while not any(s.outcome == "active" for s in store.sessions()):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        deadline = time.monotonic() + 30
        while (row := store.sessions()[0]).outcome == "active":
            assert time.monotonic() < deadline, "node B never noticed node A's death"
            time.sleep(0.3)
        assert row.outcome == "interrupted" and row.sha256  # and its recording chained, from shared storage
        while not (expired := [e for e in store.audit_events() if e.action == "node.expired"]):
            assert time.monotonic() < deadline, "no node.expired event"
            time.sleep(0.2)
        assert expired and expired[0].detail["node"] == "node-A" and expired[0].detail["by"] == "node-B"
        assert b.bastion("audit", "verify").returncode == 0
    finally:
        client.kill()
        store.engine.dispose()


def test_reviewer_on_b_observes_and_terminates_a_session_on_a(nodes: dict[str, BastionEnv], pg_url: str) -> None:
    a, b = nodes["A"], nodes["B"]
    client = subprocess.Popen(ssh_argv(a.keys["alice"], a.port, "alice", "web", "--",
                                       "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do "
                                       "echo TICK-$i; sleep 1; done; sleep 60", tty=False),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    store = Store(pg_url)
    try:
        with Terminal(ssh_argv(b.keys["bob"], b.port, "bob", tty=True), cols=140, rows=30) as bob:
            bob.wait_for(r"roles: .*reviewers")
            bob.send_key("f4")
            bob.wait_for(r"alice\s+web\s+ssh\s+exec\s+for i in.*node-A", timeout=20)
            time.sleep(2)
            bob.send_key("enter")  # observed from node A's recording in the shared directory
            first = bob.wait_for(r"TICK-\d+")
            seen = max(int(n) for n in re.findall(r"TICK-(\d+)", first))
            bob.wait_for(rf"TICK-{seen + 2}\b", timeout=10)  # and it goes on as node A records it
            bob.send("q")
            bob.wait_for(r"alice@web \(node node-A\): stopped observing")
            bob.send("t")
            bob.wait_for(r"Terminate alice@web")
            bob.send("off-hours access\r")
            bob.wait_for(r"terminating alice@web on node node-A")
        _, err = client.communicate(timeout=20)
        assert "terminated by bob: off-hours access" in err and client.returncode != 0
        row = next(s for s in store.sessions() if s.user == "alice" and "TICK" in (s.command or ""))
        deadline = time.monotonic() + 20
        while row.outcome == "active":
            assert time.monotonic() < deadline
            time.sleep(0.2)
            row = store.session(row.id)
        cast = Path(row.recording).read_text()
        assert "observed by bob (from node node-B)" in cast  # node A marked its own recording
        observed = [e for e in store.audit_events() if e.action == "session.observe"]
        assert [(e.actor, e.session_id, e.detail["node"]) for e in observed] == [("bob", row.id, "node-A")]
    finally:
        client.kill()
        store.engine.dispose()
