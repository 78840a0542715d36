"""Issue 17: masking by column lineage, probed as a hostile operator would, against a real PostgreSQL.

A PgProxy masks ``customers.ssn`` (keep_last 4). Every probe of tests/support/pg_probes.py runs through it with psql
(each statement its own Query) or psycopg (the extended protocol, binary results, prepared statements, server-side
cursors, COPY, pipelines), and through a second proxy on a twin database whose SSNs differ in every hidden digit.
Whatever the client receives must hold no clear SSN nor an obvious transform of one, must be byte for byte the same
on the twin (nothing the operator sees may depend on the hidden digits: no oracle, no partial value in an error), and a
refusal by the bastion must say what it refused and why. Each probe is first shown to reveal the hidden digits with
no bastion, so that a pass proves something. Honest queries must keep working.
"""

from __future__ import annotations

import queue
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.engine import Action, PolicySet
from tests.support.pg_probes import (
    CLEAR,
    EXT_PROBES,
    MASK,
    MASKED,
    NAMES,
    PROBES,
    WHY,
    Direct,
    ExtProbe,
    Probe,
    ProxyThread,
    Run,
    WireTap,
    as_app,
    backend_messages,
    create_database,
    direct,
    env_for_tap,
    first_difference,
    leaks_in,
    normalise,
    proxy_with_tap,
    psql_env,
    run_psql,
    run_psycopg,
    sensitive,
    setup_databases,
    wire_view,
)
from tests.support.postgres import PgServer, start_postgres
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow

OPEN = PolicySet("db", Action.ALLOW, ())  # no policy rule: whatever is refused here, masking refused it


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    server = start_postgres()
    setup_databases(server)
    yield server
    server.stop()


Side = tuple[ProxyThread, WireTap]
WORKERS = 5  # proxy pairs (real, twin) running side-effect-free probes side by side


@pytest.fixture(scope="module")
def real(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    with proxy_with_tap(pg, tmp_path_factory.mktemp("real"), OPEN, masking=[MASK]) as pt:
        yield pt


@pytest.fixture(scope="module")
def twin(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    with proxy_with_tap(pg, tmp_path_factory.mktemp("twin"), OPEN, database="apptwin", masking=[MASK]) as pt:
        yield pt


def through(side: Side, statements: tuple[str, ...]) -> Run:
    tap = side[1]
    return run_psql(statements, env_for_tap(tap), tap)


@dataclass
class ExtRun:
    got: list[str]
    raw: bytes

    @property
    def view(self) -> list[str]:
        return [normalise(x) for x in wire_view(backend_messages(self.raw))]


def ext_through(side: Side, probe: ExtProbe) -> ExtRun:
    side[1].take()
    got = run_psycopg(str(side[1].dir), probe)
    return ExtRun(got, side[1].take())


T = TypeVar("T")
R = TypeVar("R")


def run_all(items: list[T], key: Callable[[T], str], parallel: Callable[[T], bool], workers: list[Any],
            fn: Callable[[Any, T], R]) -> dict[str, R]:
    """``fn(worker, item)`` for every item: the parallel ones spread over ``workers`` (one item per worker at a
    time), then the others one by one on the first worker."""
    out: dict[str, R] = {}
    todo = queue.Queue[T]()
    for item in items:
        if parallel(item):
            todo.put(item)

    def drain(worker: Any) -> None:
        while True:
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            out[key(item)] = fn(worker, item)

    with ThreadPoolExecutor(len(workers)) as pool:
        for f in [pool.submit(drain, w) for w in workers]:
            f.result()
    for item in items:
        if not parallel(item):
            out[key(item)] = fn(workers[0], item)
    return out


@pytest.fixture(scope="module")
def pairs(pg: PgServer, real: Side, twin: Side, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    with ExitStack() as stack:
        extra = [(stack.enter_context(proxy_with_tap(pg, tmp_path_factory.mktemp("r"), OPEN, masking=[MASK])),
                  stack.enter_context(proxy_with_tap(pg, tmp_path_factory.mktemp("t"), OPEN, database="apptwin",
                                                     masking=[MASK])))
                 for _ in range(WORKERS - 1)]
        yield [(real, twin), *extra]


@pytest.fixture(scope="module")
def direct_runs(pg: PgServer) -> Iterator[dict[str, tuple[list[str], list[str]]]]:
    sessions = [(Direct(pg), Direct(pg, "apptwin")) for _ in range(2)]
    try:
        yield run_all(PROBES, lambda p: p.param_id, lambda p: p.parallel, sessions,
                      lambda s, p: (s[0].run(p.statements), s[1].run(p.statements)))
    finally:
        for a, b in sessions:
            a.close()
            b.close()


@pytest.fixture(scope="module")
def bastion_runs(pairs: list[Any]) -> dict[str, tuple[Run, Run]]:
    return run_all(PROBES, lambda p: p.param_id, lambda p: p.parallel, pairs,
                   lambda pair, p: (through(pair[0], p.statements), through(pair[1], p.statements)))


@pytest.fixture(scope="module")
def ext_runs(pairs: list[Any]) -> dict[str, tuple[ExtRun, ExtRun]]:
    return run_all(EXT_PROBES, lambda p: p.id, lambda p: p.parallel, pairs,
                   lambda pair, p: (ext_through(pair[0], p), ext_through(pair[1], p)))


def leak_problems(a: Run, why: str = WHY) -> list[str]:
    """What is wrong with run ``a``, on its own: a clear value, a lost connection, a refusal that says nothing."""
    problems: list[str] = []
    if a.lost:
        problems.append(f"the connection was lost: {a.stderr.strip()[:300]}")
    for leak in leaks_in(a.client_text + "\n" + "\n".join(a.view()), a.raw, sent=a.statements):
        problems.append(f"clear value reached the client: {leak}")
    for r in a.refusals:
        said = " ".join(r.get(k, "") for k in "MDH")
        if not re.search(why, said, re.I):
            problems.append(f"a refusal that does not say it is about the masked column: {said[:300]!r}")
    return problems


def interference(a: Run, b: Run) -> list[str]:
    """Run ``a`` (real database) and ``b`` (twin) must look the same to the client."""
    view_a, view_b = [normalise(x) for x in a.view()], [normalise(x) for x in b.view()]
    if view_a != view_b:
        return ["what the client received depends on the hidden digits: " + first_difference(view_a, view_b)]
    if normalise(a.client_text) != normalise(b.client_text):
        return ["psql's output depends on the hidden digits: " + first_difference(
            normalise(a.client_text).splitlines(), normalise(b.client_text).splitlines())]
    return []


def report(probe: Probe | ExtProbe, problems: list[str], a: Run | None = None) -> str:
    text = f"{probe.sql!r}\n  " + "\n  ".join(problems)
    if a is not None:
        text += f"\n--- psql stdout:\n{a.stdout[:1500]}\n--- stderr:\n{a.stderr[:1500]}"
    return text


# -- every probe reveals something without the bastion (else a pass proves nothing) -----------------------------
@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.param_id)
def test_probe_reveals_hidden_digits_without_the_bastion(direct_runs: dict[str, tuple[list[str], list[str]]],
                                                         probe: Probe) -> None:
    a, b = direct_runs[probe.param_id]
    reveals = sensitive([normalise(x) for x in a], [normalise(x) for x in b], "\n".join(a))
    assert reveals, f"{probe.sql} shows nothing of the hidden digits even without the bastion:\n" + "\n".join(a)


@pytest.mark.parametrize("probe", EXT_PROBES, ids=lambda p: p.id)
def test_extended_probe_reveals_hidden_digits_without_the_bastion(pg: PgServer, probe: ExtProbe) -> None:
    a = run_psycopg("127.0.0.1", probe, port=pg.port)
    b = run_psycopg("127.0.0.1", probe, port=pg.port, db="apptwin")
    reveals = sensitive(a, b, "\n".join(a))
    assert reveals, f"{probe.sql} shows nothing of the hidden digits without the bastion:\n{a}"


# -- through the bastion: no clear value, and nothing that depends on the hidden digits -------------------------
@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.param_id)
def test_probe_through_the_bastion_shows_no_clear_value(bastion_runs: dict[str, tuple[Run, Run]],
                                                        probe: Probe) -> None:
    a, _ = bastion_runs[probe.param_id]
    problems = leak_problems(a, probe.why)
    assert not problems, report(probe, problems, a)


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.param_id)
def test_probe_through_the_bastion_does_not_depend_on_the_hidden_digits(
        bastion_runs: dict[str, tuple[Run, Run]], probe: Probe) -> None:
    a, b = bastion_runs[probe.param_id]
    problems = interference(a, b)
    assert not problems, report(probe, problems, a)


@pytest.mark.parametrize("probe", EXT_PROBES, ids=lambda p: p.id)
def test_extended_protocol_probe_shows_no_clear_value(ext_runs: dict[str, tuple[ExtRun, ExtRun]],
                                                      probe: ExtProbe) -> None:
    a, _ = ext_runs[probe.id]
    sent = (probe.sql, *(str(p) for p in probe.params or ()))
    problems = [f"clear value reached the client: {leak}"
                for leak in leaks_in("\n".join(a.got) + "\n" + "\n".join(a.view), a.raw, sent=sent)]
    if any(x.startswith("connect:") or "OperationalError" in x for x in a.got):
        problems.append(f"the connection failed: {a.got}")
    for kind, payload in backend_messages(a.raw):
        if kind == b"E" and b"Mbastion" in payload and not re.search(probe.why, payload.decode("utf-8", "replace"),
                                                                    re.I):
            problems.append(f"a refusal that does not say it is about the masked column: {payload[:300]!r}")
    assert not problems, report(probe, problems) + f"\n--- psycopg: {a.got}"


@pytest.mark.parametrize("probe", EXT_PROBES, ids=lambda p: p.id)
def test_extended_protocol_probe_does_not_depend_on_the_hidden_digits(ext_runs: dict[str, tuple[ExtRun, ExtRun]],
                                                                      probe: ExtProbe) -> None:
    a, b = ext_runs[probe.id]
    problems = []
    if a.view != b.view:
        problems.append("what the client received depends on the hidden digits: " + first_difference(a.view, b.view))
    elif a.got != b.got:
        problems.append("what psycopg returned depends on the hidden digits: " + first_difference(a.got, b.got))
    assert not problems, report(probe, problems) + f"\n--- psycopg: {a.got}"


# -- fail closed: what the lineage cannot see into is refused --------------------------------------------------------
@pytest.mark.parametrize("sql", [
    "SELECT leak()",
    "SELECT * FROM leak()",
    "SELECT x FROM leak() AS x",
    "SELECT leak_one(1)",
    "SELECT leak_one(id) FROM customers",
    "SELECT upper(leak_one(1))",
])
def test_a_user_function_over_the_masked_table_is_refused(real: Side, sql: str) -> None:
    run = through(real, (sql,))
    assert not leaks_in(run.client_text, run.raw, sent=(sql,)), run.client_text
    assert run.refusals, f"{sql} was not refused:\n{run.stdout}\n{run.stderr}"
    said = " ".join(run.refusals[0].get(k, "") for k in "MDH")
    assert re.search(WHY, said, re.I), said
    assert not run.stdout.strip(), run.stdout


# -- objects created in one session and read in a later one ----------------------------------------------------------
LATER = [
    ("view", ("CREATE VIEW later_v AS SELECT id, ssn AS x FROM customers",), ("SELECT * FROM later_v",),
     "DROP VIEW IF EXISTS later_v"),
    ("table-as", ("CREATE TABLE later_t AS SELECT id, ssn AS x FROM customers",), ("SELECT * FROM later_t",),
     "DROP TABLE IF EXISTS later_t"),
    ("matview", ("CREATE MATERIALIZED VIEW later_m AS SELECT ssn || '' AS x FROM customers",),
     ("SELECT * FROM later_m",), "DROP MATERIALIZED VIEW IF EXISTS later_m"),
    ("insert-select", ("CREATE TABLE later_i(x text)", "INSERT INTO later_i SELECT ssn FROM customers"),
     ("SELECT * FROM later_i",), "DROP TABLE IF EXISTS later_i"),
    ("function", ("CREATE FUNCTION later_f() RETURNS SETOF text LANGUAGE sql AS 'SELECT ssn FROM customers'",),
     ("SELECT * FROM later_f()",), "DROP FUNCTION IF EXISTS later_f()"),
    ("update-other-column", ("UPDATE customers SET email = ssn WHERE id = 1",),
     ("SELECT email FROM customers WHERE id = 1",),
     "UPDATE customers SET email = 'ann@example.com' WHERE id = 1"),
    ("rename-column", ("ALTER TABLE customers RENAME COLUMN ssn TO tax",), ("SELECT tax FROM customers",),
     "DO $$BEGIN IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'customers'::regclass AND "
     "attname = 'tax') THEN ALTER TABLE customers RENAME COLUMN tax TO ssn; END IF; END$$"),
    ("rule", ("CREATE TABLE later_r(x text)", "CREATE RULE later_rule AS ON INSERT TO later_r DO ALSO "
              "UPDATE customers SET email = ssn"),
     ("INSERT INTO later_r VALUES ('x')", "SELECT email FROM customers ORDER BY id"),
     "DROP TABLE IF EXISTS later_r; UPDATE customers SET email = lower(name) || '@example.com'"),
]


@pytest.mark.parametrize(("name", "first", "later", "cleanup"), LATER, ids=[x[0] for x in LATER])
def test_masked_data_copied_in_one_session_stays_masked_in_the_next(
        pg: PgServer, real: Side, twin: Side, name: str,
        first: tuple[str, ...], later: tuple[str, ...], cleanup: str) -> None:
    try:
        a1, b1 = through(real, first), through(twin, first)
        a2, b2 = through(real, later), through(twin, later)
    finally:
        for db in ("app", "apptwin"):
            as_app(pg, cleanup, db)
    problems = [f"session {i}: {p}" for i, (a, b) in ((1, (a1, b1)), (2, (a2, b2)))
                for p in leak_problems(a) + interference(a, b)]
    assert not problems, f"{name}:\n  " + "\n  ".join(problems) + f"\n--- later:\n{a2.stdout}\n{a2.stderr}"


# -- a database with an extension (hstore: its own =, ||, ->, each(), hstore(record)) ------------------------------
HSTORE_PROBES = [
    "SELECT hstore(c) FROM customers c",
    "SELECT each(hstore(c)) FROM customers c",
    "SELECT hstore(c) -> 'ssn' FROM customers c",
    "SELECT hstore('s', ssn) FROM customers",
    "SELECT avals(hstore(c)) FROM customers c",
    "SELECT hstore_to_json(hstore(c)) FROM customers c",
    "SELECT (hstore(c) - 'id'::text)::text FROM customers c",
    "SELECT (populate_record(c, hstore('name', ssn))).name FROM customers c",
]


@pytest.fixture(scope="module")
def with_extension(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    create_database(pg, "appext", CLEAR, extensions=("hstore",))
    with proxy_with_tap(pg, tmp_path_factory.mktemp("ext"), OPEN, database="appext", masking=[MASK]) as side:
        yield side


@pytest.mark.parametrize("sql", HSTORE_PROBES)
def test_hstore_probe_shows_no_clear_value(pg: PgServer, with_extension: Side, sql: str) -> None:
    assert leaks_in(direct(pg, (sql,), "appext").client_text), f"{sql} shows no SSN even without the bastion"
    a = through(with_extension, (sql,))
    problems = leak_problems(a)
    assert not problems, f"{sql}\n  " + "\n  ".join(problems) + f"\n{a.stdout[:800]}\n{a.stderr[:800]}"


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT name, ssn FROM customers WHERE id = 1", [["Ann", MASKED[1]]]),
    ("SELECT name || '!' FROM customers WHERE id = 2", [["Bob!"]]),
    ("SELECT c.name, o.total FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.id = 2",
     [["Bob", "20.00"]]),
])
def test_an_extension_that_overloads_operators_does_not_break_honest_queries(
        with_extension: Side, sql: str, expected: list[list[str]]) -> None:
    run = through(with_extension, (sql,))
    assert not run.refusals and run.stderr == "", run.stderr
    assert rows(run) == expected


# -- an interactive psql, one statement per line --------------------------------------------------------------------
def test_cursor_in_an_interactive_psql(real: Side, tmp_path: Path) -> None:
    _, tap = real
    env = {"PATH": "/usr/bin:/bin", "PGHOST": str(tap.dir), "TERM": "xterm", "HOME": str(tmp_path),
           "PGUSER": "app", "PGDATABASE": "app"}
    tap.take()
    lines = ["BEGIN;", "DECLARE cur CURSOR FOR SELECT ssn || '' FROM customers;", "FETCH ALL FROM cur;",
             "CLOSE cur;", "DECLARE cur2 CURSOR FOR SELECT c FROM customers c;", "FETCH 2 FROM cur2;",
             "FETCH ALL FROM cur2;", "ROLLBACK;", "SELECT ssn::int FROM customers;", "SELECT customers FROM customers;",
             "SELECT 'done' AS marker;"]
    with Terminal(["psql", "-X", "-P", "pager=off"], env=env, cols=160, rows=60) as t:
        t.wait_for(r"=>\s*$|=#\s*$")
        for line in lines:
            t.send(line + "\r")
        t.wait_for_raw(r"\(1 row\)[\s\S]*done|done[\s\S]*\(1 row\)", timeout=30)
        t.send("\\q\r")
        t.wait_exit()
        screen = t.raw_text()
    raw = tap.take()
    leaks = leaks_in(screen + "\n" + "\n".join(wire_view(backend_messages(raw))), raw, sent=tuple(lines))
    assert not leaks, f"{leaks}\n{screen}"


# -- honest work must still work ---------------------------------------------------------------------------------------
def rows(run: Run) -> list[list[str]]:
    return [line.split("\x1f") for line in run.stdout.splitlines() if line]


def test_select_star_is_masked_and_the_rest_clear(real: Side) -> None:
    run = through(real, ("SELECT * FROM customers ORDER BY id",))
    assert run.stderr == "" and not run.refusals, run.stderr
    assert rows(run) == [[str(i), NAMES[i][0], NAMES[i][1], MASKED[i]] for i in CLEAR]


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT name, ssn FROM customers WHERE id = 1", [["Ann", MASKED[1]]]),
    ("SELECT ssn FROM customers ORDER BY id", [[MASKED[i]] for i in CLEAR]),
    ("SELECT c.id, c.ssn AS tax FROM customers c WHERE c.id = 2", [["2", MASKED[2]]]),
    ("SELECT count(*) FROM customers", [["4"]]),
    ("SELECT name FROM customers ORDER BY name", [["Ann"], ["Bob"], ["Cid"], ["Dee"]]),
    ("SELECT id, name FROM customers WHERE name LIKE 'A%'", [["1", "Ann"]]),
    ("SELECT upper(name) FROM customers ORDER BY id", [["ANN"], ["BOB"], ["CID"], ["DEE"]]),
    ("SELECT id, email FROM customers WHERE id = 2", [["2", "bob@example.com"]]),
    ("SELECT c.name, o.total FROM customers c JOIN orders o ON o.customer_id = c.id ORDER BY o.id",
     [["Ann", "10.50"], ["Bob", "20.00"], ["Ann", "5.25"]]),
    ("SELECT c.name, c.ssn, o.total FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.id = 2",
     [["Bob", MASKED[2], "20.00"]]),
    ("SELECT name, count(o.id) FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.id, name "
     "ORDER BY c.id", [["Ann", "2"], ["Bob", "1"], ["Cid", "0"], ["Dee", "0"]]),
    ("SELECT column_name FROM information_schema.columns WHERE table_name = 'customers' ORDER BY ordinal_position",
     [["id"], ["name"], ["email"], ["ssn"]]),
])
def test_honest_queries_still_work(real: Side, sql: str, expected: list[list[str]]) -> None:
    run = through(real, (sql,))
    assert not run.refusals and run.stderr == "", run.stderr
    assert rows(run) == expected


def test_honest_writes_of_one_row_work(real: Side, pg: PgServer) -> None:
    statements = ("INSERT INTO customers VALUES (5, 'Eve', 'eve@example.com', '000-00-0000')",
                  "UPDATE customers SET name = 'Eva' WHERE id = 5",
                  "SELECT name, ssn FROM customers WHERE id = 5",
                  "DELETE FROM customers WHERE id = 5")
    try:
        run = through(real, statements)
    finally:
        as_app(pg, "DELETE FROM customers WHERE id = 5")
    assert run.stderr == "", run.stderr
    assert [t for k, p in run.messages if k == b"C" for t in [p.rstrip(b"\x00").decode()]] == \
        ["INSERT 0 1", "UPDATE 1", "SELECT 1", "DELETE 1"]
    assert [r for r in rows(run) if len(r) > 1] == [["Eva", "*******0000"]]


def test_a_syntax_error_is_reported_as_one(real: Side) -> None:
    run = through(real, ("SELEC 1",))
    assert "syntax error" in run.stderr, run.stderr
    assert "COPY" not in run.stderr, run.stderr


def test_psql_describe_still_works(real: Side) -> None:
    run = through(real, ("\\d customers",))
    assert run.stderr == "" and ["ssn", "text", "", "", ""] in rows(run), run.stdout + run.stderr


def test_extended_protocol_honest_queries(real: Side) -> None:
    with psycopg.connect(host=str(real[1].dir), user="x", dbname="y", autocommit=True) as conn:
        assert conn.execute("SELECT name, ssn FROM customers WHERE id = %s", (1,)).fetchall() == [("Ann", MASKED[1])]
        cur = conn.cursor(binary=True)
        cur.execute("SELECT id, name, ssn FROM customers WHERE id = %s", (2,))
        assert cur.fetchall() == [(2, "Bob", MASKED[2])]
        cur.execute("SELECT count(*) FROM customers WHERE name = %s", ("Cid",), prepare=True)
        assert cur.fetchall() == [(1,)]
        cur.execute("SELECT count(*) FROM customers WHERE name = %s", ("Dee",), prepare=True)
        assert cur.fetchall() == [(1,)]
    real[1].take()


# -- composed expressions ---------------------------------------------------------------------------------------------
LEAVES = st.sampled_from(["ssn", "c.ssn", "(SELECT x.ssn FROM customers x WHERE x.id = c.id)"])
UNARY = ["lower({})", "upper({})", "reverse({})", "trim({})", "btrim({}, '-')", "replace({}, '-', '')",
         "translate({}, '0123456789', 'abcdefghij')", "coalesce({}, 'x')", "nullif({}, 'x')", "({} || '')",
         "concat({}, '')", "format('%s', {})", "({})::text", "({})::varchar", "CASE WHEN c.id > 0 THEN {} END",
         "(ARRAY[{}])[1]", "array_to_string(ARRAY[{}, 'x'], ',')", "json_build_object('k', {})::text",
         "jsonb_build_array({})::text", "(jsonb_build_object('k', {}) ->> 'k')", "md5({})", "lpad({}, 14, '*')",
         "regexp_replace({}, '-', '', 'g')", "encode(convert_to({}, 'UTF8'), 'hex')", "quote_literal({})",
         "xmlelement(name v, {})::text", "({} COLLATE \"C\")", "initcap({})", "repeat({}, 2)"]
NUMERIC = st.integers(min_value=1, max_value=11)
FINAL = ["{}", "({})::int", "({})::date", "({})::numeric", "({})::uuid", "({})::jsonb", "({})::inet",
         "({})::interval", "({})::bool", "({})::xml", "({})::bytea", "length({})"]
PLACES = [
    "SELECT {} FROM customers c ORDER BY c.id",
    "SELECT c.id FROM customers c WHERE ({}) IS NOT NULL ORDER BY c.id",
    "SELECT c.id FROM customers c ORDER BY {}, c.id",
    "SELECT g, count(*) FROM (SELECT {} AS g FROM customers c) s GROUP BY g ORDER BY 2",
    "SELECT s.v FROM (SELECT c.id, {} AS v FROM customers c) s ORDER BY s.id",
    "WITH w AS (SELECT c.id, {} AS v FROM customers c) SELECT v FROM w ORDER BY id",
    "SELECT (SELECT {} FROM customers c WHERE c.id = 1)",
    "SELECT t FROM (SELECT c.id, {} AS v FROM customers c) t ORDER BY t.id",
    "SELECT string_agg(({})::text, ',' ORDER BY c.id) FROM customers c",
    "SELECT c.id, l.v FROM customers c, LATERAL (SELECT {} AS v) l ORDER BY c.id",
    "SELECT {} FROM customers c UNION ALL SELECT NULL",
]


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(st.sampled_from(UNARY), inner).map(lambda t: t[0].format(t[1])),
        st.tuples(inner, NUMERIC).map(lambda t: f"substr({t[0]}, {t[1]})"),
        st.tuples(inner, NUMERIC).map(lambda t: f"left({t[0]}, {t[1]})"),
        st.tuples(inner, NUMERIC).map(lambda t: f"right({t[0]}, {t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]} || {t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"concat_ws('-', {t[0]}, {t[1]})"),
    )


EXPRESSIONS = st.recursive(LEAVES, _extend, max_leaves=4)
QUERIES = st.builds(lambda place, final, e: place.format(final.format(e)), st.sampled_from(PLACES),
                    st.sampled_from(FINAL), EXPRESSIONS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(sql=QUERIES)
def test_composed_expressions_never_show_a_clear_value(real: Side, sql: str) -> None:
    a = through(real, (sql,))
    problems = leak_problems(a)
    assert not problems, f"{sql}\n  " + "\n  ".join(problems) + f"\n{a.stdout[:800]}\n{a.stderr[:800]}"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(sql=QUERIES)
def test_composed_expressions_do_not_depend_on_the_hidden_digits(real: Side, twin: Side, sql: str) -> None:
    a, b = through(real, (sql,)), through(twin, (sql,))
    problems = interference(a, b)
    assert not problems, f"{sql}\n  " + "\n  ".join(problems) + f"\n{a.stdout[:800]}\n{a.stderr[:800]}"


def test_the_twin_really_differs(pg: PgServer) -> None:
    """The non-interference check is only as good as the twin: same rows, other hidden digits, same last four."""
    a = direct(pg, ("SELECT id, name, email, right(ssn, 4) FROM customers ORDER BY id",))
    b = direct(pg, ("SELECT id, name, email, right(ssn, 4) FROM customers ORDER BY id",), "apptwin")
    assert a.stdout == b.stdout
    got = direct(pg, ("SELECT ssn FROM customers ORDER BY id",)).stdout.split()
    assert got == list(CLEAR.values())
    assert leaks_in(got[0]) and not leaks_in(MASKED[1])
    assert psql_env("x")["PGHOST"] == "x"
