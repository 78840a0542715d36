"""Bulk output: `cat` of a large file through a recorded brokered session vs straight to the same sshd; then
``--parallel N`` sessions at once, whose total throughput against one session's shows whether the bastion uses
more than one core.

    .venv/bin/python bench/bulk.py [--mb 200] [--parallel 4]
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import bastion_env, machine, table  # noqa: E402


def timed(argv: list[str], expect: int) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, timeout=1800)
    took = time.perf_counter() - t0
    if out.returncode != 0 or len(out.stdout) != expect:
        raise RuntimeError(f"{argv[-1]}: status {out.returncode}, {len(out.stdout)} of {expect} bytes: "
                           f"{out.stderr[-300:]!r}")
    return took


def together(argvs: list[list[str]], expect: int) -> float:
    """Seconds until every one of ``argvs`` has delivered ``expect`` bytes, started at once."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for a in argvs]
    got = []
    for p in procs:  # read each to the end (the others keep streaming into their pipes meanwhile)
        assert p.stdout is not None
        n = 0
        while chunk := p.stdout.read(1 << 20):
            n += len(chunk)
        p.wait()
        got.append(n)
    took = time.perf_counter() - t0
    if got != [expect] * len(argvs):
        raise RuntimeError(f"parallel runs delivered {got}, not {expect} each")
    return took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=4)
    args = ap.parse_args()
    with bastion_env() as env:
        data = env.dir / "bulk.txt"
        with open(data, "wb") as f:  # text (the cast stores text; binary would be replaced, not a fair test)
            block = base64.encodebytes(os.urandom(3 * 1024 * 1024 // 4 * 3))
            while f.tell() < args.mb * 1_000_000:
                f.write(block)
        size = data.stat().st_size
        paths = {"direct ssh to the sshd": env.direct("cat", str(data), tty=False),
                 "bastion exec, recorded": env.via_bastion("plain", "--", f"cat {data}", tty=False)}
        best = {name: min(timed(argv, size) for _ in range(args.runs)) for name, argv in paths.items()}
        par = {name: together([argv] * args.parallel, size) for name, argv in paths.items()} if args.parallel else {}
        casts = sorted((env.dir / "state" / "recordings").rglob("*.cast"))
        cast_mb = casts[-1].stat().st_size / 1e6 if casts else 0.0
    base = size / best["direct ssh to the sshd"] / 1e6
    rows = [(name, t, size / t / 1e6, size / t / 1e6 / base) for name, t in best.items()]
    print(table(f"Bulk output: cat of {size / 1e6:.0f} MB (best of {args.runs}) on {machine()}",
                ["path", "seconds", "MB/s", "ratio to direct"], rows))
    print(f"recording of the last run: {cast_mb:.0f} MB\n")
    if par:
        rows = [(name, t, args.parallel * size / t / 1e6, args.parallel * size / t / (size / best[name]))
                for name, t in par.items()]
        print(table(f"{args.parallel} at once: cat of {size / 1e6:.0f} MB each",
                    ["path", "seconds", "total MB/s", "total / one session's"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
