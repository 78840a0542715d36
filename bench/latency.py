"""Keystroke echo latency: a key typed into an interactive shell until its echo comes back, on four paths to the
same sshd -- straight to it; through a second sshd as a jump host (``ssh -J``: what teams use instead of a
bastion); through the bastion, recorded, without and with a policy (whose line filter sees every key) -- idle, and
while ``--load N`` other sessions on the same path stream output as fast as they can.

    .venv/bin/python bench/latency.py [--keys 400] [--load 3]

The load is ``yes`` in the exec form: it dies of SIGPIPE when its session ends, and the benchmark checks that no
load process is left on the target before it measures the next path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Env, _tree, bastion_env, machine, pct, table  # noqa: E402

PROMPT = b"benchready: "
# its echo cannot contain the prompt (wait for the shell, not for the local tty's echo of the typed line), and it has
# no "$ " or "> " for the bastion's filter to take for a prompt while the real one is not yet known
SET_PROMPT = b"PS1='bench''ready: '\r"


class Pty:
    def __init__(self, argv: list[str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.buf = b""

    def read_until(self, needle: bytes, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{needle!r} not seen; got {self.buf[-300:]!r}")
            if select.select([self.master], [], [], left)[0]:
                self.buf += os.read(self.master, 65536)
        self.buf = self.buf[self.buf.index(needle) + len(needle):]

    def drain(self, quiet: float = 0.2) -> None:
        while select.select([self.master], [], [], quiet)[0]:
            os.read(self.master, 65536)
        self.buf = b""

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def measure(argv: list[str], keys: int) -> list[float]:
    p = Pty(argv)
    try:
        os.write(p.master, SET_PROMPT)
        p.read_until(PROMPT, 30)
        p.drain()
        samples = []
        for i in range(keys + 20):
            ch = b"abcdefghij"[i % 10:i % 10 + 1]
            t0 = time.perf_counter()
            os.write(p.master, ch)
            p.read_until(ch)
            if i >= 20:  # warm-up
                samples.append(time.perf_counter() - t0)
            if i % 40 == 39:
                os.write(p.master, b"\x15")  # clear the line now and then
                p.drain(0.05)
        return samples
    finally:
        p.close()


class Load:
    """``n`` sessions on one path, each streaming ``yes`` into a reader that throws it away."""

    def __init__(self, argv: list[str], n: int) -> None:
        self.procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, start_new_session=True) for _ in range(n)]
        self.bytes = [0] * n
        self.threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _read(self, i: int) -> None:
        out = self.procs[i].stdout
        assert out is not None
        while chunk := out.read1(1 << 16):
            self.bytes[i] += len(chunk)

    def wait_flowing(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not all(b > 1 << 20 for b in self.bytes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the load does not flow: {self.bytes} bytes")
            time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        for t in self.threads:
            t.join(10)


def no_load_left(env: Env, timeout: float = 20) -> None:
    """Every ``yes`` of the load has died with its session (a survivor would skew every later figure), and the
    indexing of the load's recordings (niced, but hundreds of MB of ``yes``) is not left to run under the next
    path's figures: it is stopped (a real daemon would finish it in the background)."""
    deadline, quiet_since = time.monotonic() + timeout, None
    while True:
        for p in env.bastion_pids():
            if b"bastion.audit.indexing" in _cmdline(p):
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
        left = [p for p in _tree(env.target.proc.pid) if _comm(p) == "yes"]
        left += [p for p in env.bastion_pids() if b"bastion.audit.indexing" in _cmdline(p)]
        if not left:  # quiet for a second: the daemon queues the next recording's indexer after one ends
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.0:
                return
        else:
            quiet_since = None
        if time.monotonic() > deadline:
            raise RuntimeError(f"load processes outlived their sessions on the target: {left}")
        time.sleep(0.1)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def paths(env: Env) -> dict[str, tuple[Callable[..., list[str]], Callable[..., list[str]]]]:
    """Each path: how to open the measured shell, and how to open a load session on the same path."""
    return {
        "direct ssh to the sshd": (lambda: env.direct(tty=True), lambda: env.direct("yes", tty=False)),
        "ssh -J through a jump sshd": (lambda: env.via_jump(tty=True), lambda: env.via_jump("yes", tty=False)),
        "bastion, no policy (recorded)": (lambda: env.via_bastion("plain", tty=True),
                                          lambda: env.via_bastion("plain", "--", "yes", tty=False)),
        "bastion, policy filter (recorded)": (lambda: env.via_bastion("web", tty=True),
                                              lambda: env.via_bastion("plain", "--", "yes", tty=False)),
    }


def run(env: Env, keys: int, load: int) -> dict[str, tuple[list[float], list[float] | None]]:
    out: dict[str, tuple[list[float], list[float] | None]] = {}
    for name, (shell, loader) in paths(env).items():
        idle = measure(shell(), keys)
        loaded = None
        if load:
            gen = Load(loader(), load)
            try:
                gen.wait_flowing()
                loaded = measure(shell(), keys)
            finally:
                gen.stop()
            no_load_left(env)
        out[name] = (idle, loaded)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=400)
    ap.add_argument("--load", type=int, default=3, help="sessions streaming output on the same path (0: idle only)")
    args = ap.parse_args()
    with bastion_env(jump=True) as env:
        runs = run(env, args.keys, args.load)
    hop_idle, hop_load = runs["ssh -J through a jump sshd"]
    header = ["path", "p50 idle ms", "p99 idle ms", "p50 idle / -J", "p99 idle / -J"]
    if args.load:
        header += [f"p50 load {args.load} ms", f"p99 load {args.load} ms", "p50 load / -J", "p99 load / -J"]
    rows = []
    for name, (idle, loaded) in runs.items():
        row: list[object] = [name, pct(idle, 50) * 1e3, pct(idle, 99) * 1e3, pct(idle, 50) / pct(hop_idle, 50),
                             pct(idle, 99) / pct(hop_idle, 99)]
        if loaded is not None and hop_load is not None:
            row += [pct(loaded, 50) * 1e3, pct(loaded, 99) * 1e3, pct(loaded, 50) / pct(hop_load, 50),
                    pct(loaded, 99) / pct(hop_load, 99)]
        rows.append(row)
    print(table(f"Keystroke echo latency ({args.keys} keys; load: {args.load} sessions streaming `yes` on the same "
                f"path) on {machine()}", header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
