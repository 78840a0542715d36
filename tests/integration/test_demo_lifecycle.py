"""However `bastion demo` ends — SIGTERM, its terminal closing, SIGKILL, Ctrl-C (SIGINT) — nothing it started
outlives it (its PostgreSQL, the identity provider), and a demo killed with SIGKILL does not stand in the way of the
next one in the same state dir. Every demo here shares one state dir and port block: only the first start pays for
initdb, and each later one meets what the one before left."""

from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.demo.lifeline import alive, start_time
from tests.support.keys import free_port_block
from tests.support.ssh_client import ssh_argv

pytestmark = pytest.mark.slow
BANNER_END = "Ctrl-C stops the demo"


@dataclass
class Place:
    state: Path
    port: int


@pytest.fixture(scope="module")
def place() -> Iterator[Place]:
    # directly under /tmp: as root, the demo's PostgreSQL runs as `postgres` and must reach the state dir
    state = Path(tempfile.mkdtemp(prefix="bastion-demo-life-", dir="/tmp"))
    yield Place(state, free_port_block(4))
    shutil.rmtree(state, ignore_errors=True)


def demo_argv(p: Place) -> list[str]:
    return [sys.executable, "-m", "bastion.cli", "demo", "--port", str(p.port), "--state-dir", str(p.state)]


def start(p: Place) -> tuple[subprocess.Popen[str], str]:
    """A demo on pipes, in a session of its own; returns once its banner is out (with what came before it)."""
    proc = subprocess.Popen(demo_argv(p), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    out, deadline = "", time.monotonic() + 90
    while BANNER_END not in out:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            proc.wait()
            raise AssertionError(f"demo did not start:\n{out}")
        out += line
    return proc, out


def descendants(root: int) -> dict[int, int]:
    """Every process below ``root`` now, by pid, with its start time (walking /proc's parent links)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        for child, parent in parents.items():
            if parent == pid and (start := start_time(child)) is not None:
                found[child] = start
                todo.append(child)
    return found


def snapshot(proc: subprocess.Popen[str]) -> dict[int, int]:
    """The demo's processes; its PostgreSQL (with its workers) and identity provider must be among them."""
    found = descendants(proc.pid)
    names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in found if start_time(pid) is not None}
    assert "postgres" in names and "node" in names, names
    return found


def wait_all_gone(procs: dict[int, int], timeout: float = 45) -> None:
    """Until none of ``procs`` runs (a pid given to another process since does not count)."""
    deadline = time.monotonic() + timeout
    while (left := [pid for pid, start in procs.items() if alive(pid, start)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in left
                 if os.path.exists(f"/proc/{pid}")}
    assert not survivors, f"outlived the demo: {survivors}"


def test_a_port_held_by_another_program_is_named(tmp_path: Path) -> None:
    port = free_port_block(4)
    with socket.socket() as held:
        held.bind(("127.0.0.1", port + 2))
        held.listen()
        out = subprocess.run(demo_argv(Place(tmp_path / "state", port)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"port {port + 2} (for demo-db) is in use by pid {os.getpid()}" in out.stdout, out.stdout
    assert not list((tmp_path / "state").glob("pg")), "nothing started"


def test_sigterm_stops_everything_and_a_second_demo_is_refused_meanwhile(place: Place) -> None:
    proc, banner = start(place)
    procs = snapshot(proc)
    assert banner.lstrip().startswith("bastion demo is running"), banner  # nothing before the banner
    second = subprocess.run(demo_argv(place), capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"another demo (pid {proc.pid}) is running in {place.state}" in second.stdout, second.stdout
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "bastion demo stopped" in rest, rest
    wait_all_gone(procs)
    assert not (place.state / "demo.pids").exists()


def test_closing_its_terminal_stops_everything(place: Place) -> None:
    """The pty's master closes (a tmux pane killed, a terminal window closed): the kernel hangs up the demo."""
    master, slave = os.openpty()

    def controlling_tty() -> None:  # in the new session: the pty becomes its terminal, as a terminal's shell's is
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(demo_argv(place), stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=controlling_tty, text=True)  # noqa: PLW1509
    os.close(slave)
    seen, deadline = b"", time.monotonic() + 90
    try:
        while BANNER_END.encode() not in seen:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"demo did not start:\n{seen.decode(errors='replace')}"
            seen += os.read(master, 65536)
        procs = snapshot(proc)
    finally:
        os.close(master)
    assert proc.wait(timeout=60) == 0
    wait_all_gone(procs)
    assert not (place.state / "demo.pids").exists()


def test_after_sigkill_a_second_demo_starts_and_sigint_stops_it(place: Place) -> None:
    proc, _ = start(place)
    first = snapshot(proc)
    proc.kill()
    proc.communicate(timeout=60)
    second, banner = start(place)
    try:
        # the stale record is found and reported in one line; what the first left is gone by now
        stale = re.search(r"^bastion demo: the last demo in \S+ \(pid (\d+)\) did not stop cleanly; .*$", banner,
                          re.M)
        assert stale is not None and int(stale.group(1)) == proc.pid, banner
        wait_all_gone(first)
        out = subprocess.run(ssh_argv(place.state / "keys" / "alice", place.port, "alice", "demo-shell", "--",
                                      "echo", "ok", tty=False), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
        procs = snapshot(second)
    finally:
        second.send_signal(signal.SIGINT)
        rest, _ = second.communicate(timeout=60)
    assert second.returncode == 0 and "bastion demo stopped" in rest, rest
    wait_all_gone(procs)
