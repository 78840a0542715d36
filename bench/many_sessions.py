"""Many concurrent recorded sessions: memory per session across all bastion processes (PSS: shared pages counted
once), and the daemon's CPU while they sit open; exec sessions (brokered straight to the target) and menu
connections (each has its own TUI process) separately.

    .venv/bin/python bench/many_sessions.py [--sessions 50,200] [--menus 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Env, bastion_env, machine, table  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
WAVE = 50


def pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError):
            pass
    return total / TICK


def settle(env: Env, want: int, clients: list[subprocess.Popen[bytes]], timeout: float) -> list[str]:
    """Wait until ``want`` brokered sessions are live (the daemon logs each start) or their clients gave up;
    returns what the failed clients said."""
    log = env.dir / "bastion.out"
    deadline = time.monotonic() + timeout
    while True:
        started = log.read_text(errors="replace").count(" started (")
        dead = [c for c in clients if c.poll() is not None]
        if started + len(dead) >= want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return [(c.stderr.read() if c.stderr else b"").decode(errors="replace").strip()[-200:] for c in dead]


def exec_sessions(env: Env, n: int, started: int, baseline: int) -> tuple[float, float, float, list[str]]:
    """Open ``n`` sessions; memory per session is counted from the daemon's memory before any round (memory a
    previous round freed is reused by this one, so a per-round baseline would undercount)."""
    before_mem = baseline
    t0 = time.perf_counter()
    clients: list[subprocess.Popen[bytes]] = []
    try:
        failed: list[str] = []
        for wave in range(0, n, WAVE):  # opened in waves: the target's sshd forks per connection, on 2 cores
            clients += [subprocess.Popen(env.via_bastion("plain", "--", "sleep 600", tty=False),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                        for _ in range(min(WAVE, n - wave))]
            failed = settle(env, started + len(clients), clients, 120)
        setup = time.perf_counter() - t0
        time.sleep(2)
        mem = pss_kb(env.bastion_pids())
        c0 = cpu_s([env.proc.pid])
        time.sleep(5)
        idle_cpu = (cpu_s([env.proc.pid]) - c0) / 5 * 100
        return (mem - before_mem) / max(1, n - len(failed)) / 1024, idle_cpu, setup, failed
    finally:
        for c in clients:
            c.kill()
        for c in clients:
            c.wait()
        time.sleep(2)


def tuis(env: Env) -> list[int]:
    """The menus' Python processes (not their bubblewrap wrappers)."""
    out = []
    for pid in env.bastion_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[1:4] == [b"-I", b"-m", b"tui"]:
            out.append(pid)
    return out


def indexing(env: Env) -> bool:
    """Whether the daemon's background indexer (a child per closed session) is running."""
    for pid in env.bastion_pids():
        try:
            if b"audit\0index" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


def menus(env: Env, n: int) -> float:
    deadline = time.monotonic() + 300
    while indexing(env) and time.monotonic() < deadline:  # the closed sessions' indexers would skew the baseline
        time.sleep(0.5)
    before = pss_kb(env.bastion_pids())
    procs = []
    for _ in range(n):
        master, slave = os.openpty()
        procs.append((subprocess.Popen(env.menu(), stdin=slave, stdout=slave, stderr=slave,
                                       start_new_session=True), master))
        os.close(slave)
    try:
        deadline = time.monotonic() + 60
        while len(tuis(env)) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(4)  # the TUIs have drawn
        return (pss_kb(env.bastion_pids()) - before) / n / 1024
    finally:
        for p, m in procs:
            p.kill()
            p.wait()
            os.close(m)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", default="50,200")
    ap.add_argument("--menus", type=int, default=10)
    args = ap.parse_args()
    rows = []
    with bastion_env() as env:
        started = 0
        notes = []
        subprocess.run(env.via_bastion("plain", "--", "true", tty=False), capture_output=True, timeout=60)
        baseline = pss_kb(env.bastion_pids())  # after one session: code paths loaded, nothing open
        for n in [int(x) for x in args.sessions.split(",")]:
            per, cpu, setup, failed = exec_sessions(env, n, started + 1, baseline)
            started += n - len(failed)
            rows.append((f"{n} exec sessions (recorded)", f"{per:.2f}", f"{cpu:.1f}", f"{setup:.1f}",
                         str(len(failed))))
            notes += [f"{n}: a client failed: {f or '(nothing on stderr)'}" for f in sorted(set(failed))[:3]]
        menu_mb = menus(env, args.menus)
        rows.append((f"{args.menus} menu connections (TUI process each)", f"{menu_mb:.1f}", "-", "-", "-"))
    print(table(f"Concurrent sessions on {machine()}",
                ["load", "MB per session (PSS)", "daemon CPU % while open", "seconds to open all (waves of 50)",
                 "failed"], rows))
    for line in notes:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
