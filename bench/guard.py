"""What bastion-guard costs: a build-like loop of short execs (``for i in $(seq N); do /bin/true; done``) through
the bastion with and without the guard, and straight to the sshd; and keystroke echo latency of an interactive shell
with and without the guard (every keystroke crosses one more process on the target, and nothing else).

    .venv/bin/python bench/guard.py [--execs 2000] [--runs 3] [--keys 400]

The guard is installed as the Ansible role installs it (one file, the target's python3 in its first line). The loop
is allowed by the policy-less resource, so after the first ``true`` the guard's cache answers without a round trip
to the daemon; every exec is still reported and recorded.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, bastion_env, machine, pct, table  # noqa: E402
from latency import measure  # noqa: E402


def install_guard(d: Path) -> Path:
    guard = d / "bastion-guard"
    guard.write_text("#!/usr/bin/python3\n" + (ROOT / "guard/agent.py").read_text().split("\n", 1)[1])
    guard.chmod(0o755)
    return guard


def timed(argv: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
        out.append(time.perf_counter() - t0)
        if done.returncode != 0 or done.stdout.strip() != "done":
            raise SystemExit(f"{argv[-1][:60]}...: status {done.returncode}: {done.stderr[-500:]}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keys", type=int, default=400)
    args = ap.parse_args()
    loop = f"for i in $(seq {args.execs}); do /bin/true; done; echo done"
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp, bastion_env(guard=install_guard(Path(tmp))) as env:
        paths = {"direct to the sshd": env.direct(loop, tty=False),
                 "bastion, no guard": env.via_bastion("plain", "--", loop, tty=False),
                 "bastion, guard": env.via_bastion("guarded", "--", loop, tty=False)}
        times = {name: timed(argv, args.runs) for name, argv in paths.items()}
        base = statistics.median(times["bastion, no guard"])
        rows = [(name, statistics.median(t), statistics.median(t) / base,
                 statistics.median(t) / statistics.median(times["direct to the sshd"])) for name, t in times.items()]
        print(machine())
        print(table(f"{args.execs} short execs (median of {args.runs} runs, seconds)",
                    ["path", "seconds", "x bastion without guard", "x direct"], rows))
        keys = {"bastion, no guard": measure(env.via_bastion("plain", tty=True), args.keys),
                "bastion, guard": measure(env.via_bastion("guarded", tty=True), args.keys)}
        plain50 = pct(keys["bastion, no guard"], 50)
        print(table(f"keystroke echo latency, {args.keys} keys (ms)", ["path", "p50", "p99", "p50 x no guard"],
                    [(name, pct(s, 50) * 1e3, pct(s, 99) * 1e3, pct(s, 50) / plain50) for name, s in keys.items()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
