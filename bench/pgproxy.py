"""Added latency of the PostgreSQL wire proxy per simple query, as a ratio against the direct path, in one run.

The same client (psycopg, simple query protocol, one query at a time) runs the same statements straight to a
PostgreSQL started here and through the bastion's wire proxy (its own process, as in the daemon: policy judged on
every statement, masking lineage on ``customers.ssn``, row masking). Printed: p50/p99 per path and the ratios.

    .venv/bin/python bench/pgproxy.py [--queries 2000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import psycopg  # noqa: E402
from harness import machine, table  # noqa: E402

from tests.support.postgres import start_postgres  # noqa: E402

PROXY = """
import asyncio, sys
from pathlib import Path
from bastion.proxies.pg.masking import MaskRule
from bastion.proxies.pg.proxy import PgProxy
from bastion.proxies.pg.upstream import Target
from policies.engine import Action, PolicySet, Rule, evaluate_sql

POLICY = PolicySet("db", Action.ALLOW, (
    Rule("rows", Action.REQUIRE_APPROVAL, statements=("delete", "update"), max_rows=1),
    Rule("ddl", Action.REQUIRE_APPROVAL, statements=("drop", "truncate", "alter")),
))

async def hold(d):
    return {"status": "denied", "status_reason": "bench"}

async def main():
    p = PgProxy(Target("127.0.0.1", int(sys.argv[1]), "app", "app"), "app-Pw-123",
                judge=lambda s: evaluate_sql(POLICY, s, groups=[], resource="db"), hold=hold,
                note=lambda d: None, withdraw=lambda: None, socket_dir=Path(sys.argv[2]),
                masking=[MaskRule("customers", "ssn", "keep_last", 4)])
    await p.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""
QUERIES = ["SELECT name, ssn FROM customers WHERE id = 1", "SELECT count(*) FROM customers",
           "SELECT id, upper(name) FROM customers ORDER BY id", "SELECT 1"]


def run(conn: psycopg.Connection, n: int) -> list[float]:
    cur = psycopg.ClientCursor(conn)  # the simple query protocol, as psql uses
    out = []
    for i in range(n):
        sql = QUERIES[i % len(QUERIES)]
        t0 = time.perf_counter()
        cur.execute(sql)
        cur.fetchall()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=2000)
    args = ap.parse_args()
    pg = start_postgres()
    proxy = None
    try:
        pg.psql("CREATE USER app PASSWORD 'app-Pw-123'")
        pg.psql("CREATE DATABASE app OWNER app")
        pg.psql("CREATE TABLE customers(id int primary key, name text, email text, ssn text);"
                "INSERT INTO customers SELECT g, 'n' || g, g || '@x', '123-45-' || lpad(g::text, 4, '0') "
                "FROM generate_series(1, 50) g; ALTER TABLE customers OWNER TO app", db="app")
        sock = Path(tempfile.mkdtemp(prefix="bench-pgproxy-"))
        proxy = subprocess.Popen([sys.executable, "-c", PROXY, str(pg.port), str(sock)], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        assert proxy.stdout is not None and proxy.stdout.readline().strip() == "ready"
        direct = psycopg.connect(host="127.0.0.1", port=pg.port, user="app", password="app-Pw-123", dbname="app",
                                 autocommit=True)
        through = psycopg.connect(host=str(sock), user="x", dbname="y", autocommit=True)
        run(direct, 200), run(through, 200)  # warm up both paths
        rows: list[tuple[str, str, str, str]] = []
        d, t = run(direct, args.queries), run(through, args.queries)
        for name, xs in (("direct (psycopg -> PostgreSQL)", d), ("through the wire proxy", t)):
            q = statistics.quantiles(xs, n=100)
            rows.append((name, f"{statistics.median(xs) * 1e3:.3f}", f"{q[98] * 1e3:.3f}",
                         "1.00" if xs is d else f"{statistics.median(t) / statistics.median(d):.2f}"))
        print(table(f"PostgreSQL simple query latency, {args.queries} queries per path, on {machine()}",
                    ["path", "p50 ms", "p99 ms", "p50 ratio vs direct"], rows))
        print(f"\nadded per query (p50): {(statistics.median(t) - statistics.median(d)) * 1e3:.3f} ms")
        direct.close()
        through.close()
    finally:
        if proxy is not None:
            proxy.kill()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
