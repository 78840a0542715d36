"""What the wire proxy reads from the server's catalog at connect, before the operator's first statement.

Masking needs to know, for the lineage of every statement (policies/sqlmask.py): each relation's columns and which
are masked, the views that (transitively) read masked tables (all their columns are masked), and which functions,
operators and types are the server's built-ins (anything else may read a masked table where the proxy cannot see:
refused). One round trip of a few queries on the upstream connection, as the broker's user.
"""

from __future__ import annotations

import json
import logging
import struct

from bastion.proxies.pg import upstream as up
from bastion.proxies.pg.masking import MaskRule
from bastion.proxies.pg.protocol import message, parse_error, read_message
from policies.sqlmask import Catalog, Relation

log = logging.getLogger(__name__)

# system views that show values of any column (most common values, histograms): masked whole
STATISTICS_VIEWS = ("pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic", "pg_statistic_ext_data")


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


async def query(conn: up.Upstream, sql: str) -> list[list[str | None]]:
    """Run ``sql`` (simple protocol) on the upstream connection and return its rows as text."""
    conn.writer.write(message(b"Q", sql.encode() + b"\x00"))
    await conn.writer.drain()
    rows: list[list[str | None]] = []
    error: str | None = None
    while True:
        kind, payload = await read_message(conn.reader)
        if kind == b"D":
            n = struct.unpack("!h", payload[:2])[0]
            vals: list[str | None] = []
            pos = 2
            for _ in range(n):
                (ln,) = struct.unpack("!i", payload[pos:pos + 4])
                vals.append(None if ln < 0 else payload[pos + 4:pos + 4 + ln].decode())
                pos += 4 + max(ln, 0)
            rows.append(vals)
        elif kind == b"E":
            error = parse_error(payload).get("M", "error")
        elif kind == b"Z":
            if error is not None:
                raise up.UpstreamError(error)
            return rows


async def resolve_masks(conn: up.Upstream, rules: list[MaskRule]) -> dict[tuple[int, int], MaskRule]:
    """(table OID, column number) of every masked column."""
    parts = [f"SELECT a.attrelid::oid::int, a.attnum::int, {i} FROM pg_attribute a "  # noqa: S608 - quoted
             f"WHERE a.attrelid = to_regclass({_lit(r.table)}) AND a.attname = {_lit(r.column)} "
             f"AND NOT a.attisdropped" for i, r in enumerate(rules)]
    try:
        rows = await query(conn, " UNION ALL ".join(parts))
    except up.UpstreamError as e:
        raise up.UpstreamError(f"cannot resolve masked columns: {e}") from None
    found = {(int(str(r[0])), int(str(r[1]))): rules[int(str(r[2]))] for r in rows}
    missing = [f"{r.table}.{r.column}" for r in rules if r not in found.values()]
    if missing:
        log.warning("masking rules match no column: %s", ", ".join(missing))
    return found


async def load_catalog(conn: up.Upstream, masks: dict[tuple[int, int], MaskRule],
                       predicates_allowed: frozenset[str] = frozenset()) -> tuple[Catalog, frozenset[int]]:
    """The catalog snapshot for lineage, and the OIDs of relations whose unmasked columns are clean."""
    masked_oids = sorted({oid for oid, _ in masks})
    seeds = ",".join(str(o) for o in masked_oids) or "0"
    dependent = {int(str(r[0])) for r in await query(conn, f"""
        WITH RECURSIVE dep(oid) AS (
            SELECT unnest(ARRAY[{seeds}]::oid[])
            UNION
            SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN dep ON d.refobjid = dep.oid
            WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
              AND r.ev_class <> dep.oid)
        SELECT oid::int FROM dep""")}  # noqa: S608 - integers only
    rows = await query(conn, """
        SELECT c.oid::int, n.nspname, c.relname, c.relkind::text, pg_table_is_visible(c.oid)::text,
               coalesce((SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
                         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]')::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND n.nspname NOT LIKE 'pg\\_temp\\_%'
          AND n.nspname NOT LIKE 'pg\\_toast%'""")
    relations: dict[str, Relation] = {}
    clean: set[int] = set()
    by_oid_masked: dict[int, set[int]] = {}
    for oid, attnum in masks:
        by_oid_masked.setdefault(oid, set()).add(attnum)
    for r in rows:
        oid, schema, name, _kind, visible = int(str(r[0])), str(r[1]), str(r[2]), r[3], r[4] == "true"
        columns = tuple(str(c).lower() for c in json.loads(str(r[5])))
        if oid in dependent and oid not in by_oid_masked or name in STATISTICS_VIEWS:
            masked = frozenset(columns)  # a view over masked data: every column is masked (fail closed)
        else:
            masked = frozenset(columns[i - 1] for i in by_oid_masked.get(oid, ()) if 0 < i <= len(columns))
            clean.add(oid)
        rel = Relation(columns, masked, oid)
        relations[f"{schema.lower()}.{name.lower()}"] = rel
        if visible:
            relations.setdefault(name.lower(), rel)
    # built-ins: what pg_catalog and installed extensions define, minus names that plain user code also defines
    # (an overload of a built-in's name, picked for some argument types, may read what cannot be seen)
    builtin: dict[str, frozenset[str]] = {}
    for kind, table, name, ns in (("function", "pg_proc", "proname", "pronamespace"),
                                  ("operator", "pg_operator", "oprname", "oprnamespace"),
                                  ("type", "pg_type", "typname", "typnamespace")):
        rows2 = await query(conn, f"""
            SELECT x.{name}, (x.{ns} = 'pg_catalog'::regnamespace
                              OR x.{ns} = 'information_schema'::regnamespace
                              OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{table}'::regclass
                                         AND d.objid = x.oid AND d.deptype = 'e'))::text
            FROM {table} x""")  # noqa: S608 - constant names only
        system = {str(r[0]).lower() for r in rows2 if r[1] == "true"}
        user = {str(r[0]).lower() for r in rows2 if r[1] != "true"}
        builtin[kind] = frozenset(system - user)
    functions, operators, types = builtin["function"], builtin["operator"], builtin["type"]
    set_returning = frozenset(str(r[0]).lower() for r in await query(
        conn, "SELECT DISTINCT proname FROM pg_proc WHERE proretset"))
    return Catalog(relations, functions, predicates_allowed, operators, types, set_returning), frozenset(clean)
