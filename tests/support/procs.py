"""Looking at the daemon's children from outside: process trees, initial environments, /proc status fields."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    out = []
    for child in children(pid):
        out += [child, *descendants(child)]
    return out


def initial_env(pid: int) -> dict[bytes, bytes]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split(b"=", 1) for kv in raw.split(b"\0") if b"=" in kv)


def cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def wait_descendant(root: int, match: Callable[[int], bool], before: set[int] | frozenset[int] = frozenset(),
                    timeout: float = 15) -> int:
    """The first new process under ``root`` that ``match`` accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in set(descendants(root)) - before:
            if match(pid):
                return pid
        time.sleep(0.1)
    raise AssertionError("no such process appeared")


def stop_ssh_client(proc: subprocess.Popen[Any], timeout: float = 15, sig: int = signal.SIGTERM) -> int:
    """SIGTERM (or ``sig``: SIGINT is Ctrl-C on a client without a terminal) an ``ssh`` client that waits for
    nothing (``-N``, a held command) and wait for it, repeating the signal once a second.

    OpenSSH 9.2's client loop checks its quit flag and then calls plain ``poll()`` (9.3 moved to ``ppoll`` with the
    signals masked): a SIGTERM that lands between the two is seen only on the next wakeup, and an idle ``-N`` client
    has none. A second signal interrupts the ``poll()``; the bastion is not involved.
    """
    deadline = time.monotonic() + timeout
    while True:
        proc.send_signal(sig)
        try:
            return proc.wait(1)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise
