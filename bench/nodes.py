"""Two nodes on one PostgreSQL store: how long a request held on node A takes to reach a reviewer's queue on node B
(LISTEN/NOTIFY), and how long B's decision takes to release the command on A. The reviewer is the real menu over
the stock OpenSSH client; the operator runs an exec session that needs approval. Without NOTIFY the queue would
poll every 5 s and the waiter every second: those are the figures to compare with.

    .venv/bin/python bench/nodes.py [--rounds 10] [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine, pct, table  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from tests.integration.conftest import start_bastion, stop_bastion, write_config  # noqa: E402
from tests.support.keys import free_port, make_keypair  # noqa: E402
from tests.support.ssh_client import ssh_argv  # noqa: E402
from tests.support.sshd import start_sshd  # noqa: E402
from tests.support.terminal import Terminal  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="bastion-bench-nodes-", dir="/tmp"))
    name = f"bastion_bench_{secrets.token_hex(4)}"
    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
    procs = []
    keys = {u: make_keypair(d / f"key_{u}", u)[0] for u in ("alice", "bob")}
    target_key, target_pub = make_keypair(d / "target", "bench")
    target = start_sshd(d / "sshd", authorized_keys=[target_pub])
    ports = {}
    try:
        for node in ("A", "B"):
            nd = d / node
            (nd / "state").mkdir(parents=True)
            ports[node] = port = free_port()
            cfg = write_config(nd, port, keys, target, target_key, extra_top=f"cluster: {{node_name: {node}}}\n")
            cfg.write_text(cfg.read_text().replace("database: sqlite:///state/bastion.db", f"database: {url}")
                           .replace("recordings_dir: state/recordings", f"recordings_dir: {d / 'recordings'}"))
            procs.append(start_bastion(cfg, port, nd / "out.log"))
        pushed, released = [], []
        with Terminal(ssh_argv(keys["bob"], ports["B"], "bob", tty=True), cols=120, rows=30) as bob:
            bob.wait_for(r"roles: .*reviewers")
            bob.send_key("f2")
            bob.wait_for(r"Nothing waits for you")
            for i in range(args.rounds):
                held = subprocess.Popen(ssh_argv(keys["alice"], ports["A"], "alice", "web", "--",
                                                 f"chmod 600 /nonexistent-{i}", tty=False),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                assert held.stderr is not None
                line = held.stderr.readline()
                t0 = time.perf_counter()
                assert "waiting for approval" in line, line
                bob.wait_for(rf"chmod 600 /nonexistent-{i}\b", timeout=20)
                pushed.append(time.perf_counter() - t0)
                t1 = time.perf_counter()
                bob.send("a")
                while "approved" not in (line := held.stderr.readline()):
                    assert line, "the held command ended without an approval"
                released.append(time.perf_counter() - t1)
                held.wait(30)
                bob.wait_for(r"request #\d+: approved", timeout=20)
    finally:
        for p in procs:
            stop_bastion(p)
        target.stop()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(d, ignore_errors=True)
    rows = [("held on A -> in B's queue", pct(pushed, 50), pct(pushed, 90), max(pushed), 5.0),
            ("approved on B -> released on A", pct(released, 50), pct(released, 90), max(released), 1.0)]
    print(table(f"Two nodes on one PostgreSQL ({args.rounds} rounds) on {machine()}",
                ["step", "p50 s", "p90 s", "max s", "polling alone would take up to (s)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
