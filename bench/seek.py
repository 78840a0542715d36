"""Seeking in a long recording: the player's keyframe seek vs replaying from the start (what a player without an
index does), on a synthetic 1-hour cast. Also the cost of building the keyframes and the search rows at close.

    .venv/bin/python bench/seek.py [--minutes 60] [--rate 2000]   # rate: bytes of output per second of recording
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recorder.player import _Player, _Source  # noqa: E402
from recorder.seekindex import build, save  # noqa: E402
from recorder.textindex import index_rows  # noqa: E402


def make_cast(path: Path, minutes: int, rate: int) -> None:
    rnd = random.Random(1)
    words = ["deploy", "ok", "error", "GET /api/v1/items", "200", "latency=12ms", "user=alice", "retry", "db"]
    with open(path, "w") as f:
        f.write(json.dumps({"version": 2, "width": 120, "height": 40, "timestamp": 0, "env": {}, "title": "b"}) + "\n")
        t, n = 0.0, 0
        while t < minutes * 60:
            line = " ".join(rnd.choice(words) for _ in range(8))
            out = f"\x1b[32m{n:08d}\x1b[0m {line}\r\n"
            f.write(json.dumps([round(t, 3), "o", out]) + "\n")
            if n % 500 == 0:
                f.write(json.dumps([round(t, 3), "m", f"policy: allow: step {n}"]) + "\n")
            t += len(out) / rate
            n += 1


def seek_times(path: Path, targets: list[float], *, keyframes: bool) -> tuple[list[float], list[int]]:
    src = _Source(path)
    if keyframes:
        src.index()
    else:  # no index: every seek paints from the start
        src._index = None
        src.keyframe = lambda t: (0.0, src.start, "")  # type: ignore[method-assign]
        src.ensure_scanned = lambda: None  # type: ignore[method-assign]
        src.duration = 1e12
    out, written = [], []
    for target in targets:
        sink = io.BytesIO()
        p = _Player(src, sink, speed=1, idle_limit=None, keys=None, stream="o", clock=time.monotonic,
                    sleep=time.sleep, rows=40, cols=120)
        p.t = 1e12  # force a backwards seek: the worst case
        t0 = time.perf_counter()
        p.seek(target)
        out.append(time.perf_counter() - t0)
        written.append(len(sink.getvalue()))
    return out, written


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--rate", type=int, default=2000, help="output bytes per recorded second")
    ap.add_argument("--seeks", type=int, default=20)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    cast = d / "long.cast"
    make_cast(cast, args.minutes, args.rate)
    size = cast.stat().st_size
    t0 = time.perf_counter()
    idx = build(cast)
    save(idx, cast)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = sum(1 for _ in index_rows(cast))
    rows_s = time.perf_counter() - t0
    rnd = random.Random(2)
    targets = [rnd.uniform(0, idx.duration) for _ in range(args.seeks)]
    fast, fast_bytes = seek_times(cast, targets, keyframes=True)
    slow, slow_bytes = seek_times(cast, targets[: max(3, args.seeks // 5)], keyframes=False)
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}")
    print(f"cast: {args.minutes} min, {size / 1e6:.1f} MB, {len(idx.keyframes)} keyframes, {len(idx.markers)} markers")
    print(f"built at close: keyframes {build_s:.1f} s ({size / 1e6 / build_s:.2f} MB/s), "
          f"search rows {rows_s:.1f} s ({rows} lines)")
    print(f"{'seek (random, backwards)':<34} {'p50 ms':>9} {'max ms':>9} {'KB to terminal':>15}")
    p50f, p99f = statistics.median(fast) * 1e3, max(fast) * 1e3
    p50s, p99s = statistics.median(slow) * 1e3, max(slow) * 1e3
    print(f"{'keyframes (bastion)':<34} {p50f:>9.1f} {p99f:>9.1f} {statistics.median(fast_bytes) / 1e3:>15.0f}")
    print(f"{'from the start (no index)':<34} {p50s:>9.1f} {p99s:>9.1f} {statistics.median(slow_bytes) / 1e3:>15.0f}")
    print(f"ratio keyframes / from the start: {p50f / p50s:.3f} (p50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
