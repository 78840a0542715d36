"""However `bastion demo` ends — SIGTERM, its terminal closing, SIGKILL, Ctrl-C (SIGINT) — nothing it started
outlives it (its PostgreSQL, the identity provider), and a demo killed with SIGKILL does not stand in the way of the
next one in the same state dir. Every demo here shares one state dir and port block: only the first start pays for
initdb, and each later one meets what the one before left."""

from __future__ import annotations

import fcntl
import hashlib
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
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
BANNER_END = "Ctrl-C stops the demo"
REPO = Path(__file__).resolve().parents[2]


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


def start(p: Place) -> tuple[subprocess.Popen[bytes], str]:
    """A demo on pipes, in a session of its own; returns once its banner is out (with what came before it)."""
    proc = subprocess.Popen(demo_argv(p), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    return proc, read_until_banner(proc, proc.stdout.fileno())


def read_until_banner(proc: subprocess.Popen[bytes], fd: int, timeout: float = 90) -> str:
    """What ``proc`` wrote on ``fd`` up to the end of its banner (unbuffered reads: select tells the truth)."""
    seen, deadline = b"", time.monotonic() + timeout
    while BANNER_END.encode() not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            proc.kill()
            proc.wait()
            raise AssertionError(f"demo did not start:\n{seen.decode(errors='replace')}")
        seen += chunk
    return seen.decode(errors="replace")


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


def snapshot(proc: subprocess.Popen[bytes]) -> dict[int, int]:
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
    rest = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0 and "bastion demo stopped" in rest, rest
    wait_all_gone(procs)
    assert not (place.state / "demo.pids").exists()


def test_closing_its_terminal_stops_everything(place: Place) -> None:
    """The pty's master closes (a tmux pane killed, a terminal window closed): the kernel hangs up the demo."""
    master, slave = os.openpty()

    def controlling_tty() -> None:  # in the new session: the pty becomes its terminal, as a terminal's shell's is
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(demo_argv(place), stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=controlling_tty)  # noqa: PLW1509
    os.close(slave)
    try:
        read_until_banner(proc, master)
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
        rest = second.communicate(timeout=60)[0].decode()
    assert second.returncode == 0 and "bastion demo stopped" in rest, rest
    wait_all_gone(procs)


def nothing_to_install() -> str | None:
    """Why scripts/setup --demo would install something in this checkout (then it is no test's to run: pip in a
    shared .venv under other tests' feet), or None. Mirrors the script's own checks: its pip stamp, npm's lock
    files."""
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        return "no .venv"
    version = subprocess.run([python, "--version"], capture_output=True, text=True).stdout.strip()
    want = f"{hashlib.sha256((REPO / 'pyproject.toml').read_bytes()).hexdigest()} {version}"
    stamps = [REPO / ".venv" / name for name in (".bastion-setup", ".bastion-setup-test")]
    if not any(p.exists() and p.read_text().strip() == want for p in stamps):
        return "scripts/setup has not installed this pyproject.toml here yet"
    for d in ("recorder/web", "bastion/demo/oidc"):
        marker = REPO / d / "node_modules" / ".package-lock.json"
        if not marker.exists() or (REPO / d / "package-lock.json").stat().st_mtime > marker.stat().st_mtime:
            return f"npm ci would run in {d}"
    return None


def test_setup_prints_nothing_when_all_is_installed() -> None:
    """What scripts/demo prints before its banner: setup's progress line, erased, and no warning of pip's or npm's
    (their output goes to a log, shown only on a failure). On a terminal, as a person runs it."""
    if why := nothing_to_install():
        pytest.skip(why)
    with Terminal([str(REPO / "scripts" / "setup"), "--demo"], cols=120, rows=20) as t:
        assert t.wait_exit(120) == 0, t.screen_text()
        lines = [line for line in t.screen_text().splitlines() if line.strip()]
    assert len(lines) <= 1, lines
