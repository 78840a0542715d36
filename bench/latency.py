"""Keystroke echo latency: a key typed into an interactive shell until its echo comes back, through the bastion
(recorded; with and without a policy, whose filter sees every key) and straight to the same sshd.

    .venv/bin/python bench/latency.py [--keys 400]
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import bastion_env, machine, pct, table  # noqa: E402


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
        os.write(p.master, b"export PS1='READY> '\r")
        p.read_until(b"READY> ", 30)
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=400)
    args = ap.parse_args()
    with bastion_env() as env:
        runs = {"direct ssh to the sshd": measure(env.direct(tty=True), args.keys),
                "bastion, no policy (recorded)": measure(env.via_bastion("plain", tty=True), args.keys),
                "bastion, with policy filter (recorded)": measure(env.via_bastion("web", tty=True), args.keys)}
    base50, base99 = pct(runs["direct ssh to the sshd"], 50), pct(runs["direct ssh to the sshd"], 99)
    rows = [(name, pct(s, 50) * 1e3, pct(s, 99) * 1e3, pct(s, 50) / base50, pct(s, 99) / base99)
            for name, s in runs.items()]
    print(table(f"Keystroke echo latency ({args.keys} keys) on {machine()}",
                ["path", "p50 ms", "p99 ms", "p50 ratio", "p99 ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
