"""F5 with a year of recordings: the auditor's first screen, a filtered screen and the 10th page, read through the
menu's own RPC handler from a store holding ``--sessions`` sessions (default 10^6), against the first screen of
an empty store.

    .venv/bin/python bench/recordings_list.py [--sessions 1000000] [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sqlalchemy import insert  # noqa: E402

from bastion.rpc.proto import encode  # noqa: E402
from bastion.store.db import Store  # noqa: E402
from bastion.store.models import Recording, Session  # noqa: E402
from bench.harness import machine, table  # noqa: E402
from tests.unit.test_menu_handlers import CONFIG  # noqa: E402

USERS = [f"user{i:03d}" for i in range(200)]
RESOURCES = [f"host{i:03d}" for i in range(300)]


def fill(store: Store, n: int) -> None:
    """``n`` closed sessions over a year, in batches (SQLAlchemy Core: minutes for 10^6, once)."""
    start, step = datetime(2025, 12, 1, tzinfo=UTC), timedelta(seconds=365 * 86400 / max(n, 1))
    batch = 20000
    for b in range(0, n, batch):
        sessions, recordings = [], []
        for i in range(b, min(n, b + batch)):
            sid = f"s{i:010d}"
            at = start + step * i
            sessions.append({"id": sid, "user": USERS[i % len(USERS)], "resource": RESOURCES[i % len(RESOURCES)],
                             "kind": "ssh", "mode": "exec" if i % 3 else "interactive",
                             "command": "systemctl status nginx" if i % 3 else None, "client_addr": "192.0.2.1:1",
                             "node": "n1", "started_at": at, "ended_at": at + timedelta(seconds=42),
                             "outcome": "exited", "exit_status": 0, "message": "exited with status 0"})
            recordings.append({"session_id": sid, "path": f"/var/lib/bastion/recordings/{sid}.cast", "size": 4096})
        with store.tx() as s:
            s.execute(insert(Session), sessions)
            s.execute(insert(Recording), recordings)


def timed(call, runs: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    times, size = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        reply = asyncio.run(call())
        times.append(time.perf_counter() - t0)
        size = len(encode({"id": 1, "result": reply}))
    return statistics.median(times), size


def screens(listing, runs: int) -> list[tuple[str, float, int]]:  # type: ignore[no-untyped-def]
    """The first screen, a filtered one, and paging to the 10th: median seconds and reply size of each."""

    async def first() -> dict:  # type: ignore[type-arg]
        return await listing({})

    async def filtered() -> dict:  # type: ignore[type-arg]
        return await listing({"user": "user007", "resource": "host0*"})

    async def tenth() -> dict:  # type: ignore[type-arg]
        params: dict[str, str] = {}
        for _ in range(10):
            reply = await listing(params)
            params = {"cursor": reply["next"]} if reply["next"] else params
        return reply

    out = []
    for name, call, n in (("first screen", first, runs), ("user= resource=glob", filtered, runs),
                          ("10th page (10 calls)", tenth, max(3, runs // 5))):
        t, size = timed(call, n)
        out.append((name, t, size))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    from bastion.config import load_config
    from bastion.oversight.live import LiveRegistry
    from bastion.sandbox import make_sandbox
    from bastion.services import Services
    from tests.support.menu import menu_for
    from tests.unit.test_menu_handlers import FakeApprovals

    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as d:
        (Path(d) / "bastion.yaml").write_text(CONFIG)
        cfg = load_config(Path(d) / "bastion.yaml", check_files=False)
        rows = []
        for n in (0, args.sessions):
            store = Store(f"sqlite:///{d}/b{n}.db")
            store.migrate()
            t0 = time.perf_counter()
            fill(store, n)
            filled = time.perf_counter() - t0
            services = Services(config=cfg, store=store, storage=None, approvals=FakeApprovals(),  # type: ignore[arg-type]
                                live=LiveRegistry(), login=None, sandbox=make_sandbox("off", None),
                                auditing=None, node="bench", spawn=lambda aw: None)  # type: ignore[arg-type]
            listing = menu_for(services, "eve").table()["recordings.list"]

            for name, t, size in screens(listing, args.runs):
                rows.append((f"{n:,} sessions", name, t * 1e3, size, filled if name == "first screen" else 0.0))
            store.engine.dispose()
    print(table(f"F5 recordings list through the menu's RPC handler (SQLite) on {machine()}",
                ["store", "screen", "median ms", "reply bytes", "fill s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
