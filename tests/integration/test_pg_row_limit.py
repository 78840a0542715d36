"""Issue 17 item 7: a blast-radius limit on writes, whatever their WHERE says, against a real PostgreSQL.

A policy rule ``max_rows: 1`` on insert/update/delete/merge: the wire proxy runs the write measured and, when it
touched more rows than that, rolls it back and applies the rule's action (block, or hold for approval: approved, the
same text runs again without the limit). Every destructive statement below must leave the four rows untouched unless
approved, outside and inside an explicit transaction, over the simple and the extended protocol; the client's view
of its transaction (psycopg's ``transaction_status``, checked against the server's own ``pg_stat_activity``) must
stay right, and the next statement, COMMIT and ROLLBACK must behave as PostgreSQL's would. One-row writes run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from policies.engine import Action, PolicySet, Rule
from tests.support.pg_probes import APP_PASSWORD, CLEAR, NAMES, ProxyThread, WireTap, backend_messages, psql_env
from tests.support.postgres import PgServer, start_postgres

pytestmark = pytest.mark.slow

WRITES = ("delete", "update", "insert", "merge")
SEED = ("DELETE FROM customers; INSERT INTO customers VALUES " +
        ", ".join(f"({i}, '{NAMES[i][0]}', '{NAMES[i][1]}', '{s}')" for i, s in CLEAR.items()))
ORIGINAL = [(i, NAMES[i][0], NAMES[i][1], s) for i, s in CLEAR.items()]

# (id, statement, what it does once approved: "empty" = every row deleted, "renamed" = every name set to 'x')
DESTRUCTIVE = [
    ("delete-gt", "DELETE FROM customers WHERE id > 0", "empty"),
    ("delete-not-null", "DELETE FROM customers WHERE id IS NOT NULL", "empty"),
    ("delete-in-subquery", "DELETE FROM customers WHERE id IN (SELECT id FROM customers)", "empty"),
    ("delete-using", "DELETE FROM customers c USING customers d WHERE c.id = d.id", "empty"),
    ("update-gt", "UPDATE customers SET name = 'x' WHERE id > 0", "renamed"),
    ("merge-delete", "MERGE INTO customers c USING customers d ON c.id = d.id WHEN MATCHED THEN DELETE", "empty"),
    ("upsert-all", "INSERT INTO customers SELECT * FROM customers ON CONFLICT (id) DO UPDATE SET name = 'x'",
     "renamed"),
    ("cte-delete", "WITH d AS (DELETE FROM customers WHERE id > 0 RETURNING 1) SELECT count(*) FROM d", "empty"),
    ("explain-analyze", "EXPLAIN ANALYZE DELETE FROM customers WHERE id > 0", "empty"),
]
IDS = [d[0] for d in DESTRUCTIVE]
SERVER_STATE = {TransactionStatus.IDLE: "idle", TransactionStatus.INTRANS: "idle in transaction",
                TransactionStatus.INERROR: "idle in transaction (aborted)"}


def policy(action: Action) -> PolicySet:
    """The rule under test (built per test: an engine without ``max_rows`` fails each test, not the collection)."""
    return PolicySet("db", Action.ALLOW, (
        Rule("row-limit", action, statements=WRITES, max_rows=1, approver_roles=("reviewers",),
             reason="a write may touch at most one row without approval"),
    ))


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    server = start_postgres()
    server.psql(f"CREATE USER app PASSWORD '{APP_PASSWORD}'")
    server.psql("CREATE DATABASE app OWNER app")
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": APP_PASSWORD}
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(server.port), "-U",
                    "app", "-d", "app", "-c",
                    "CREATE TABLE customers(id int PRIMARY KEY, name text NOT NULL, email text, ssn text)"],
                   check=True, env=env, capture_output=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(pg: PgServer) -> Iterator[psycopg.Connection[Any]]:
    """The test's own connection, straight to the server (no bastion): seeds, and looks at what really happened."""
    with psycopg.connect(host="127.0.0.1", port=pg.port, user="app", password=APP_PASSWORD, dbname="app",
                         autocommit=True) as conn:
        yield conn


@pytest.fixture()
def seeded(server: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    server.execute(SEED)
    return server


def table(server: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return server.execute("SELECT id, name, email, ssn FROM customers ORDER BY id").fetchall()


def after_approval(effect: str) -> list[tuple[Any, ...]]:
    return [] if effect == "empty" else [(i, "x", e, s) for i, _, e, s in ORIGINAL]


class Bastion:
    """A proxy with ``policy`` and a hold that answers ``approval``; psycopg connects through a byte tap."""

    def __init__(self, pg: PgServer, base: Path, action: Action, approval: str = "denied"):
        self.proxy = ProxyThread(pg, base / "proxy", policy(action), approval=approval)
        self.tap = WireTap(self.proxy.proxy.socket_path, base / "tap")

    def connect(self, *, simple: bool, autocommit: bool) -> psycopg.Connection[Any]:
        return psycopg.connect(host=str(self.tap.dir), user="x", dbname="y", autocommit=autocommit,
                               cursor_factory=psycopg.ClientCursor if simple else psycopg.Cursor)

    def close(self) -> None:
        self.tap.close()
        self.proxy.close()


@pytest.fixture()
def make(pg: PgServer, tmp_path: Path) -> Iterator[Any]:
    made: list[Bastion] = []

    def _make(action: Action, approval: str = "denied") -> Bastion:
        b = Bastion(pg, tmp_path / f"b{len(made)}", action, approval)
        made.append(b)
        return b

    yield _make
    for b in made:
        b.close()


def check_status(conn: psycopg.Connection[Any], server: psycopg.Connection[Any], bastion: Bastion) -> None:
    """The client's idea of its transaction is the server's."""
    status = conn.info.transaction_status
    row = server.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (bastion.proxy.upstream_pid,)).fetchone()
    assert row is not None, "the proxy has no upstream session"
    assert SERVER_STATE.get(status) == row[0], f"the client thinks {status.name}, the server is {row[0]!r}"


def run_refused(conn: psycopg.Connection[Any], sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql)
    return e.value


@pytest.mark.parametrize(("name", "sql", "effect"), DESTRUCTIVE, ids=IDS)
def test_without_the_limit_each_statement_really_is_destructive(
        pg: PgServer, tmp_path: Path, seeded: psycopg.Connection[Any], name: str, sql: str, effect: str) -> None:
    """The self-check: through the same proxy with no rule, every statement rewrites or empties the table."""
    p = ProxyThread(pg, tmp_path / "open", PolicySet("db", Action.ALLOW, ()))
    try:
        with psycopg.connect(host=str(p.proxy.socket_dir), user="x", dbname="y", autocommit=True) as conn:
            normal_result(conn.execute(sql), name)
    finally:
        p.close()
    assert table(seeded) == after_approval(effect)


# -- blocked: over the limit, nothing happens, and the session carries on as PostgreSQL would ---------------------
@pytest.mark.parametrize("protocol", ["simple", "extended"])
@pytest.mark.parametrize(("name", "sql", "effect"), DESTRUCTIVE, ids=IDS)
def test_over_the_limit_outside_a_transaction_is_rolled_back_and_refused(
        make: Any, seeded: psycopg.Connection[Any], name: str, sql: str, effect: str, protocol: str) -> None:
    b = make(Action.BLOCK)
    with b.connect(simple=protocol == "simple", autocommit=True) as conn:
        err = run_refused(conn, sql)
        assert "row-limit" in str(err), f"the refusal does not name the rule: {err}"
        assert table(seeded) == ORIGINAL, f"{sql} changed the table though it was refused"
        assert conn.info.transaction_status == TransactionStatus.IDLE
        check_status(conn, seeded, b)
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (4,)
    assert b.proxy.holds == []


@pytest.mark.parametrize("end", ["commit", "rollback"])
@pytest.mark.parametrize("protocol", ["simple", "extended"])
@pytest.mark.parametrize(("name", "sql", "effect"), DESTRUCTIVE, ids=IDS)
def test_over_the_limit_inside_a_transaction_keeps_the_client_state_right(
        make: Any, seeded: psycopg.Connection[Any], name: str, sql: str, effect: str, protocol: str,
        end: str) -> None:
    b = make(Action.BLOCK)
    with b.connect(simple=protocol == "simple", autocommit=False) as conn:
        conn.execute("UPDATE customers SET email = 'before@example.com' WHERE id = 4")  # the client's own work
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        err = run_refused(conn, sql)
        assert "row-limit" in str(err), f"the refusal does not name the rule: {err}"
        status = conn.info.transaction_status
        assert status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)
        check_status(conn, seeded, b)
        expected = list(ORIGINAL)
        if status == TransactionStatus.INERROR:  # as after any error: nothing more until the transaction ends
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                conn.execute("SELECT count(*) FROM customers")
            check_status(conn, seeded, b)
        else:  # the refused statement is gone, the client's transaction goes on with its own work intact
            assert conn.execute("SELECT count(*), max(email) FILTER (WHERE id = 4) FROM customers").fetchone() == \
                (4, "before@example.com")
            assert conn.execute("DELETE FROM customers WHERE id = 3").rowcount == 1  # a one-row write still runs
            check_status(conn, seeded, b)
            if end == "commit":
                expected = [r if r[0] != 4 else (4, r[1], "before@example.com", r[3]) for r in ORIGINAL if r[0] != 3]
        conn.commit() if end == "commit" else conn.rollback()
        assert conn.info.transaction_status == TransactionStatus.IDLE
        check_status(conn, seeded, b)
        assert table(seeded) == expected, f"{sql} then {end.upper()}"
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (len(expected),)


@pytest.mark.parametrize(("name", "sql", "effect"), DESTRUCTIVE, ids=IDS)
def test_over_the_limit_with_psql(make: Any, seeded: psycopg.Connection[Any], name: str, sql: str,
                                  effect: str) -> None:
    b = make(Action.BLOCK)
    env = psql_env(str(b.tap.dir))
    out = subprocess.run(["psql", "-X", "-A", "-t", "-c", sql], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "row-limit" in out.stderr, out.stdout + out.stderr
    assert table(seeded) == ORIGINAL
    out = subprocess.run(["psql", "-X", "-A", "-t", "-c", "BEGIN", "-c", sql, "-c", "SELECT 'after', count(*) FROM "
                          "customers", "-c", "COMMIT"], capture_output=True, text=True, env=env, timeout=60)
    assert "row-limit" in out.stderr, out.stdout + out.stderr
    assert "after|4" in out.stdout or "current transaction is aborted" in out.stderr, out.stdout + out.stderr
    assert out.stdout.rstrip().splitlines()[-1] in ("COMMIT", "ROLLBACK"), out.stdout
    assert table(seeded) == ORIGINAL


def test_over_the_limit_in_a_pipeline(make: Any, seeded: psycopg.Connection[Any]) -> None:
    b = make(Action.BLOCK)
    with b.connect(simple=False, autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match="row-limit"), conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("DELETE FROM customers WHERE id > 0")
            conn.execute("SELECT 2")
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (4,)
    assert table(seeded) == ORIGINAL


# -- one row is within the limit ------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", [Action.BLOCK, Action.REQUIRE_APPROVAL], ids=["block", "hold"])
@pytest.mark.parametrize("protocol", ["simple", "extended"])
@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "in-transaction"])
def test_a_one_row_write_runs_without_approval(make: Any, seeded: psycopg.Connection[Any], action: Action,
                                               protocol: str, autocommit: bool) -> None:
    b = make(action, approval="denied")
    with b.connect(simple=protocol == "simple", autocommit=autocommit) as conn:
        assert conn.execute("DELETE FROM customers WHERE id = 3").rowcount == 1
        assert conn.execute("UPDATE customers SET name = 'Dora' WHERE id = 4").rowcount == 1
        assert conn.execute("INSERT INTO customers VALUES (5, 'Eve', 'eve@example.com', NULL)").rowcount == 1
        assert conn.execute("DELETE FROM customers WHERE id = 5 RETURNING id").fetchall() == [(5,)]
        if not autocommit:
            check_status(conn, seeded, b)
            conn.commit()
        check_status(conn, seeded, b)
    assert b.proxy.holds == []
    assert table(seeded) == [ORIGINAL[0], ORIGINAL[1], (4, "Dora", NAMES[4][1], CLEAR[4])]


def test_a_one_row_write_in_a_pipeline_runs(make: Any, seeded: psycopg.Connection[Any]) -> None:
    b = make(Action.BLOCK)
    with b.connect(simple=False, autocommit=True) as conn:
        with conn.pipeline():
            one = conn.execute("SELECT 1")
            delete = conn.execute("DELETE FROM customers WHERE id = 3")
            update = conn.execute("UPDATE customers SET name = 'Dora' WHERE id = 4")
        assert (one.fetchone(), delete.rowcount, update.rowcount) == ((1,), 1, 1)
    assert table(seeded) == [ORIGINAL[0], ORIGINAL[1], (4, "Dora", NAMES[4][1], CLEAR[4])]


def test_one_row_writes_are_counted_one_statement_at_a_time(make: Any, seeded: psycopg.Connection[Any]) -> None:
    b = make(Action.BLOCK)
    with b.connect(simple=False, autocommit=False) as conn:
        for i in (1, 2, 3):
            assert conn.execute("DELETE FROM customers WHERE id = %s", (i,)).rowcount == 1
        conn.commit()
    assert table(seeded) == [ORIGINAL[3]]


def test_psql_one_row_delete(make: Any, seeded: psycopg.Connection[Any]) -> None:
    b = make(Action.REQUIRE_APPROVAL, approval="denied")
    out = subprocess.run(["psql", "-X", "-A", "-t", "-c", "DELETE FROM customers WHERE id = 3"], capture_output=True,
                         text=True, env=psql_env(str(b.tap.dir)), timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "DELETE 1", out.stdout + out.stderr
    assert [r[0] for r in table(seeded)] == [1, 2, 4] and b.proxy.holds == []


# -- held for approval: approved runs with its normal result, denied leaves the rows -----------------------------------
def normal_result(cur: psycopg.Cursor[Any], name: str) -> None:
    if name == "cte-delete":
        assert cur.fetchall() == [(4,)]
    elif name == "explain-analyze":
        plan = "\n".join(r[0] for r in cur.fetchall())
        assert "Delete on customers" in plan and "actual" in plan, plan
    else:
        assert cur.rowcount == 4, f"{cur.statusmessage}"


@pytest.mark.parametrize(("approval", "end"), [("approved", "autocommit"), ("denied", "autocommit"),
                                               ("approved", "commit"), ("approved", "rollback"),
                                               ("denied", "commit")])
@pytest.mark.parametrize(("name", "sql", "effect"), DESTRUCTIVE, ids=IDS)
def test_over_the_limit_is_held_for_approval(make: Any, seeded: psycopg.Connection[Any], name: str, sql: str,
                                             effect: str, approval: str, end: str) -> None:
    b = make(Action.REQUIRE_APPROVAL, approval=approval)
    autocommit = end == "autocommit"
    with b.connect(simple=autocommit, autocommit=autocommit) as conn:  # autocommit over simple, the rest extended
        if not autocommit:
            conn.execute("SELECT 1")
        if approval == "approved":
            cur = conn.execute(sql)
            normal_result(cur, name)
            assert b.proxy.holds == [sql], "the statement was not held (or held more than once)"
            if not autocommit:
                assert conn.info.transaction_status == TransactionStatus.INTRANS
                check_status(conn, seeded, b)
                assert len(conn.execute("SELECT * FROM customers").fetchall()) == (0 if effect == "empty" else 4)
        else:
            err = run_refused(conn, sql)
            assert "denied" in str(err), str(err)
            assert b.proxy.holds == [sql]
            assert table(seeded) == ORIGINAL
            check_status(conn, seeded, b)
        if not autocommit:
            if conn.info.transaction_status == TransactionStatus.INTRANS and end == "commit" or \
                    conn.info.transaction_status == TransactionStatus.INERROR:
                conn.commit()
            else:
                conn.rollback()
        assert conn.info.transaction_status == TransactionStatus.IDLE
        check_status(conn, seeded, b)
    runs = approval == "approved" and end in ("autocommit", "commit")
    assert table(seeded) == (after_approval(effect) if runs else ORIGINAL)


def test_an_approved_write_in_a_pipeline(make: Any, seeded: psycopg.Connection[Any]) -> None:
    b = make(Action.REQUIRE_APPROVAL, approval="approved")
    with b.connect(simple=False, autocommit=True) as conn:
        with conn.pipeline():
            one = conn.execute("SELECT 1")
            delete = conn.execute("DELETE FROM customers WHERE id > 0")
            two = conn.execute("SELECT 2")
        assert (one.fetchone(), delete.rowcount, two.fetchone()) == ((1,), 4, (2,))
    assert table(seeded) == []


def test_the_simple_protocol_here_is_the_simple_protocol(make: Any, seeded: psycopg.Connection[Any]) -> None:
    """psycopg's ClientCursor sends Query messages (no Parse/Bind: no ParseComplete or BindComplete back)."""
    b = make(Action.BLOCK)
    b.tap.take()
    with b.connect(simple=True, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM customers WHERE id = %s", (1,))
    kinds = {k for k, _ in backend_messages(b.tap.take())}
    assert b"1" not in kinds and b"2" not in kinds and b"D" in kinds
    with b.connect(simple=False, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM customers WHERE id = %s", (1,))
    assert b"1" in {k for k, _ in backend_messages(b.tap.take())}


# -- code planted to run later ----------------------------------------------------------------------------------------
PLANTED = [
    ("rule", ("CREATE TEMP TABLE t(x int)",
              "CREATE RULE wipe AS ON INSERT TO t DO ALSO DELETE FROM customers WHERE id > 0",
              "INSERT INTO t VALUES (1)")),
    ("temp-function", ("CREATE FUNCTION pg_temp.wipe() RETURNS bigint LANGUAGE sql AS "
                       "'WITH d AS (DELETE FROM customers WHERE id > 0 RETURNING 1) SELECT count(*) FROM d'",
                       "SELECT pg_temp.wipe()")),
    ("trigger", ("CREATE TEMP TABLE t(x int)",
                 "CREATE FUNCTION pg_temp.wipe_t() RETURNS trigger LANGUAGE plpgsql AS "
                 "$$BEGIN DELETE FROM customers WHERE id > 0; RETURN NEW; END$$",
                 "CREATE TRIGGER wipe AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION pg_temp.wipe_t()",
                 "INSERT INTO t VALUES (1)")),
]


@pytest.mark.parametrize(("name", "statements"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_code_does_not_get_around_the_limit(make: Any, seeded: psycopg.Connection[Any], name: str,
                                                    statements: tuple[str, ...]) -> None:
    """The demo's policy: the row limit, and code that runs later held for approval (here: denied)."""
    b = make(Action.BLOCK)
    b.proxy.proxy.judge = _demo_judge
    env = psql_env(str(b.tap.dir))
    out = subprocess.run(["psql", "-X", "-A", "-t", *[a for s in statements for a in ("-c", s)]], capture_output=True,
                         text=True, env=env, timeout=60)
    assert table(seeded) == ORIGINAL, f"{name}: the table changed\n{out.stdout}\n{out.stderr}"
    assert "bastion" in out.stderr, out.stdout + out.stderr


@pytest.mark.parametrize(("name", "statements"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_code_really_deletes_without_the_bastion(pg: PgServer, seeded: psycopg.Connection[Any], name: str,
                                                         statements: tuple[str, ...]) -> None:
    env = psql_env("127.0.0.1", pg.port)
    out = subprocess.run(["psql", "-X", "-A", "-t", *[a for s in statements for a in ("-c", s)]], capture_output=True,
                         text=True, env=env, timeout=60)
    assert table(seeded) == [], out.stdout + out.stderr


def _demo_judge(sql: str) -> Any:
    from policies.engine import evaluate_sql

    demo = PolicySet("db", Action.ALLOW, (
        *policy(Action.REQUIRE_APPROVAL).rules,
        Rule("code-needs-approval", Action.REQUIRE_APPROVAL, traits=("plants_code",), approver_roles=("reviewers",)),
    ))
    return evaluate_sql(demo, sql, groups=["ops"], resource="db")


def test_a_trigger_the_owner_planted_counts_against_the_limit(pg: PgServer, make: Any,
                                                              seeded: psycopg.Connection[Any]) -> None:
    """A one-row INSERT whose trigger (the table owner's, not the operator's) deletes every customer: the rows the
    statement touched are five, not one."""
    seeded.execute("CREATE TABLE IF NOT EXISTS audit(x int);"
                   "CREATE OR REPLACE FUNCTION wipe_all() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$BEGIN DELETE FROM customers WHERE id > 0; RETURN NEW; END$$;"
                   "CREATE OR REPLACE TRIGGER wipe AFTER INSERT ON audit FOR EACH ROW EXECUTE FUNCTION wipe_all()")
    try:
        b = make(Action.BLOCK)
        with b.connect(simple=False, autocommit=True) as conn:
            with pytest.raises(psycopg.Error, match="row-limit"):
                conn.execute("INSERT INTO audit VALUES (1)")
            check_status(conn, seeded, b)
        assert table(seeded) == ORIGINAL
    finally:
        seeded.execute("DROP TABLE audit; DROP FUNCTION wipe_all()")
