"""The demo's processes end with it, however it ends.

The demo starts servers of its own (PostgreSQL, the identity provider) in sessions of their own, so that a Ctrl-C at
the terminal reaches the demo alone and it stops them in order. That also means nothing ties them to the demo when
it dies without its cleanup (``kill -9``, or a default action): each is therefore started with a parent-death signal
(:func:`die_with_demo`), and recorded, with its start time, in ``STATE/demo.pids`` (:class:`Lifeline`). The next demo
in that directory stops whatever of the last one is still alive before it starts its own, says so in one line, and
goes on; a demo still running there (it holds ``STATE/demo.lock``) is named and left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

PR_SET_PDEATHSIG = 1
STOP_WAIT = 15.0  # seconds a leftover gets for its own shutdown before SIGKILL
# loaded now: the child between fork and exec must not load a library (another thread may hold the loader's lock)
_prctl = ctypes.CDLL(None, use_errno=True).prctl


class DemoBusy(Exception):
    """Another demo runs in this state dir (the message says which)."""


def die_with_demo(sig: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when this process ends, even by SIGKILL. The kernel sends it when
    the *thread* that forked exits, so start such children from the main thread. It is set after Popen's ``user=``
    (a change of user clears it), and a child whose parent died before the tie was made signals itself."""
    parent = os.getpid()

    def tie() -> None:
        _prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return tie


def start_time(pid: int) -> int | None:
    """When ``pid`` started (``/proc/PID/stat`` field 22, clock ticks since boot); None when there is no such
    process. With the pid it names one process: a pid the kernel gave again has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces and parentheses
    return int(fields[19])  # field 22 of the whole line


def alive(pid: int, start: int) -> bool:
    """The very process that was recorded (not one that got its pid since) still exists and is not a zombie."""
    if start_time(pid) != start:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class Child:
    """One recorded process, and the signal that asks it to stop (PostgreSQL: SIGINT, its fast shutdown)."""

    name: str
    pid: int
    start: int
    sig: int

    def stop(self) -> bool:
        """Stop it if it still runs (its own signal, then SIGKILL after STOP_WAIT); True when it was running."""
        if not alive(self.pid, self.start):
            return False
        for sig, wait in ((self.sig, STOP_WAIT), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(OSError):
                os.kill(self.pid, sig)
            deadline = time.monotonic() + wait
            while alive(self.pid, self.start) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not alive(self.pid, self.start):
                break
        return True


class Lifeline:
    """This demo's claim on its state dir: the lock held for its whole life, and the record of its processes."""

    def __init__(self, state: Path, lock: IO[str]):
        self.path = state / "demo.pids"
        self.lock = lock
        self.children: list[Child] = []
        self.me = Child("bastion demo", os.getpid(), start_time(os.getpid()) or 0, signal.SIGTERM)

    @classmethod
    def claim(cls, state: Path, say: Callable[[str], None]) -> Lifeline:
        """Take ``state`` for this demo; stop what an earlier one left running there (``say`` one line on it).
        DemoBusy when a demo still runs in it."""
        lock = open(state / "demo.lock", "a+")  # noqa: SIM115 - held open (and locked) until release()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            pid = _recorded(state / "demo.pids").get("demo", {}).get("pid", "?")
            raise DemoBusy(f"bastion demo: another demo (pid {pid}) is running in {state}; stop it first, or "
                           "choose another --state-dir") from None
        life = cls(state, lock)
        if line := life._stop_leftovers(state):
            say(line)
        life._write()
        return life

    def _stop_leftovers(self, state: Path) -> str:
        """Stop the processes an earlier demo recorded (or a PostgreSQL still serving this state dir's data, from a
        demo that kept no record) that still run; one line on what it did, or "" when there was nothing to do."""
        old = _recorded(self.path)
        leftovers = _children(old)
        if (pg := _postmaster(state / "pg" / "data")) and all(c.pid != pg.pid for c in leftovers):
            leftovers.append(pg)
        stopped = [f"{c.name} (pid {c.pid})" for c in leftovers if c.stop()]
        demo = f" (pid {old['demo']['pid']})" if "demo" in old else ""
        if stopped:
            return f"bastion demo: the last demo in {state}{demo} did not stop cleanly; stopped what it left " \
                   f"running: {', '.join(stopped)}"
        if old:
            return f"bastion demo: the last demo in {state}{demo} did not stop cleanly; nothing of it was left running"
        return ""

    def add(self, name: str, pid: int, sig: int) -> None:
        """Record a process this demo started (before it may be needed: right after it started)."""
        start = start_time(pid)
        if start is not None:
            self.children.append(Child(name, pid, start, sig))
            self._write()

    def _write(self) -> None:
        data = {"demo": {"pid": self.me.pid, "start": self.me.start},
                "children": [c.__dict__ for c in self.children]}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        tmp.replace(self.path)

    def release(self) -> None:
        """The demo stopped its processes itself: no record left behind, and the state dir is free again."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.lock.close()


def _recorded(path: Path) -> dict[str, Any]:
    """The record an earlier demo left, or {} (none, or unreadable: then there is nothing to trust in it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _children(old: dict[str, Any]) -> list[Child]:
    """The processes of an earlier record, as far as they are well formed."""
    out = []
    for c in old.get("children", []):
        try:
            out.append(Child(str(c["name"]), int(c["pid"]), int(c["start"]), int(c["sig"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _postmaster(data_dir: Path) -> Child | None:
    """The PostgreSQL server that runs on ``data_dir`` (its postmaster.pid names it), if one does."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    start = start_time(pid)
    if start is None or str(data_dir).encode() not in cmdline.split(b"\0"):
        return None
    return Child("postgres", pid, start, signal.SIGINT)
