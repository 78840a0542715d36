"""Column lineage for masking (policies/sqlmask.py), pure: which outputs derive from masked data, what is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import parse_sql

from policies.sqlmask import COPY_RULE, PREDICATE_RULE, UNRESOLVED_RULE, Analysis, Catalog, Relation, analyze

CUSTOMERS = Relation(("id", "name", "email", "ssn"), frozenset({"ssn"}), 1)
ORDERS = Relation(("id", "note"), frozenset(), 2)
CATALOG = Catalog(
    {"customers": CUSTOMERS, "public.customers": CUSTOMERS, "orders": ORDERS, "public.orders": ORDERS,
     "cv": Relation(("id", "name", "email", "ssn"), frozenset({"id", "name", "email", "ssn"}), 3)},
    frozenset({"lower", "upper", "count", "to_json", "row_to_json", "substr", "length", "json_agg", "string_agg",
               "array_agg", "concat", "format", "unnest", "first_value", "md5", "now", "reverse", "replace",
               "coalesce", "nullif", "left", "right", "trim", "jsonb_build_object", "xmlparse", "encode",
               "generate_series", "greatest", "set_config", "pg_notify", "table_to_xml", "string_to_array",
               "array_position", "ascii"}),
    builtin_operators=frozenset({"=", "<", ">", "<>", "||", "+", "-", "*", "/", "~~"}),
    builtin_types=frozenset({"int4", "text", "date", "numeric", "bytea"}))


def one(sql: str) -> Analysis:
    (rs,) = parse_sql(sql)
    return analyze(rs.stmt, CATALOG)


@pytest.mark.parametrize(("sql", "outputs"), [
    ("SELECT * FROM customers", [False, False, False, True]),
    ("SELECT name, ssn FROM customers WHERE id = 1", [False, True]),
    ("SELECT count(*) FROM customers", [False]),
    ("SELECT upper(name), length(email) FROM customers", [False, False]),
    ("SELECT customers FROM customers", [True]),
    ("SELECT c FROM customers c", [True]),
    ("SELECT c.* FROM customers c", [False, False, False, True]),
    ("SELECT to_json(c) FROM customers c", [True]),
    ("SELECT ROW(c.*) FROM customers c", [True]),
    ("SELECT (c).ssn FROM customers c", [True]),
    ("SELECT ssn::text FROM customers", [True]),
    ("SELECT ssn || '' FROM customers", [True]),
    ("SELECT md5(ssn) FROM customers", [True]),
    ("SELECT s FROM (SELECT ssn AS s FROM customers) q", [True]),
    ("WITH x AS (SELECT ssn FROM customers) SELECT * FROM x", [True]),
    ("WITH x(a) AS (SELECT name FROM customers) SELECT a FROM x", [False]),
    ("SELECT (SELECT ssn FROM customers LIMIT 1)", [True]),
    ("SELECT first_value(ssn) OVER () FROM customers", [True]),
    ("SELECT * FROM customers c, LATERAL (SELECT c.ssn) s", [False, False, False, True, True]),
    ("SELECT * FROM cv", [True, True, True, True]),  # a view over masked data: every column
    ("SELECT json_agg(c) FROM customers c", [True]),
    ("VALUES ((SELECT ssn FROM customers LIMIT 1))", [True]),
    ("SELECT 1", [False]),
    ("SELECT now()", [False]),
    ("SELECT o.note, c.name FROM orders o JOIN customers c ON c.id = o.id", [False, False]),
])
def test_outputs_follow_the_lineage(sql: str, outputs: list[bool]) -> None:
    a = one(sql)
    assert a.refusal is None, a.refusal
    assert a.outputs == outputs


def test_unknown_relations_and_columns_are_masked() -> None:
    a = one("SELECT * FROM made_since_connect")
    assert a.reads_masked and a.outputs is None  # the proxy then masks what it cannot prove clean
    assert one("SELECT nosuchcol FROM orders").outputs == [True]


@pytest.mark.parametrize(("sql", "rule"), [
    ("SELECT id FROM customers WHERE ssn LIKE '9%'", PREDICATE_RULE),
    ("SELECT ssn::int FROM customers", PREDICATE_RULE),  # whether the cast fails depends on the value
    ("SELECT ssn::time FROM customers", PREDICATE_RULE),
    ("SELECT x FROM unnest(string_to_array((SELECT ssn FROM customers LIMIT 1), '5')) x", PREDICATE_RULE),
    ("SELECT generate_series(1, ascii(ssn) - 47) FROM customers", PREDICATE_RULE),  # row count depends on it
    ("SELECT 1 / (ascii(ssn) - 53) FROM customers", PREDICATE_RULE),  # an error depends on it
    ("SELECT array_position(ARRAY['1'], ssn) FROM customers", PREDICATE_RULE),
    ("SELECT ssn AS id FROM customers ORDER BY id", PREDICATE_RULE),
    ("SELECT DISTINCT ssn FROM customers", PREDICATE_RULE),
    ("SELECT * FROM customers NATURAL JOIN (VALUES ('1')) v(ssn)", PREDICATE_RULE),
    ("CREATE INDEX ON customers ((ssn::int))", PREDICATE_RULE),
    ("SELECT table_to_xml('customers', true, false, '')", UNRESOLVED_RULE),
    ("SELECT set_config('application_name', ssn, false) FROM customers", COPY_RULE),
    ("SELECT pg_notify('c', ssn) FROM customers", COPY_RULE),
    ("SELECT id FROM customers WHERE ssn = '123-45-6789'", PREDICATE_RULE),
    ("SELECT id FROM customers WHERE substr(ssn, 1, 1) = '9'", PREDICATE_RULE),
    ("SELECT name FROM customers ORDER BY ssn", PREDICATE_RULE),
    ("SELECT name, ssn FROM customers ORDER BY 2", PREDICATE_RULE),
    ("SELECT ssn FROM customers GROUP BY ssn", PREDICATE_RULE),
    ("SELECT DISTINCT ON (ssn) name FROM customers", PREDICATE_RULE),
    ("SELECT o.note FROM orders o JOIN customers c ON c.ssn = o.note", PREDICATE_RULE),
    ("SELECT CASE WHEN ssn LIKE '1%' THEN 1 END FROM customers", PREDICATE_RULE),
    ("SELECT count(*) FILTER (WHERE ssn > '5') FROM customers", PREDICATE_RULE),
    ("SELECT string_agg(name, ',' ORDER BY ssn) FROM customers", PREDICATE_RULE),
    ("SELECT 1 WHERE EXISTS (SELECT 1 FROM customers WHERE ssn = 'x')", PREDICATE_RULE),
    ("SELECT name FROM customers UNION SELECT ssn FROM customers", PREDICATE_RULE),
    ("SELECT greatest(ssn, '5') FROM customers", PREDICATE_RULE),
    ("UPDATE customers SET name = 'x' WHERE ssn = '1'", PREDICATE_RULE),
    ("CREATE TEMP TABLE t AS SELECT ssn FROM customers", COPY_RULE),
    ("CREATE MATERIALIZED VIEW m AS SELECT ssn FROM customers", COPY_RULE),
    ("SELECT ssn INTO TEMP t2 FROM customers", COPY_RULE),
    ("INSERT INTO orders SELECT id, ssn FROM customers", COPY_RULE),
    ("UPDATE customers SET name = ssn WHERE id = 1", COPY_RULE),
    ("CREATE VIEW v AS SELECT ssn FROM customers", COPY_RULE),
    ("DECLARE cur CURSOR FOR SELECT ssn || '' FROM customers", COPY_RULE),
    ("UPDATE customers SET name = 'x' WHERE id = 1 RETURNING ssn", COPY_RULE),
    ("DELETE FROM customers WHERE id = 3 RETURNING *", COPY_RULE),
    ("INSERT INTO customers (id, name) VALUES (9, 'x') ON CONFLICT (id) DO UPDATE SET name = customers.ssn",
     COPY_RULE),
    ("COPY (SELECT ssn FROM customers) TO STDOUT", COPY_RULE),
    ("COPY customers TO STDOUT", COPY_RULE),
    ("CREATE RULE r AS ON INSERT TO orders DO ALSO INSERT INTO orders SELECT id, ssn FROM customers", COPY_RULE),
    ("CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'SELECT ssn FROM customers'", COPY_RULE),
    ("ALTER TABLE customers RENAME COLUMN ssn TO x", COPY_RULE),
    ("SELECT leak()", UNRESOLVED_RULE),
    ("SELECT * FROM leak()", UNRESOLVED_RULE),
    ("SELECT 1 ### 2", UNRESOLVED_RULE),
    ("SELECT name::mood FROM customers", UNRESOLVED_RULE),
])
def test_refusals_name_their_rule_and_the_column(sql: str, rule: str) -> None:
    a = one(sql)
    assert a.rule == rule, (a.rule, a.refusal)
    assert a.refusal
    if rule != UNRESOLVED_RULE and "ssn" in sql:
        assert "ssn" in a.refusal


@pytest.mark.parametrize("sql", [
    "SELECT name FROM customers ORDER BY name", "SELECT id, name FROM customers WHERE name LIKE 'A%'",
    "DELETE FROM customers WHERE id = 3", "UPDATE customers SET name = 'x' WHERE id = 1",
    "INSERT INTO orders SELECT id, name FROM customers", "SELECT name FROM customers GROUP BY name HAVING count(*) > 1",
    "COPY orders TO STDOUT", "UPDATE customers SET ssn = ssn || '' WHERE id = 1",
])
def test_honest_statements_are_not_refused(sql: str) -> None:
    assert one(sql).refusal is None


EXPRS = ["ssn", "c.ssn", "lower(ssn)", "ssn || ''", "substr(ssn, 1, 3)", "reverse(ssn)", "ssn::text",
         "coalesce(ssn, '')", "nullif(ssn, 'x')", "left(ssn, 2)", "md5(ssn)", "ARRAY[ssn]", "ROW(ssn)",
         "jsonb_build_object('s', ssn)", "encode(ssn::bytea, 'hex')", "trim(ssn)", "concat(name, ssn)"]


@st.composite
def nested(draw: st.DrawFn) -> str:
    expr = draw(st.sampled_from(EXPRS))
    for _ in range(draw(st.integers(0, 3))):
        wrap = draw(st.sampled_from(["lower({})", "upper({})", "({}) || 'x'", "replace({}, '-', '')",
                                     "substr({}, 2)", "coalesce({}, 'z')", "format('%s', {})", "({})::text"]))
        expr = wrap.format(expr)
    return expr


@settings(max_examples=150, deadline=None)
@given(expr=nested(), place=st.sampled_from(["target", "cte", "subquery", "where", "order", "case", "join"]))
def test_any_expression_over_the_masked_column_is_masked_or_refused(expr: str, place: str) -> None:
    sql = {"target": f"SELECT {expr} AS v FROM customers c",
           "cte": f"WITH w AS (SELECT {expr} AS v FROM customers c) SELECT v FROM w",
           "subquery": f"SELECT v FROM (SELECT {expr} AS v FROM customers c) q",
           "where": f"SELECT id FROM customers c WHERE {expr} = 'x'",
           "order": f"SELECT id FROM customers c ORDER BY {expr}",
           "case": f"SELECT CASE WHEN {expr} = 'x' THEN 1 ELSE 0 END FROM customers c",
           "join": f"SELECT o.id FROM orders o JOIN customers c ON {expr} = o.note"}[place]
    a = one(sql)
    assert a.refusal is not None or (a.outputs is not None and all(a.outputs)), (sql, a)
    if place in ("where", "order", "case", "join"):
        assert a.rule == PREDICATE_RULE, (sql, a.rule)
