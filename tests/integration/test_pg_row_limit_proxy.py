"""The wire proxy's row limit (``max_rows``) at the protocol level, against a real PostgreSQL: what the client sees
message by message (compared with what the server itself sends for the same request), the private queries that it
never sees, pipelines, errors in and out of transactions, COMMIT failures, holds withdrawn with a CancelRequest, and
the ways around the measurement that must fail closed."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bastion.proxies.pg import upstream as up
from bastion.proxies.pg.masking import MaskRule
from bastion.proxies.pg.protocol import cstr, message, parse_error, read_message, startup_message
from bastion.proxies.pg.proxy import PgProxy
from bastion.proxies.pg.upstream import Target
from policies.engine import Action, Decision, PolicySet, Rule, evaluate_sql
from tests.support.postgres import PgServer, start_postgres
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow

WRITES = ("delete", "update", "insert", "merge")
HOLD = PolicySet("db", Action.ALLOW, (
    Rule("one-row-writes", Action.REQUIRE_APPROVAL, statements=WRITES, approver_roles=("reviewers",), max_rows=1),
))
BLOCK = PolicySet("db", Action.ALLOW, (Rule("one-row-writes", Action.BLOCK, statements=WRITES, max_rows=1),))
PASSWORD = "app-Pw-123"


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    server = start_postgres()
    server.psql(f"CREATE USER app PASSWORD '{PASSWORD}'")
    server.psql("CREATE DATABASE app OWNER app")
    yield server
    server.stop()


def reset(pg: PgServer) -> None:
    """t: four rows; d: a deferred unique constraint; ruled/trig: writes that write t behind the statement's back."""
    pg.psql("DROP TABLE IF EXISTS t, d, ruled, trig, customers CASCADE;"
            "CREATE TABLE t(id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1,4) g;"
            "CREATE TABLE d(id int UNIQUE DEFERRABLE INITIALLY DEFERRED); INSERT INTO d VALUES (1);"
            "CREATE TABLE ruled(x int); CREATE RULE r AS ON INSERT TO ruled DO ALSO DELETE FROM t WHERE id > 2;"
            "CREATE TABLE trig(x int);"
            "CREATE OR REPLACE FUNCTION trig_f() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN UPDATE t SET v = 'x'; RETURN NEW; END $$;"
            "CREATE TRIGGER tg AFTER INSERT ON trig FOR EACH ROW EXECUTE FUNCTION trig_f();"
            "CREATE TABLE customers(id int PRIMARY KEY, name text, ssn text);"
            "INSERT INTO customers VALUES (1, 'Ann', '123-45-6789'), (2, 'Bob', '987-65-4321');"
            "ALTER TABLE t OWNER TO app; ALTER TABLE d OWNER TO app; ALTER TABLE ruled OWNER TO app;"
            "ALTER TABLE trig OWNER TO app; ALTER TABLE customers OWNER TO app", db="app")


def rows(pg: PgServer) -> str:
    return pg.psql("SELECT string_agg(id || ':' || coalesce(v, ''), ',' ORDER BY id) FROM t", db="app").strip()


def count(pg: PgServer, table: str) -> int:
    return int(pg.psql(f"SELECT count(*) FROM {table}", db="app"))


FULL = "1:v1,2:v2,3:v3,4:v4"


class ProxyThread:
    """A PgProxy on its own event loop, as the daemon runs it; ``approval``: approved, denied or wait-for-cancel."""

    def __init__(self, pg: PgServer, sockdir: Path, policy: PolicySet = HOLD, approval: str = "approved",
                 masking: list[MaskRule] | None = None):
        self.loop = asyncio.new_event_loop()
        self.approval = approval
        self.decisions: list[Decision] = []
        self.holds: list[Decision] = []
        self.withdrawn = threading.Event()
        self.proxy = PgProxy(Target("127.0.0.1", pg.port, "app", "app"), PASSWORD,
                             judge=lambda sql: evaluate_sql(policy, sql, groups=[], resource="db"),
                             hold=self._hold, note=self.decisions.append, withdraw=self.withdrawn.set,
                             socket_dir=sockdir, masking=masking)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)

    async def _hold(self, d: Decision) -> dict[str, Any]:
        self.holds.append(d)
        if self.approval == "wait-for-cancel":
            self.withdrawn.clear()
            while not self.withdrawn.is_set():
                await asyncio.sleep(0.02)
            return {"status": "withdrawn", "status_reason": "withdrawn by the requester"}
        return {"status": self.approval, "status_reason": f"{self.approval} by bob"}

    @property
    def sockdir(self) -> Path:
        return self.proxy.socket_dir

    def connect(self, **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(host=str(self.sockdir), user="x", dbname="y", **kw)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture()
def proxy(pg: PgServer, tmp_path: Path) -> Iterator[ProxyThread]:
    reset(pg)
    p = ProxyThread(pg, tmp_path / "sock")
    yield p
    p.close()


@pytest.fixture()
def blocking(pg: PgServer, tmp_path: Path) -> Iterator[ProxyThread]:
    reset(pg)
    p = ProxyThread(pg, tmp_path / "sock", policy=BLOCK)
    yield p
    p.close()


# -- a bare protocol client: every message the client receives, in order ---------------------------------------
def Q(sql: str) -> bytes:
    return message(b"Q", cstr(sql))


def P(sql: str, name: str = "") -> bytes:
    return message(b"P", cstr(name) + cstr(sql) + struct.pack("!h", 0))


def B(stmt: str = "", portal: str = "") -> bytes:
    return message(b"B", cstr(portal) + cstr(stmt) + struct.pack("!hhh", 0, 0, 0))


def D(portal: str = "") -> bytes:
    return message(b"D", b"P" + cstr(portal))


def E(portal: str = "") -> bytes:
    return message(b"E", cstr(portal) + struct.pack("!i", 0))


SYNC, FLUSH = message(b"S"), message(b"H")


def EXT(sql: str) -> bytes:
    return P(sql) + B() + D() + E() + SYNC


class Wire:
    """One connection, through the proxy (``sockdir``) or straight to the server (the reference)."""

    def __init__(self, pg: PgServer, sockdir: Path | None = None):
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, str]] = []
        if sockdir is None:
            conn = self.loop.run_until_complete(up.connect(Target("127.0.0.1", pg.port, "app", "app"), PASSWORD,
                                                           application_name="reference"))
            self.reader, self.writer = conn.reader, conn.writer
        else:
            self.reader, self.writer = self.loop.run_until_complete(
                asyncio.open_unix_connection(str(sockdir / ".s.PGSQL.5432")))
            self.writer.write(startup_message({"user": "x", "database": "y"}))
            self._read_until(1)

    def _read_until(self, ready: int) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        while ready:
            kind, payload = self.loop.run_until_complete(asyncio.wait_for(read_message(self.reader), 30))
            if kind == b"Z":
                ready -= 1
                out.append(("Z", payload.decode()))
            elif kind == b"C":
                out.append(("C", payload.rstrip(b"\x00").decode()))
            elif kind == b"E":
                err = parse_error(payload)
                self.errors.append(err)
                out.append(("E", err.get("C", "")))
            elif kind == b"D":
                out.append(("D", payload[2:].hex()))
            elif kind in (b"S", b"K", b"R"):
                continue  # startup and parameter reports
            else:
                out.append((kind.decode(), ""))
        return out

    def __call__(self, *msgs: bytes, ready: int = 1) -> list[tuple[str, str]]:
        self.writer.write(b"".join(msgs))
        self.loop.run_until_complete(self.writer.drain())
        return self._read_until(ready)

    def close(self) -> None:
        self.writer.write(message(b"X"))
        self.writer.close()
        self.loop.close()


def same_as_server(pg: PgServer, proxy: ProxyThread, steps: list[tuple[bytes, int]]) -> list[list[tuple[str, str]]]:
    """Run ``steps`` straight against the server, reset, then through the proxy: the client sees the same
    messages (the statements are within the limit)."""
    reset(pg)
    ref = Wire(pg)
    expected = [ref(msgs, ready=n) for msgs, n in steps]
    ref.close()
    reset(pg)
    w = Wire(pg, proxy.sockdir)
    got = [w(msgs, ready=n) for msgs, n in steps]
    w.close()
    assert got == expected
    return got


# -- the counter sees every way of writing -----------------------------------------------------------------------
@pytest.mark.parametrize(("sql", "touched"), [
    ("DELETE FROM t WHERE id > 0", 4),
    ("DELETE FROM t WHERE id IS NOT NULL", 4),
    ("DELETE FROM t WHERE id IN (SELECT id FROM t)", 4),
    ("DELETE FROM t USING ruled WHERE true OR ruled.x = 1", 0),  # ruled is empty: a join with nothing
    ("UPDATE t SET v = 'x' WHERE id > 1", 3),
    ("WITH gone AS (DELETE FROM t WHERE id > 1 RETURNING id) SELECT count(*) FROM gone", 3),
    ("DELETE FROM t WHERE id > 2 RETURNING id", 2),
    ("MERGE INTO t USING (SELECT generate_series(1, 4) AS id) s ON t.id = s.id WHEN MATCHED THEN DELETE", 4),
    ("INSERT INTO t SELECT g, 'y' FROM generate_series(1, 4) g ON CONFLICT (id) DO UPDATE SET v = 'z'", 4),
    ("EXPLAIN ANALYZE DELETE FROM t WHERE id > 1", 3),
    ("INSERT INTO ruled VALUES (1)", 3),   # the rule deletes two rows of t
    ("INSERT INTO trig VALUES (1)", 5),    # the trigger updates every row of t
    ("SELECT 1; UPDATE t SET v = 'x' WHERE id = 1; UPDATE t SET v = 'x' WHERE id = 2", 2),  # one Query, measured whole
])
def test_the_counter_sees_rows_however_the_statement_touches_them(sql: str, touched: int, blocking: ProxyThread,
                                                                  pg: PgServer) -> None:
    w = Wire(pg, blocking.sockdir)
    try:
        got = w(Q(sql))
    finally:
        w.close()
    if touched <= 1:
        assert got[-1] == ("Z", "I") and not w.errors
        return
    assert got == [("E", "42501"), ("Z", "I")]  # one error, nothing else: no result of the rolled-back statement
    assert w.errors[0]["M"] == f"bastion: blocked by rule 'one-row-writes': touched {touched} rows, limit 1; " \
                               "rolled back"
    assert rows(pg) == FULL and count(pg, "ruled") == count(pg, "trig") == 0


# -- what the client sees --------------------------------------------------------------------------------------
def test_within_the_limit_the_client_sees_exactly_what_the_server_sends(proxy: ProxyThread, pg: PgServer) -> None:
    """No private message (BEGIN, SAVEPOINT, the counter SELECT, COMMIT) reaches the client: message for message
    the same as straight from the server, with the same transaction status after each."""
    got = same_as_server(pg, proxy, [
        (Q("DELETE FROM t WHERE id = 3"), 1),
        (EXT("UPDATE t SET v = 'w' WHERE id = 4 RETURNING id"), 1),
        (Q("BEGIN"), 1),
        (Q("DELETE FROM t WHERE id = 1"), 1),
        (EXT("INSERT INTO t VALUES (9, 'n')"), 1),
        (Q("SELECT count(*) FROM t"), 1),
        (Q("COMMIT"), 1),
    ])
    assert [step[-1] for step in got] == [("Z", "I"), ("Z", "I"), ("Z", "T"), ("Z", "T"), ("Z", "T"), ("Z", "T"),
                                          ("Z", "I")]
    assert got[0] == [("C", "DELETE 1"), ("Z", "I")]
    assert got[1] == [("1", ""), ("2", ""), ("T", ""), ("D", struct.pack("!i", 1).hex() + b"4".hex()),
                      ("C", "UPDATE 1"), ("Z", "I")]
    assert rows(pg) == "2:v2,4:w,9:n"
    assert proxy.proxy.errors == []


def test_a_statement_error_leaves_the_transaction_state_postgresql_would(proxy: ProxyThread, pg: PgServer) -> None:
    """Outside a transaction the failed request is rolled back whole ('I'); inside the client's transaction it is
    left aborted ('E'), with no savepoint of the bastion left to roll back to."""
    got = same_as_server(pg, proxy, [
        (Q("DELETE FROM t WHERE id = 3; SELECT 1/0"), 1),
        (EXT("DELETE FROM t WHERE id = 2 AND 1/(id - 2) = 1"), 1),
        (Q("BEGIN"), 1),
        (Q("DELETE FROM t WHERE id = 1"), 1),
        (Q("DELETE FROM t WHERE id = 2 AND 1/0 = 1"), 1),
        (Q("SELECT 1"), 1),
        (Q("DELETE FROM t"), 1),  # an aborted transaction: the server refuses it, nothing to measure
        (P("DELETE FROM t WHERE id > 0") + B() + E() + B() + E() + SYNC, 1),
        (Q("ROLLBACK TO SAVEPOINT bastion_limit"), 1),
        (Q("ROLLBACK"), 1),
        (Q("BEGIN"), 1),
        (EXT("DELETE FROM t WHERE id = 2 AND 1/(id - 2) = 1"), 1),
        (Q("COMMIT"), 1),
    ])
    assert got[0] == [("C", "DELETE 1"), ("E", "22012"), ("Z", "I")]
    assert got[1] == [("1", ""), ("2", ""), ("n", ""), ("E", "22012"), ("Z", "I")]
    assert got[4] == [("E", "22012"), ("Z", "E")]
    assert got[5] == got[6] == got[7] == [("E", "25P02"), ("Z", "E")]
    assert got[8] == [("E", "3B001"), ("Z", "E")]   # savepoint "bastion_limit" does not exist
    assert got[11][-1] == ("Z", "E") and got[12] == [("C", "ROLLBACK"), ("Z", "I")]
    assert rows(pg) == FULL


def test_a_failing_commit_reaches_the_client_as_the_server_sends_it(proxy: ProxyThread, pg: PgServer) -> None:
    """A deferred constraint fails at our COMMIT: the client gets what PostgreSQL sends when its implicit
    transaction fails to commit (a Query: the error instead of the last CommandComplete; the extended protocol: the
    CommandComplete, then the error at Sync), then 'I'; nothing is written."""
    got = same_as_server(pg, proxy, [
        (Q("INSERT INTO d VALUES (1)"), 1),
        (EXT("INSERT INTO d VALUES (1)"), 1),
        (Q("INSERT INTO d VALUES (2)"), 1),
    ])
    assert got[0] == [("E", "23505"), ("Z", "I")]
    assert got[1] == [("1", ""), ("2", ""), ("n", ""), ("C", "INSERT 0 1"), ("E", "23505"), ("Z", "I")]
    assert pg.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM d", db="app").strip() == "1,2"


def test_over_the_limit_in_and_out_of_a_transaction(blocking: ProxyThread, pg: PgServer) -> None:
    w = Wire(pg, blocking.sockdir)
    try:
        assert w(Q("DELETE FROM t WHERE id > 0")) == [("E", "42501"), ("Z", "I")]
        assert w(EXT("DELETE FROM t WHERE id > 0")) == [("E", "42501"), ("Z", "I")]
        assert w(Q("BEGIN")) == [("C", "BEGIN"), ("Z", "T")]
        assert w(Q("DELETE FROM t WHERE id = 1")) == [("C", "DELETE 1"), ("Z", "T")]
        # refused over the limit: its rows come back, the client's transaction goes on ('T', as for any refusal)
        assert w(Q("UPDATE t SET v = 'x'")) == [("E", "42501"), ("Z", "T")]
        assert w(EXT("UPDATE t SET v = 'x' WHERE id > 2")) == [("E", "42501"), ("Z", "T")]
        assert w(Q("SELECT string_agg(v, ',' ORDER BY id) FROM t"))[1] == ("D", (struct.pack("!i", 8) +
                                                                                  b"v2,v3,v4").hex())
        assert w(Q("COMMIT")) == [("C", "COMMIT"), ("Z", "I")]
    finally:
        w.close()
    assert [e["M"].split(":")[-1].strip() for e in w.errors] == ["touched 4 rows, limit 1; rolled back"] * 2 + \
        ["touched 3 rows, limit 1; rolled back", "touched 2 rows, limit 1; rolled back"]
    assert rows(pg) == "2:v2,3:v3,4:v4"


# -- pipelines -------------------------------------------------------------------------------------------------
def test_pipelined_requests_keep_their_order_and_statuses(proxy: ProxyThread, pg: PgServer) -> None:
    """Requests sent back to back: the measured one waits until the earlier ones are answered, then runs alone."""
    got = same_as_server(pg, proxy, [
        (Q("SELECT 1") + Q("DELETE FROM t WHERE id = 3") + Q("SELECT 2") + EXT("SELECT 3") +
         EXT("DELETE FROM t WHERE id = 4") + EXT("SELECT 4") + Q("BEGIN") + EXT("UPDATE t SET v = 'p' WHERE id = 1") +
         Q("UPDATE t SET v = 'q' WHERE id = 2") + Q("COMMIT"), 10),
    ])
    assert [m for m in got[0] if m[0] in "CZ"] == [
        ("C", "SELECT 1"), ("Z", "I"), ("C", "DELETE 1"), ("Z", "I"), ("C", "SELECT 1"), ("Z", "I"),
        ("C", "SELECT 1"), ("Z", "I"), ("C", "DELETE 1"), ("Z", "I"), ("C", "SELECT 1"), ("Z", "I"),
        ("C", "BEGIN"), ("Z", "T"), ("C", "UPDATE 1"), ("Z", "T"), ("C", "UPDATE 1"), ("Z", "T"),
        ("C", "COMMIT"), ("Z", "I")]
    assert rows(pg) == "1:p,2:q"


def test_an_over_limit_request_inside_a_pipeline(blocking: ProxyThread, pg: PgServer) -> None:
    w = Wire(pg, blocking.sockdir)
    try:
        got = w(Q("SELECT 1") + Q("DELETE FROM t WHERE id > 0") + EXT("SELECT 2") + EXT("DELETE FROM t") +
                Q("SELECT 3"), ready=5)
    finally:
        w.close()
    assert [m for m in got if m[0] in "CEZ"] == [
        ("C", "SELECT 1"), ("Z", "I"), ("E", "42501"), ("Z", "I"), ("C", "SELECT 1"), ("Z", "I"),
        ("E", "42501"), ("Z", "I"), ("C", "SELECT 1"), ("Z", "I")]
    assert rows(pg) == FULL


def BDE(sql: str) -> bytes:
    """One statement of a pipeline: no Sync."""
    return P(sql) + B() + D() + E()


def test_a_limited_statement_inside_a_pipeline_is_measured_from_there_to_the_sync(proxy: ProxyThread,
                                                                                   pg: PgServer) -> None:
    """Within the limit: the proxy's own statements run inside the batch, just before the limited one, and the
    client sees exactly what the server sends, with the same transaction status."""
    got = same_as_server(pg, proxy, [
        (BDE("SELECT 1") + BDE("DELETE FROM t WHERE id = 3") + BDE("SELECT 2") + SYNC, 1),
        (BDE("UPDATE t SET v = 'a' WHERE id = 1") + BDE("DELETE FROM t WHERE id = 4") + SYNC, 1),
        (Q("BEGIN"), 1),
        (BDE("SELECT 3") + BDE("UPDATE t SET v = 'b' WHERE id = 2") + SYNC, 1),
        (Q("COMMIT"), 1),
        (P("BEGIN") + B() + E() + BDE("UPDATE t SET v = 'c' WHERE id = 2") + SYNC, 1),  # BEGIN earlier in the batch
        (Q("COMMIT"), 1),
        (P("SELECT 1/0") + B() + E() + BDE("DELETE FROM t") + SYNC, 1),  # failed before: the server skips the rest
    ])
    assert [step[-1] for step in got] == [("Z", "I"), ("Z", "I"), ("Z", "T"), ("Z", "T"), ("Z", "I"), ("Z", "T"),
                                          ("Z", "I"), ("Z", "I")]
    assert rows(pg) == "1:a,2:c"
    assert proxy.proxy.errors == []


def comment(pg: PgServer) -> str:
    return pg.psql("SELECT coalesce(obj_description('t'::regclass, 'pg_class'), '-')", db="app").strip()


MARK = BDE("COMMENT ON TABLE t IS 'seen'")  # a change that is not a limited write: the batch's own earlier work


def test_over_the_limit_inside_a_pipeline(blocking: ProxyThread, pg: PgServer) -> None:
    """Outside a transaction the batch is one implicit transaction: refused, all of it is rolled back (as after any
    error in a batch); inside the client's transaction only the measured part is."""
    w = Wire(pg, blocking.sockdir)
    try:
        batch = MARK + BDE("DELETE FROM t WHERE id > 1") + SYNC
        assert w(batch) == [("1", ""), ("2", ""), ("n", ""), ("C", "COMMENT"), ("E", "42501"), ("Z", "I")]
        assert rows(pg) == FULL and comment(pg) == "-"
        assert w(Q("BEGIN"), batch, ready=2)[-3:] == [("C", "COMMENT"), ("E", "42501"), ("Z", "T")]
        assert w(Q("COMMIT")) == [("C", "COMMIT"), ("Z", "I")]
        assert "touched 3 rows, limit 1" in w.errors[-1]["M"]
        assert rows(pg) == FULL and comment(pg) == "seen"
        # each limited statement of a batch is measured on its own; one over its limit refuses the batch
        assert w(BDE("SELECT 1") + BDE("DELETE FROM t WHERE id = 3") + BDE("DELETE FROM t WHERE id > 1") +
                 BDE("DELETE FROM t WHERE id = 1") + SYNC)[-2:] == [("E", "42501"), ("Z", "I")]
        assert "touched 2 rows, limit 1" in w.errors[-1]["M"]
        # after transaction control (other than BEGIN) in the same batch its state is unknown: refused
        assert w(P("COMMIT") + B() + E() + BDE("DELETE FROM t WHERE id = 3") + SYNC)[-2:] == [("E", "0A000"),
                                                                                               ("Z", "I")]
        assert "cannot follow transaction control" in w.errors[-1]["M"]
    finally:
        w.close()
    assert rows(pg) == FULL
    with blocking.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="touched 2 rows"), conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("DELETE FROM t WHERE id = %s", (3,))
            conn.execute("DELETE FROM t WHERE id > %s", (1,))
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert rows(pg) == FULL
        with conn.pipeline():
            one = conn.execute("SELECT 1")
            three = conn.execute("DELETE FROM t WHERE id = %s", (3,))
            four = conn.execute("UPDATE t SET v = %s WHERE id = %s", ("w", 4))
        assert one.fetchone() == (1,) and three.rowcount == four.rowcount == 1
        conn.cursor().executemany("INSERT INTO t VALUES (%s, %s)", [(7, "a"), (8, "b"), (9, "c")])
    assert rows(pg) == "1:v1,2:v2,4:w,7:a,8:b,9:c"


def test_held_inside_a_pipeline(pg: PgServer, tmp_path: Path) -> None:
    """Approved, the measured part runs again and the whole batch commits, exactly as the server alone answers;
    denied, the whole batch is rolled back, the batch's earlier work with it."""
    batch = MARK + BDE("DELETE FROM t WHERE id > 2") + BDE("SELECT 9") + SYNC
    approve = ProxyThread(pg, tmp_path / "a")
    try:
        got = same_as_server(pg, approve, [
            (batch, 1), (Q("BEGIN"), 1), (Q("INSERT INTO t VALUES (3, 'v3'), (4, 'v4')"), 1), (batch, 1),
            (BDE("UPDATE t SET v = 'x'") + SYNC, 1), (Q("ROLLBACK"), 1)])
        assert [step[-1] for step in got] == [("Z", "I"), ("Z", "T"), ("Z", "T"), ("Z", "T"), ("Z", "T"), ("Z", "I")]
        assert [d.reason for d in approve.holds] == ["touched 2 rows, limit 1; rolled back"] * 4
    finally:
        approve.close()
    assert rows(pg) == "1:v1,2:v2" and comment(pg) == "seen"
    reset(pg)
    deny = ProxyThread(pg, tmp_path / "d", approval="denied")
    try:
        w = Wire(pg, deny.sockdir)
        got = w(batch)
        w.close()
    finally:
        deny.close()
    assert got == [("1", ""), ("2", ""), ("n", ""), ("C", "COMMENT"), ("E", "42501"), ("Z", "I")]
    assert rows(pg) == FULL and comment(pg) == "-"


def test_each_limited_statement_of_a_batch_is_measured_on_its_own(blocking: ProxyThread, pg: PgServer) -> None:
    """A batch is measured from its first limited statement to its Sync, split at each further one (the rows of
    what runs between two limited statements count for the first); a Query is measured whole."""
    w = Wire(pg, blocking.sockdir)
    try:
        one = P("DELETE FROM t WHERE id = 1") + B() + E() + P("DELETE FROM t WHERE id = 2") + B() + E() + SYNC
        assert w(one) == [("1", ""), ("2", ""), ("C", "DELETE 1"), ("1", ""), ("2", ""), ("C", "DELETE 1"),
                          ("Z", "I")]
        two = P("DELETE FROM t WHERE id = 3") + B() + E() + P("SELECT 7") + B() + E() + SYNC
        assert w(two) == [("1", ""), ("2", ""), ("C", "DELETE 1"), ("1", ""), ("2", ""),
                          ("D", (struct.pack("!i", 1) + b"7").hex()), ("C", "SELECT 1"), ("Z", "I")]
        # a prepared limited statement bound again in the same batch (executemany): each Bind is a statement
        pg.psql("INSERT INTO t VALUES (5, 'v5'), (6, 'v6')", db="app")
        many = P("UPDATE t SET v = 'x' WHERE id >= $1", "u") + SYNC
        assert w(many) == [("1", ""), ("Z", "I")]
        bind = lambda v: message(b"B", cstr("") + cstr("u") + struct.pack("!hhi", 0, 1, len(v)) + v +  # noqa: E731
                                 struct.pack("!h", 0))
        assert w(bind(b"6") + E() + bind(b"6") + E() + SYNC) == [("2", ""), ("C", "UPDATE 1"), ("2", ""),
                                                                  ("C", "UPDATE 1"), ("Z", "I")]
        assert w(bind(b"6") + E() + bind(b"0") + E() + SYNC) == [("E", "42501"), ("Z", "I")]
        assert w(Q("DELETE FROM t WHERE id = 4; DELETE FROM t WHERE id = 4")) == [("C", "DELETE 1"), ("C", "DELETE 0"),
                                                                                 ("Z", "I")]
        assert w(Q("UPDATE t SET v = 'y' WHERE id = 5; UPDATE t SET v = 'y' WHERE id = 6")) == [("E", "42501"),
                                                                                               ("Z", "I")]
    finally:
        w.close()
    assert rows(pg) == "5:v5,6:x"


# -- holds -----------------------------------------------------------------------------------------------------
def test_over_the_limit_held_then_approved_runs_again_without_the_limit(proxy: ProxyThread, pg: PgServer) -> None:
    with proxy.connect(autocommit=True) as conn:
        # a named prepared statement (psycopg prepare=True): closed privately before the same messages run again
        cur = conn.execute("DELETE FROM t WHERE id > %s RETURNING id", (2,), prepare=True)
        assert sorted(r[0] for r in cur.fetchall()) == [3, 4]
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        cur = conn.execute("UPDATE t SET v = 'a' WHERE id < %s", (9,))
        assert cur.rowcount == 2
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES (7, 'x'), (8, 'y')")
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            raise psycopg.Rollback()
    assert [d.reason for d in proxy.holds] == ["touched 2 rows, limit 1; rolled back"] * 3
    assert rows(pg) == "1:a,2:a"


def test_over_the_limit_denied_leaves_every_row(pg: PgServer, tmp_path: Path) -> None:
    reset(pg)
    p = ProxyThread(pg, tmp_path / "s", approval="denied")
    try:
        w = Wire(pg, p.sockdir)
        assert w(Q("DELETE FROM t WHERE id > 0")) == [("E", "42501"), ("Z", "I")]
        assert w(Q("BEGIN"), EXT("DELETE FROM t WHERE id > 0"), ready=2) == [("C", "BEGIN"), ("Z", "T"),
                                                                           ("E", "42501"), ("Z", "T")]
        assert w(Q("COMMIT")) == [("C", "COMMIT"), ("Z", "I")]
        w.close()
    finally:
        p.close()
    assert w.errors[0]["M"] == "bastion: request denied: denied by bob (touched 4 rows, limit 1; rolled back)"
    assert rows(pg) == FULL


def test_a_cancel_request_withdraws_a_held_write(pg: PgServer, tmp_path: Path) -> None:
    """psycopg's cancel (its CancelRequest carries the proxy's key) and psql's Ctrl-C withdraw the hold; the rows
    were rolled back before anyone was asked, and the client's transaction goes on."""
    reset(pg)
    p = ProxyThread(pg, tmp_path / "c", approval="wait-for-cancel")
    try:
        with p.connect(autocommit=True) as conn:
            conn.execute("BEGIN")
            conn.execute("DELETE FROM t WHERE id = 1")
            result: list[BaseException] = []

            def run() -> None:
                try:
                    conn.execute("DELETE FROM t WHERE id > %s", (0,))
                except BaseException as e:  # noqa: BLE001 - handed to the test thread
                    result.append(e)

            worker = threading.Thread(target=run)
            worker.start()
            deadline = time.monotonic() + 10
            while not p.holds and time.monotonic() < deadline:
                time.sleep(0.02)
            assert rows(pg) == FULL  # held: rolled back already (and the first DELETE is not committed)
            conn.cancel_safe(timeout=10)  # libpq's blocking PQcancel would hold the GIL the proxy thread needs
            worker.join(10)
            assert result and "request withdrawn" in str(result[0])
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            conn.execute("COMMIT")
        assert rows(pg) == "2:v2,3:v3,4:v4"
        env = {"PATH": "/usr/bin:/bin", "PGHOST": str(p.sockdir), "TERM": "xterm", "HOME": str(tmp_path)}
        with Terminal(["psql", "-X"], env=env) as t:
            t.wait_for(r"=>$")
            t.send("BEGIN;\r")
            t.wait_for(r"=\*>$")  # psql's prompt shows the transaction status the proxy reported
            t.send("UPDATE t SET v = 'gone';\r")
            t.wait_for(r"UPDATE t SET v = 'gone';")
            deadline = time.monotonic() + 10
            while len(p.holds) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            t.send_key("ctrl-c")
            t.wait_for(r"request withdrawn")
            t.wait_for(r"=\*>$")  # still in the transaction, not aborted
            t.send("COMMIT;\r")
            t.wait_for(r"^COMMIT")
            t.send("\\q\r")
            t.wait_exit()
    finally:
        p.close()
    assert rows(pg) == "2:v2,3:v3,4:v4"


# -- the ways around the measurement fail closed -----------------------------------------------------------------
def test_a_prepared_statement_run_again_by_bind_alone_is_measured(blocking: ProxyThread, pg: PgServer) -> None:
    with blocking.connect(autocommit=True) as conn:
        conn.execute("DELETE FROM t WHERE id >= %s", (4,), prepare=True)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="touched 3 rows, limit 1"):
            conn.execute("DELETE FROM t WHERE id >= %s", (1,), prepare=True)  # Bind/Execute only, no Parse
    assert rows(pg) == "1:v1,2:v2,3:v3"
    w = Wire(pg, blocking.sockdir)
    try:
        # SQL PREPARE runs measured (0 rows); a protocol Bind of it later is measured like the statement
        assert w(Q("PREPARE d AS DELETE FROM t")) == [("C", "PREPARE"), ("Z", "I")]
        assert w(B("d") + E() + SYNC) == [("E", "42501"), ("Z", "I")]
        # a statement the proxy never saw prepared (its text was never judged) is not bound at all
        assert w(B("nowhere") + E() + SYNC) == [("E", "42501"), ("Z", "I")]
        assert "was not prepared through the bastion" in w.errors[-1]["M"]
        # a portal of a limited statement bound in one batch and executed in a later one
        assert w(Q("BEGIN"))[-1] == ("Z", "T")
        assert w(P("DELETE FROM t") + B(portal="later") + SYNC) == [("1", ""), ("2", ""), ("Z", "T")]
        assert w(E("later") + SYNC) == [("E", "0A000"), ("Z", "T")]
        assert "runs only in the batch (up to Sync) that bound it" in w.errors[-1]["M"]
        assert w(Q("COMMIT"))[-1] == ("Z", "I")
    finally:
        w.close()
    assert rows(pg) == "1:v1,2:v2,3:v3"


def test_transaction_control_copy_and_flush_cannot_run_under_a_limit(blocking: ProxyThread, pg: PgServer) -> None:
    w = Wire(pg, blocking.sockdir)
    try:
        assert w(Q("BEGIN; DELETE FROM t WHERE id = 1; COMMIT")) == [("E", "0A000"), ("Z", "I")]
        assert "transaction control" in w.errors[-1]["M"] and "send those statements separately" in w.errors[-1]["M"]
        assert w(Q("DELETE FROM t WHERE id = 1; COPY t FROM STDIN")) == [("E", "0A000"), ("Z", "I")]
        assert "COPY FROM STDIN" in w.errors[-1]["M"]
        # in one extended batch: COMMIT would end the measured transaction; the whole batch is rolled back
        batch = P("DELETE FROM t WHERE id = 2") + B() + E() + P("COMMIT") + B() + E() + SYNC
        assert w(batch) == [("1", ""), ("2", ""), ("C", "DELETE 1"), ("E", "0A000"), ("Z", "I")]
        # a COMMIT prepared earlier and bound inside a measured batch: the same
        assert w(P("COMMIT", "c") + SYNC) == [("1", ""), ("Z", "I")]
        assert w(P("DELETE FROM t WHERE id = 2") + B() + E() + B("c") + E() + SYNC)[-2:] == [("E", "0A000"),
                                                                                           ("Z", "I")]
        # a Flush inside a measured batch: its results are held until Sync, so the client hears at once
        w.writer.write(P("DELETE FROM t WHERE id = 2") + B() + E() + FLUSH)
        kind, payload = w.loop.run_until_complete(asyncio.wait_for(read_message(w.reader), 10))
        assert kind == b"E" and "a Flush inside a batch" in parse_error(payload)["M"]
        assert w(SYNC) == [("Z", "I")]
    finally:
        w.close()
    assert rows(pg) == FULL


def test_nothing_the_session_creates_stands_in_for_the_counter(blocking: ProxyThread, pg: PgServer) -> None:
    """The counter query is fully qualified: a temp view named like it, or a search path, changes nothing."""
    w = Wire(pg, blocking.sockdir)
    try:
        assert w(Q("CREATE TEMP VIEW pg_stat_xact_user_tables AS SELECT 0::oid AS relid, 0::bigint AS n_tup_ins, "
                   "0::bigint AS n_tup_upd, 0::bigint AS n_tup_del"))[-1] == ("Z", "I")
        assert w(Q("SET search_path = pg_temp, pg_catalog, public"))[-1] == ("Z", "I")
        assert w(Q("SELECT count(*) FROM pg_stat_xact_user_tables"))[1] == ("D", (struct.pack("!i", 1) +
                                                                                  b"1").hex())
        assert w(Q("DELETE FROM t WHERE id > 1")) == [("E", "42501"), ("Z", "I")]
        assert w(Q("SET track_counts = off"))[0] == ("E", "42501")  # superuser only: the app user cannot
    finally:
        w.close()
    assert rows(pg) == FULL


# -- masking still holds in measured requests ------------------------------------------------------------------
def test_masked_columns_stay_masked_in_measured_and_prepared_requests(pg: PgServer, tmp_path: Path) -> None:
    reset(pg)
    p = ProxyThread(pg, tmp_path / "m", masking=[MaskRule("customers", "ssn", "keep_last", 4)])
    try:
        with p.connect(autocommit=True) as conn:
            cur = conn.execute("DELETE FROM t WHERE id = 4; SELECT ssn FROM customers ORDER BY id")
            assert cur.nextset() and cur.fetchall() == [("*******6789",), ("*******4321",)]
            # approved over the limit: the run again is masked too
            cur = conn.execute("UPDATE t SET v = 'm'; SELECT ssn || '' FROM customers ORDER BY id")
            assert cur.nextset() and cur.fetchall() == [("********",), ("********",)]  # computed: masked whole
            for _ in range(3):  # prepared: later runs are Bind/Execute only, masked all the same
                got = conn.execute("SELECT ssn || '' FROM customers WHERE id = %s", (1,), prepare=True).fetchall()
                assert got == [("********",)]
    finally:
        p.close()
    assert rows(pg) == "1:m,2:m,3:m"


def test_masking_holds_for_a_batch_whose_sync_comes_after_an_earlier_answer(pg: PgServer, tmp_path: Path) -> None:
    """A pipelined batch judged (reads masked data) before the previous batch's ReadyForQuery arrives, and synced
    after it: its results are still treated as reading masked data."""
    reset(pg)
    p = ProxyThread(pg, tmp_path / "r", masking=[MaskRule("customers", "ssn", "keep_last", 4)])
    try:
        w = Wire(pg, p.sockdir)
        w.writer.write(EXT("SELECT pg_sleep(0.3)") + P("SELECT ssn || '' FROM customers WHERE id = 1") + B() + D() +
                       E())
        w.loop.run_until_complete(w.writer.drain())
        time.sleep(1)  # the first batch's answer has gone through the proxy by now
        got = w(SYNC, ready=2)
        w.close()
    finally:
        p.close()
    values = [bytes.fromhex(v) for k, v in got if k == "D"]
    assert values[1] == struct.pack("!i", 8) + b"********" and b"123-45" not in b"".join(values)
