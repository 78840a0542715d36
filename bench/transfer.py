"""Operators' own tools through the bastion: scp of a file of random bytes up and down with the target in the user
name (``alice+plain@bastion``; SFTP, judged request by request at the gate, and ``scp -O``, the exec form) vs
``scp`` straight to the same sshd with the target's credential; then keystroke echo latency of a brokered
``ssh -J alice@bastion plain`` session (one more SSH layer inside the bastion) vs the direct form
``ssh -t alice@bastion plain``, and vs ``ssh -J`` through a plain jump sshd.

    .venv/bin/python bench/transfer.py [--mb 200] [--runs 2] [--keys 400]

Every copy is checked by SHA-256 against the source. After each measurement the benchmark waits until nothing of it
is left running: the session's processes on the target and in the bastion, and the indexing of its recording
(which the daemon starts when a session closes; it is given time to finish, and stopped if it takes too long).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Env, _tree, bastion_env, machine, pct, table  # noqa: E402
from latency import _cmdline, measure  # noqa: E402

OPTS = ["-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"]
DIRECT = "direct scp to the sshd"


class Settle:
    """Waits, after a measurement, until its processes are gone: the target's per-connection sshd processes (and
    whatever runs under them), the jump sshd's, the bastion's per-connection processes and the indexers of the
    recordings just closed. Keeps how long the indexers ran, and how many had to be stopped."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.idle = set(env.bastion_pids())
        self.index_seconds = 0.0
        self.indexers = 0
        self.stopped = 0

    def __call__(self, timeout: float = 60) -> None:
        t0 = time.monotonic()
        deadline, quiet_since, seen = t0 + timeout, None, set()
        while True:
            indexing = [p for p in self.env.bastion_pids() if b"bastion.audit.indexing" in _cmdline(p)]
            seen.update(indexing)
            if time.monotonic() > deadline and indexing:
                for p in indexing:
                    with contextlib.suppress(OSError):
                        os.kill(p, signal.SIGKILL)
                self.stopped += len(indexing)
            left = self._left()
            if not left:  # quiet for a second: the daemon queues the next recording's indexer after one ends
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 1.0:
                    break
            else:
                quiet_since = None
            if time.monotonic() > deadline + 10:
                raise RuntimeError(f"processes outlived their measurement: {[(p, _cmdline(p)) for p in left]}")
            time.sleep(0.1)
        if seen:
            self.indexers += len(seen)
            self.index_seconds += (quiet_since or time.monotonic()) - t0

    def _left(self) -> list[int]:
        left = [p for p in self.env.bastion_pids() if p not in self.idle]
        left += _tree(self.env.target.proc.pid)[1:]
        if self.env.jump is not None:
            left += _tree(self.env.jump.proc.pid)[1:]
        return left


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def random_file(path: Path, mb: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(mb):
            block = os.urandom(1_000_000)
            h.update(block)
            f.write(block)
    return h.hexdigest()


def scp(argv: list[str], src: str, dst: str, digest: str, landed: Path) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([*argv, src, dst], capture_output=True, stdin=subprocess.DEVNULL, timeout=1800)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-3:])} {src} {dst}: status {out.returncode}: {out.stderr[-500:]!r}")
    got = sha256(landed) if landed.exists() else "missing"
    if got != digest:
        raise RuntimeError(f"{src} -> {dst}: SHA-256 {got}, not {digest}")
    return took


def transfers(env: Env, mb: int, runs: int, settle: Settle) -> tuple[int, dict[str, tuple[float, float]]]:
    """Best-of-``runs`` seconds (up, down) per path; each copy checked by SHA-256."""
    src = env.dir / "random.bin"
    digest = random_file(src, mb)
    size = src.stat().st_size
    remote, back = env.dir / "landed.bin", env.dir / "back.bin"  # the target is this machine
    t = env.target
    direct = ["scp", *OPTS, "-i", str(env.target_key), "-P", str(t.port)]
    bastion = ["scp", *OPTS, "-i", str(env.keys["alice"]), "-P", str(env.port)]
    paths = {DIRECT: (direct, t.user), "direct scp -O to the sshd": ([*direct, "-O"], t.user),
             "bastion scp, SFTP (alice+plain)": (bastion, "alice+plain"),
             "bastion scp -O, exec (alice+plain)": ([*bastion, "-O"], "alice+plain")}
    best: dict[str, tuple[float, float]] = {}
    for name, (argv, user) in paths.items():
        ups, downs = [], []
        for _ in range(runs):
            try:
                ups.append(scp(argv, str(src), f"{user}@127.0.0.1:{remote}", digest, remote))
                settle()
                downs.append(scp(argv, f"{user}@127.0.0.1:{remote}", str(back), digest, back))
                settle()
            finally:
                remote.unlink(missing_ok=True)
                back.unlink(missing_ok=True)
        best[name] = (min(ups), min(downs))
    src.unlink()
    return size, best


def jump_config(env: Env) -> Path:
    """An operator's ssh config for ``ssh -J bastion plain`` (as tests/integration/test_own_tools.py writes it):
    the inner host key checked against the bastion's host CA."""
    ca = subprocess.run([sys.executable, "-m", "bastion.cli", "--config", str(env.dir / "bastion.yaml"), "ca"],
                        capture_output=True, text=True, timeout=60)
    if ca.returncode != 0 or not ca.stdout.startswith("@cert-authority "):
        raise RuntimeError(f"bastion ca: {ca.returncode} {ca.stdout!r} {ca.stderr!r}")
    (env.dir / "known_hosts").write_text(ca.stdout)
    cfg = env.dir / "ssh_config"
    cfg.write_text(f"""\
Host bastion
  HostName 127.0.0.1
  Port {env.port}
  User alice
  IdentityFile {env.keys['alice']}
  IdentitiesOnly yes
  IdentityAgent none
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
Host plain
  User deploy
  IdentityFile {env.keys['alice']}
  IdentitiesOnly yes
  IdentityAgent none
  StrictHostKeyChecking yes
  UserKnownHostsFile {env.dir / 'known_hosts'}
  LogLevel ERROR
""")
    return cfg


def latencies(env: Env, keys: int, settle: Settle) -> dict[str, list[float]]:
    cfg = jump_config(env)
    paths = {"direct ssh to the sshd": env.direct(tty=True),
             "ssh -J through a jump sshd": env.via_jump(tty=True),
             "bastion, ssh -t alice@bastion plain": env.via_bastion("plain", tty=True),
             "bastion, ssh -J alice@bastion plain": ["ssh", "-F", str(cfg), "-t", "-J", "bastion", "plain"]}
    out = {}
    for name, argv in paths.items():
        out[name] = measure(argv, keys)
        settle()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--keys", type=int, default=400)
    args = ap.parse_args()
    with bastion_env(jump=True) as env:
        settle = Settle(env)
        size, best = transfers(env, args.mb, args.runs, settle)
        logs = sorted((env.dir / "state" / "recordings").rglob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        log_kb = logs[-1].stat().st_size / 1e3 if logs else 0.0
        moved = (settle.indexers, settle.index_seconds, settle.stopped)
        lat = latencies(env, args.keys, settle)
    up0, down0 = best[DIRECT]
    rows = [(name, size / up / 1e6, up0 / up, size / down / 1e6, down0 / down) for name, (up, down) in best.items()]
    print(table(f"scp of {size / 1e6:.0f} MB of random bytes, up and down (best of {args.runs}; SHA-256 checked) "
                f"on {machine()}", ["path", "up MB/s", "up / direct", "down MB/s", "down / direct"], rows))
    print(f"transfer log of the last run: {log_kb:.1f} kB; {moved[0]} indexer(s) ran after the transfers, "
          f"{moved[1]:.1f} s in all, {moved[2]} stopped\n")
    form = lat["bastion, ssh -t alice@bastion plain"]
    rows = [(name, pct(xs, 50) * 1e3, pct(xs, 99) * 1e3, pct(xs, 50) / pct(form, 50), pct(xs, 99) / pct(form, 99))
            for name, xs in lat.items()]
    print(table(f"Keystroke echo latency ({args.keys} keys), idle", ["path", "p50 ms", "p99 ms",
                "p50 / direct form", "p99 / direct form"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
