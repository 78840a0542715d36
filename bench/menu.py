"""Time from starting `ssh` to the drawn menu (a local user's known key), against `ssh` to a shell prompt on the
same machine's sshd.

    .venv/bin/python bench/menu.py [--runs 10]
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


def time_to(argv: list[str], needle: bytes, timeout: float = 30) -> float:
    master, slave = os.openpty()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            env={**os.environ, "TERM": "xterm-256color"})
    os.close(slave)
    buf = b""
    try:
        while needle not in buf:
            left = t0 + timeout - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"{needle!r} not seen: {buf[-200:]!r}")
            if select.select([master], [], [], left)[0]:
                try:
                    buf += os.read(master, 65536)
                except OSError:
                    break
        return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    with bastion_env() as env:
        time_to(env.menu(), b"no policy, recorded")  # warm caches
        menu = [time_to(env.menu(), b"no policy, recorded") for _ in range(args.runs)]
        shell = [time_to(env.direct("exec env PS1='READY> ' sh", tty=True), b"READY> ") for _ in range(args.runs)]
    rows = [("ssh -> bastion menu drawn", pct(menu, 50), pct(menu, 90), pct(menu, 50) / pct(shell, 50)),
            ("ssh -> sshd shell prompt (direct)", pct(shell, 50), pct(shell, 90), 1.0)]
    print(table(f"Time to the menu ({args.runs} runs) on {machine()}", ["path", "p50 s", "p90 s", "ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
