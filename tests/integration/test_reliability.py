"""Reliability under faults and load, sized for a 2-core machine: the daemon killed mid-session, a target that
vanishes, many concurrent recorded sessions (what the client got is what the cast holds, byte for byte), and a
stalled client (memory stays bounded, other sessions go on)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.db import Store
from recorder.asciicast import read_cast
from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port
from tests.support.ssh_client import ssh_argv
from tests.support.sshd import start_sshd
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow


@pytest.fixture()
def own_env(bastion_env: BastionEnv, tmp_path: Path) -> Iterator[BastionEnv]:
    """A daemon of its own (tests here kill it, or its target)."""
    base = bastion_env
    (tmp_path / "state").mkdir()
    target = start_sshd(tmp_path / "sshd", authorized_keys=[Path(f"{base.target_key}.pub").read_text()])
    port = free_port()
    cfg = write_config(tmp_path, port, base.keys, target, base.target_key)
    log = tmp_path / "bastion.out"
    proc = start_bastion(cfg, port, log)
    env = BastionEnv(tmp_path, cfg, port, base.keys, target, base.target_key, proc, log)
    try:
        yield env
    finally:
        stop_bastion(env.proc)
        target.stop()


def store_of(env: BastionEnv) -> Store:
    return Store(load_config(env.config).database_url)


def output_of(path: str) -> str:
    return "".join(ev.data for ev in read_cast(path).events if ev.code == "o")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_kill_9_mid_session(own_env: BastionEnv) -> None:
    env = own_env
    client = subprocess.Popen(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--",
                                       "seq 1 400 | while read i; do echo line-$i; sleep 0.01; done", tty=False),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    store = store_of(env)
    deadline = time.monotonic() + 20
    while True:
        active = [s for s in store.sessions() if s.outcome == "active"]
        if active and Path(active[0].recording).exists() and "line-20\n" in output_of(active[0].recording):
            break
        assert time.monotonic() < deadline, "the session never got going"
        time.sleep(0.05)
    env.proc.send_signal(signal.SIGKILL)
    env.proc.wait()
    client.wait(30)
    cast = read_cast(active[0].recording)  # valid up to the last event before the kill
    assert not cast.errors, cast.errors
    lines = output_of(active[0].recording).split("\n")[:-1]
    assert len(lines) >= 20 and lines == [f"line-{i}" for i in range(1, len(lines) + 1)]
    env.proc = start_bastion(env.config, env.port, env.log)
    row = store.session(active[0].id)
    assert row is not None and row.outcome == "interrupted" and row.sha256
    assert hashlib.sha256(Path(row.recording).read_bytes()).hexdigest() == row.sha256
    verify = env.bastion("audit", "verify")
    assert verify.returncode == 0, verify.stdout
    deadline = time.monotonic() + 30  # the restarted daemon indexes what the dead one could not
    while time.monotonic() < deadline:
        hits = json.loads(env.bastion("audit", "search", "line-20", "--json").stdout or "[]")
        if hits:
            break
        time.sleep(0.3)
    assert [h["session"] for h in hits] == [row.id]
    out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", "echo alive", tty=False),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == "alive\n"


def test_target_vanishes_mid_session(own_env: BastionEnv) -> None:
    env = own_env
    with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", tty=True), cols=100, rows=30) as t:
        t.wait_for(r"real sshd on loopback")
        t.send_key("enter")
        t.wait_for_raw(r"[#$] \Z")
        t.send("echo still-here\r")
        t.wait_for(r"still-here")
        # the target host dies: its sshd and every session process of it
        children = subprocess.run(["pgrep", "-P", str(env.target.proc.pid)], capture_output=True, text=True)
        env.target.proc.send_signal(signal.SIGKILL)
        for pid in children.stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        t.wait_for(r"web: connection to the target lost")  # back in the menu, told why
        t.wait_for(r"real sshd on loopback")
        t.send_key("enter")  # and trying again says the target is down, the menu stays
        t.wait_for(r"web: cannot connect to the target")
        t.send("q")
        assert t.wait_exit() == 0
    rows = [s for s in store_of(env).sessions() if s.mode == "interactive"]
    assert rows[0].outcome == "lost" and rows[0].sha256


def test_concurrent_sessions_cast_equals_what_the_client_got(own_env: BastionEnv) -> None:
    env = own_env
    n = 16

    def one(i: int) -> tuple[str, str, str]:
        cmd = f"seq -f 'session-{i}-row-%06g' 1 {4000 + i * 97}; printf 'tail-{i}'"
        out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", cmd, tty=False),
                             capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return cmd, out.stdout.decode(), out.stderr.decode()

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    by_command = {s.command: s for s in store_of(env).sessions(limit=100)}
    for i, (cmd, got, err) in enumerate(results):
        assert got.endswith(f"tail-{i}") and got.count("\n") == 4000 + i * 97
        recorded = output_of(by_command[cmd].recording)
        # the recording holds stderr too: what the target's shell startup may print (16 shells at once on this
        # machine can race in a shell rc file) is what the client got on stderr; the rest is stdout, byte for byte
        for line in err.splitlines(keepends=True):
            assert line in recorded, (line, cmd)
            recorded = recorded.replace(line, "", 1)
        assert recorded == got


def test_stalled_client_keeps_memory_bounded(own_env: BastionEnv) -> None:
    env = own_env
    base = rss_kb(env.proc.pid)
    # 400 MB of output toward a client that reads nothing
    stalled = subprocess.Popen(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--",
                                        "head -c 400000000 /dev/zero | tr '\\0' x", tty=False),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        time.sleep(6)
        peak = max(rss_kb(env.proc.pid) for _ in range(10) if time.sleep(0.2) is None)
        t0 = time.monotonic()
        other = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", "echo unaffected",
                                        tty=False), capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        assert other.stdout == "unaffected\n" and took < 10
        assert peak - base < 64 * 1024, f"daemon grew by {(peak - base) // 1024} MB behind a stalled client"
        sess = next(s for s in store_of(env).sessions() if s.outcome == "active")
        recorded = Path(sess.recording).stat().st_size
        assert 100_000 < recorded < 50_000_000, recorded  # it ran, then the target was paused: not 400 MB recorded
    finally:
        stalled.kill()
        stalled.wait()
