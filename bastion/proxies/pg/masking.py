"""Column masking at the wire, by (table OID, column number) as the server reports them, not by output name.

A column the server says comes from a masked table column is masked whatever it is called (``SELECT ssn AS x``).
A computed column (table OID 0) is masked when its statement mentions a masked column or a whole row of a masked
table (``ssn || ''``, ``row_to_json(c)``, ``c.*``): fail closed. COPY out of a masked table is refused.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.parser import ParseError


@dataclass(frozen=True)
class MaskRule:
    table: str  # [schema.]table, lowercase
    column: str
    style: str = "full"  # full | keep_last | hash
    keep: int = 4
    predicates: str = "deny"  # deny | allow (see policies/sqlmask.py)


def mask_value(value: str, rule: MaskRule) -> str:
    if rule.style == "keep_last":
        n = max(0, rule.keep)
        return "*" * max(0, len(value) - n) + (value[-n:] if n else "")
    if rule.style == "hash":
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]
    return "********"


@dataclass
class Field:
    name: str
    table_oid: int
    attnum: int
    type_oid: int
    fmt: int


def parse_row_description(payload: bytes) -> list[Field]:
    (n,) = struct.unpack("!h", payload[:2])
    pos, out = 2, []
    for _ in range(n):
        end = payload.index(b"\x00", pos)
        name = payload[pos:end].decode("utf-8", "replace")
        table_oid, attnum, type_oid, _typlen, _typmod, fmt = struct.unpack("!ihihih", payload[end + 1:end + 19])
        out.append(Field(name, table_oid, attnum, type_oid, fmt))
        pos = end + 19
    return out


def mask_data_row(payload: bytes, plan: list[MaskRule | None]) -> bytes:
    """Rewrite a DataRow: masked columns get the masked text (binary non-text values become NULL)."""
    (n,) = struct.unpack("!h", payload[:2])
    pos, cols = 2, []
    for i in range(n):
        (length,) = struct.unpack("!i", payload[pos:pos + 4])
        pos += 4
        value = None if length < 0 else payload[pos:pos + length]
        pos += max(length, 0)
        rule = plan[i] if i < len(plan) else None
        if rule is not None and rule.style == "null":
            value = None
        elif rule is not None and value is None and rule.table == "(computed)":
            value = b"********"  # whether a value computed from masked data is NULL is an answer too
        elif rule is not None and value is not None:
            try:
                value = mask_value(value.decode("utf-8"), rule).encode()
            except UnicodeDecodeError:  # a binary value we cannot render masked: withhold it
                value = None
        cols.append(struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value)
    return struct.pack("!h", n) + b"".join(cols)


def _walk(node: object) -> Iterator[ast.Node]:
    """Every node of a parse tree, depth first."""
    if isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from _walk(getattr(node, name, None))
    elif isinstance(node, list | tuple):
        for x in node:
            yield from _walk(x)


def sql_touches(sql: str, rules: list[MaskRule]) -> tuple[bool, bool]:
    """(mentions a masked column or a whole row of a masked table, is a COPY reading a masked table).

    Unparsable SQL counts as touching (the policy refuses it anyway)."""
    if not rules:
        return False, False
    try:
        stmts = parse_sql(sql)
    except ParseError:
        return True, True
    columns = {r.column.lower() for r in rules}
    tables = {r.table.lower() for r in rules} | {r.table.lower().rsplit(".", 1)[-1] for r in rules}
    touches = copy_out = False
    for rs in stmts:
        aliases: set[str] = set()
        reads_masked = False
        for node in _walk(rs.stmt):
            if isinstance(node, ast.RangeVar):
                relname = node.relname or ""  # (a RangeVar always names its relation)
                name = ".".join(p for p in (node.schemaname, relname) if p).lower()
                if name in tables or relname.lower() in tables:
                    reads_masked = True
                    aliases.add(relname.lower())
                    if node.alias is not None and node.alias.aliasname:
                        aliases.add(node.alias.aliasname.lower())
        for node in _walk(rs.stmt):
            if isinstance(node, ast.ColumnRef):
                fields = node.fields or ()
                parts = [getattr(f, "sval", None) for f in fields]
                if any(isinstance(f, ast.A_Star) for f in fields) and reads_masked:
                    touches = True
                names = [p.lower() for p in parts if p]
                if names and names[-1] in columns:
                    touches = True
                if len(names) == 1 and names[0] in aliases:  # whole-row reference: row_to_json(c)
                    touches = True
        if isinstance(rs.stmt, ast.CopyStmt) and not rs.stmt.is_from and reads_masked:
            copy_out = True
    return touches, copy_out
