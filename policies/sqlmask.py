"""Column lineage for masking: which output columns of a statement derive from masked columns, and what to refuse.

The wire proxy masks a column the server reports as a masked table column, but a value can leave in many other
shapes: a whole row (``SELECT c FROM customers c``), an expression (``ssn || ''``), a CTE, a view, a set-returning
function, an error message, a copy into a table the session reads back, a cursor, a predicate that answers yes/no
about it. This module resolves every column reference of a statement (pglast's parse tree) against the relations in
scope — the catalog snapshot the proxy read at connect, CTEs, subqueries, joins — and reports:

* ``outputs``: per output column, whether it derives from masked data (masked unless proven clean);
* ``reads_masked``: whether the statement reads masked data at all (then error and notice texts are withheld);
* a refusal when the statement would copy masked data somewhere the session can read it later (``masking-copy``:
  CREATE TABLE AS, SELECT INTO, INSERT/UPDATE … SELECT, views, rules, cursors, RETURNING), use a masked column in a
  predicate (``masking-predicate``: WHERE, JOIN, ORDER BY, GROUP BY, comparisons, CASE conditions, window and filter
  clauses: a loop of yes/no answers recovers the value), or cannot be resolved (``masking-unresolved``: a function
  that is not a built-in, a relation or column the catalog does not know is treated as masked).

Pure: the catalog is a value given by the caller. Fail closed everywhere: what is not proven clean is masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from pglast import ast

from policies.sql import children, nodes

COPY_RULE, PREDICATE_RULE, UNRESOLVED_RULE = "masking-copy", "masking-predicate", "masking-unresolved"
# functions that return a value for any text input (never an error, one row): a masked value may flow through them
# (their result is masked in turn); through anything else, whether it fails, or how many rows it returns, would
# answer a question about the value. The second set takes the masked value only as its first argument.
TOTAL_ANY_ARG = frozenset({
    "lower", "upper", "initcap", "concat", "concat_ws", "md5", "sha224", "sha256", "sha384", "sha512", "reverse",
    "length", "char_length", "character_length", "octet_length", "bit_length", "ascii", "to_json", "to_jsonb",
    "row_to_json", "json_build_object", "jsonb_build_object", "json_build_array", "jsonb_build_array", "json_agg",
    "jsonb_agg", "json_object_agg", "jsonb_object_agg", "array_agg", "string_agg", "count", "min", "max",
    "coalesce", "format", "quote_literal", "quote_ident", "quote_nullable", "btrim", "ltrim", "rtrim", "trim",
    "replace", "translate", "array_to_string", "to_hex", "encode", "textcat", "first_value", "last_value",
    "lag", "lead", "nth_value", "row", "xmlelement", "xmlforest", "xmlconcat", "xmlagg", "array_append",
    "array_prepend", "array_cat", "jsonb_agg_strict", "json_agg_strict", "any_value", "mode", "text"})
TOTAL_FIRST_ARG = frozenset({"substr", "substring", "left", "right", "lpad", "rpad", "split_part", "overlay",
                             "regexp_replace", "repeat", "strpos", "position"})
# casting a masked value to these cannot fail on it; to anything else it can, and whether it fails answers a question
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "char", "name", "citext", "unknown"})
# built-ins that read a relation or a query given as a string: what they read cannot be seen
READS_BY_NAME = frozenset({"table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema", "schema_to_xml",
                           "schema_to_xmlschema", "schema_to_xml_and_xmlschema", "database_to_xml",
                           "database_to_xmlschema", "database_to_xml_and_xmlschema", "query_to_xml",
                           "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml",
                           "cursor_to_xmlschema", "ts_stat", "pg_read_file", "pg_read_binary_file", "lo_get",
                           "dblink", "dblink_exec", "pg_stat_statements"})
# built-ins that store a value where a later statement (or another session) can read it
STORES = frozenset({"set_config", "pg_notify", "pg_advisory_lock", "pg_advisory_xact_lock",
                    "pg_advisory_lock_shared", "pg_advisory_xact_lock_shared", "pg_try_advisory_lock",
                    "pg_try_advisory_xact_lock", "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock_shared",
                    "setval", "lo_from_bytea", "lo_put", "lo_import", "lo_export", "pg_logical_emit_message",
                    "pg_replication_origin_create", "pg_file_write"})

@dataclass(frozen=True)
class Relation:
    """A relation as the catalog knows it: its columns in order and which of them are masked."""

    columns: tuple[str, ...]
    masked: frozenset[str] = frozenset()
    oid: int = 0


@dataclass(frozen=True)
class Catalog:
    """What the proxy read from the server at connect (names lowercase; a relation under both ``rel`` when visible
    on the search path and ``schema.rel``). Views that depend on masked data have every column masked."""

    relations: Mapping[str, Relation] = field(default_factory=dict)
    builtin_functions: frozenset[str] = frozenset()
    predicates_allowed: frozenset[str] = frozenset()  # "table.column" whose masking allows predicates
    builtin_operators: frozenset[str] = frozenset()   # empty: not checked
    builtin_types: frozenset[str] = frozenset()       # empty: not checked
    set_returning: frozenset[str] = frozenset({"generate_series", "unnest", "regexp_matches", "regexp_split_to_table",
                                               "string_to_table", "json_array_elements", "jsonb_array_elements",
                                               "json_each", "jsonb_each", "generate_subscripts"})

    @property
    def masked_names(self) -> frozenset[str]:
        return frozenset(c for r in self.relations.values() for c in r.masked)


@dataclass
class Analysis:
    """The verdict on one statement (see the module docstring)."""

    reads_masked: bool = False
    outputs: list[bool] | None = None
    refusal: str | None = None
    rule: str | None = None
    columns: set[str] = field(default_factory=set)
    outputs_unknown: bool = False  # a ``*`` over a relation whose columns are not known: how many outputs is not

    def refuse(self, rule: str, why: str) -> None:
        if self.refusal is None:
            self.rule, self.refusal = rule, why


@dataclass
class _Rel:
    name: str
    columns: list[tuple[str, bool]]  # (column, derives from masked data)
    unknown: bool = False            # a relation the catalog does not know: any column of it is masked
    table: str = ""                  # the catalog relation it is (for predicates: allow)


@dataclass
class _Scope:
    rels: list[_Rel]
    outer: _Scope | None = None
    ctes: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)

    def cte(self, name: str) -> list[tuple[str, bool]] | None:
        s: _Scope | None = self
        while s is not None:
            if name in s.ctes:
                return s.ctes[name]
            s = s.outer
        return None


def _sval(x: object) -> str | None:
    v = getattr(x, "sval", None)
    return v.lower() if isinstance(v, str) else None


def _has_star(ref: ast.ColumnRef) -> bool:
    """Whether a column reference is ``*`` or ``t.*``."""
    return any(isinstance(f, ast.A_Star) for f in ref.fields or ())


_DML: TypeAlias = ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt


class _Analyzer:
    def __init__(self, catalog: Catalog, result: Analysis):
        self.cat = catalog
        self.res = result

    # -- relations ---------------------------------------------------------------------------------------
    def _rangevar(self, rv: ast.RangeVar | None, scope: _Scope) -> _Rel:
        if rv is None:  # never from the parser (a statement names its relation): unknown, so masked
            self.res.reads_masked = True
            return _Rel("", [], unknown=True)
        alias = (rv.alias.aliasname or "").lower() if rv.alias is not None else (rv.relname or "").lower()
        name = ".".join(p for p in (rv.schemaname, rv.relname) if p).lower()
        cols: list[tuple[str, bool]] | None = None
        table = ""
        if not rv.schemaname:
            cols = scope.cte(name)
        if cols is None:
            rel = self.cat.relations.get(name)
            if rel is None:
                # not known at connect (created since, or in another schema): its columns are treated as masked
                self.res.reads_masked = True
                return _Rel(alias, [], unknown=True, table=name)
            cols = [(c, c in rel.masked) for c in rel.columns]
            table = name.rsplit(".", 1)[-1]
            if rel.masked:
                # any statement on a table with masked columns: its errors may show whole rows ("Failing row
                # contains (...)"), so they are withheld like those of a statement that reads the column
                self.res.reads_masked = True
        if rv.alias is not None and rv.alias.colnames:
            new = [_sval(c) or "" for c in rv.alias.colnames]
            cols = [(new[i] if i < len(new) else c, m) for i, (c, m) in enumerate(cols)]
        return _Rel(alias, list(cols), table=table)

    def _from(self, items: object, scope: _Scope) -> None:
        for item in nodes(items):
            self._from_item(item, scope)

    def _from_item(self, item: ast.Node, scope: _Scope) -> None:
        if isinstance(item, ast.RangeVar):
            scope.rels.append(self._rangevar(item, scope))
        elif isinstance(item, ast.RangeSubselect):
            inner = _Scope([], scope if item.lateral else scope.outer, {})
            cols = self._query(item.subquery, inner if item.lateral else _Scope([], scope.outer, scope.ctes))
            alias = (item.alias.aliasname or "").lower() if item.alias is not None else ""
            if item.alias is not None and item.alias.colnames:
                new = [_sval(c) or "" for c in item.alias.colnames]
                cols = [(new[i] if i < len(new) else c, m) for i, (c, m) in enumerate(cols)]
            scope.rels.append(_Rel(alias, cols))
        elif isinstance(item, ast.JoinExpr):
            before = len(scope.rels)
            self._from(item.larg, scope)  # (never None: a join has two sides)
            middle = len(scope.rels)
            self._from(item.rarg, scope)
            if item.isNatural:  # joins on every column name the two sides share
                left = {c: m for r in scope.rels[before:middle] for c, m in r.columns}
                for r in scope.rels[middle:]:
                    for c, m in r.columns:
                        if c in left and (m or left[c]):
                            self._predicate(c)
            for u in nodes(item.usingClause):
                col = _sval(u)
                if col and any(c == col and m for r in scope.rels for c, m in r.columns):
                    self._predicate(col)
            if item.quals is not None:
                self._expr(item.quals, scope, predicate=True)
            if item.alias is not None:
                merged = [c for r in scope.rels[-2:] for c in r.columns]
                scope.rels.append(_Rel((item.alias.aliasname or "").lower(), merged))
        elif isinstance(item, ast.RangeFunction):
            tainted = False
            for f in nodes(item.functions):
                tainted = self._expr(f, scope) or tainted
            alias = (item.alias.aliasname or "").lower() if item.alias is not None else ""
            names = [_sval(c) or "" for c in (item.alias.colnames or ())] if item.alias is not None else []
            names += [_sval(getattr(d, "colname", None)) or "" for d in nodes(item.coldeflist)]
            fname = ""
            for f in nodes(item.functions):
                if isinstance(f, ast.FuncCall):
                    fname = (_sval(f.funcname[-1]) or "") if f.funcname else ""
                    break
            cols = [(n, tainted) for n in (names or [alias or fname])]
            scope.rels.append(_Rel(alias or fname, cols, unknown=tainted and not names))
        else:  # TABLESAMPLE, XMLTABLE, JSON_TABLE...: every column derives from whatever its arguments read
            tainted = any(self._expr(c, scope) for c in children(item))
            alias = getattr(getattr(item, "alias", None), "aliasname", "") or ""
            scope.rels.append(_Rel(alias.lower(), [], unknown=tainted))

    # -- queries -----------------------------------------------------------------------------------------
    def _with(self, wc: ast.WithClause | None, scope: _Scope) -> None:
        if wc is None:
            return
        for cte in nodes(wc.ctes):
            if not isinstance(cte, ast.CommonTableExpr):
                continue
            cols = self._query(cte.ctequery, _Scope([], scope, scope.ctes))
            if cte.aliascolnames:
                new = [_sval(c) or "" for c in cte.aliascolnames]
                cols = [(new[i] if i < len(new) else c, m) for i, (c, m) in enumerate(cols)]
            scope.ctes[(cte.ctename or "").lower()] = cols

    def _query(self, node: ast.Node | None, scope: _Scope) -> list[tuple[str, bool]]:
        """The output columns of a query (SELECT, VALUES, set operation, or DML with RETURNING)."""
        if isinstance(node, ast.SelectStmt):
            return self._select(node, scope)
        if isinstance(node, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
            return self._dml(node, scope)
        if node is None:
            return []
        self.res.reads_masked = True  # something we do not know how to read
        return []

    def _select(self, node: ast.SelectStmt, outer: _Scope) -> list[tuple[str, bool]]:
        scope = _Scope([], outer if outer.rels else outer.outer, dict(outer.ctes))
        self._with(node.withClause, scope)
        op = getattr(node.op, "name", str(node.op))
        if not op.endswith("NONE"):
            left = self._query(node.larg, _Scope([], scope.outer, scope.ctes))
            right = self._query(node.rarg, _Scope([], scope.outer, scope.ctes))
            n = max(len(left), len(right))
            cols: list[tuple[str, bool]] = [(left[i][0] if i < len(left) else "?",
                     (left[i][1] if i < len(left) else True) or (right[i][1] if i < len(right) else True))
                    for i in range(n)]
            # INTERSECT/EXCEPT and UNION without ALL compare whole rows
            if (not op.endswith("UNION") or node.all is False) and any(m for _, m in cols):
                self._predicate(", ".join(sorted(self.res.columns)) or "?")
            self._order(node, scope, cols)
            return cols
        if node.valuesLists:
            rows = [[self._expr(e, scope) for e in nodes(row)] for row in node.valuesLists]
            n = max((len(r) for r in rows), default=0)
            return [(f"column{i + 1}", any(r[i] for r in rows if i < len(r))) for i in range(n)]
        self._from(node.fromClause, scope)
        for part in (node.whereClause, node.havingClause):
            if part is not None:
                self._expr(part, scope, predicate=True)
        cols = []
        for t in nodes(node.targetList):
            if not isinstance(t, ast.ResTarget):
                continue
            val = t.val
            if isinstance(val, ast.ColumnRef) and _has_star(val):
                cols += self._star(val, scope)
                continue
            masked = self._expr(val, scope)
            name = (t.name or "").lower() or self._name_of(val)
            cols.append((name, masked))
        for g in nodes(node.groupClause):
            self._by(g, scope, cols, outputs_first=False)
        for d in nodes(node.distinctClause):
            self._by(d, scope, cols)
        if node.distinctClause and all(d is None for d in node.distinctClause) and any(m for _, m in cols):
            self._predicate(f"{', '.join(sorted(self.res.columns)) or '?'} (SELECT DISTINCT compares it)")
        for w in nodes(node.windowClause):
            self._expr(w, scope, predicate=True)
        self._order(node, scope, cols)
        for part in (node.limitCount, node.limitOffset):
            if part is not None:
                self._expr(part, scope, predicate=True)
        return cols

    def _order(self, node: ast.SelectStmt, scope: _Scope, cols: list[tuple[str, bool]]) -> None:
        for s in nodes(node.sortClause):
            if isinstance(s, ast.SortBy):
                self._by(s.node, scope, cols)

    def _by(self, expr: ast.Node | None, scope: _Scope, cols: list[tuple[str, bool]],
            outputs_first: bool = True) -> None:
        """ORDER BY / GROUP BY / DISTINCT ON: an output ordinal or name, or an expression: all predicates. A bare
        name means the output column first in ORDER BY (``SELECT ssn AS id ... ORDER BY id`` sorts by ssn), the
        input column first in GROUP BY; both are checked when in doubt."""
        if isinstance(expr, ast.A_Const) and isinstance(expr.val, ast.Integer):
            i = (expr.val.ival or 0) - 1
            if 0 <= i < len(cols) and cols[i][1]:
                self._predicate(cols[i][0])
            return
        if isinstance(expr, ast.ColumnRef) and expr.fields and len(expr.fields) == 1:
            name = _sval(expr.fields[0])
            hit = [m for c, m in cols if c == name]
            if any(hit):
                self._predicate(name or "?")
            if hit and (outputs_first or not any(c == name for r in scope.rels for c, _ in r.columns)):
                return
        self._expr(expr, scope, predicate=True)

    @staticmethod
    def _name_of(val: ast.Node | None) -> str:
        if isinstance(val, ast.ColumnRef) and val.fields:
            return _sval(val.fields[-1]) or "?column?"
        if isinstance(val, ast.FuncCall) and val.funcname:
            return _sval(val.funcname[-1]) or "?column?"
        return "?column?"

    def _star(self, ref: ast.ColumnRef, scope: _Scope) -> list[tuple[str, bool]]:
        names = [_sval(f) for f in ref.fields or () if not isinstance(f, ast.A_Star)]
        rels = scope.rels if not names else [r for r in scope.rels if r.name == names[-1]]
        if not rels:
            self.res.reads_masked = True
            self.res.outputs_unknown = True
            return [("*", True)]
        out: list[tuple[str, bool]] = []
        for r in rels:
            if r.unknown:
                self.res.outputs_unknown = True
                self.res.reads_masked = True
                out.append(("*", True))
                continue
            for c, m in r.columns:
                if m:
                    self._note(c)
                out.append((c, m))
        return out

    # -- DML -----------------------------------------------------------------------------------------------
    def _dml(self, node: _DML, outer: _Scope) -> list[tuple[str, bool]]:
        scope = _Scope([], outer if outer.rels else outer.outer, dict(outer.ctes))
        self._with(getattr(node, "withClause", None), scope)
        target = self._rangevar(node.relation, scope)
        if isinstance(node, ast.InsertStmt):
            src = self._query(node.selectStmt, _Scope([], scope.outer, scope.ctes)) if node.selectStmt else []
            cols = [_sval(getattr(c, "name", None)) for c in nodes(node.cols)] or [c for c, _ in target.columns]
            if any(m for c, m in target.columns if c in cols) or target.unknown:
                self.res.reads_masked = True  # a unique violation's DETAIL would echo the masked column's value
            for i, (_, masked) in enumerate(src):
                dest = cols[i] if i < len(cols) else None
                if masked and not any(c == dest and m for c, m in target.columns):
                    self.res.refuse(COPY_RULE, "INSERT copies masked data into a column that is not masked")
            scope.rels.append(target)
            occ = node.onConflictClause
            if occ is not None:
                scope.rels.append(_Rel("excluded", target.columns, target.unknown, target.table))
                self._set(occ.targetList, target, scope)
                if occ.whereClause is not None:
                    self._expr(occ.whereClause, scope, predicate=True)
        elif isinstance(node, ast.UpdateStmt):
            scope.rels.append(target)
            self._from(node.fromClause, scope)
            self._set(node.targetList, target, scope)
            if node.whereClause is not None:
                self._expr(node.whereClause, scope, predicate=True)
        elif isinstance(node, ast.DeleteStmt):
            scope.rels.append(target)
            self._from(node.usingClause, scope)
            if node.whereClause is not None:
                self._expr(node.whereClause, scope, predicate=True)
        elif isinstance(node, ast.MergeStmt):
            scope.rels.append(target)
            self._from(node.sourceRelation, scope)
            self._expr(node.joinCondition, scope, predicate=True)
            for w in nodes(node.mergeWhenClauses):
                cond = getattr(w, "condition", None)
                if cond is not None:
                    self._expr(cond, scope, predicate=True)
                self._set(getattr(w, "targetList", None), target, scope)
                for v in nodes(getattr(w, "values", None)):
                    if self._expr(v, scope):
                        self.res.refuse(COPY_RULE, "MERGE copies masked data")
        rc = getattr(node, "returningClause", None)  # pglast 8 (PostgreSQL 18); returningList before
        returning = list(nodes(getattr(rc, "exprs", rc) if rc is not None else getattr(node, "returningList", None)))
        out: list[tuple[str, bool]] = []
        for t in returning:
            val = t.val if isinstance(t, ast.ResTarget) else t
            if isinstance(val, ast.ColumnRef) and _has_star(val):
                out += self._star(val, scope)
            else:
                out.append(((getattr(t, "name", None) or "").lower() or self._name_of(val), self._expr(val, scope)))
        if any(m for _, m in out):
            self.res.refuse(COPY_RULE, "RETURNING would return masked columns")
        return out

    def _set(self, targets: object, target: _Rel, scope: _Scope) -> None:
        for t in nodes(targets):
            if not isinstance(t, ast.ResTarget):
                continue
            dest = (t.name or "").lower()
            if any(c == dest and m for c, m in target.columns):
                self.res.reads_masked = True  # errors about the new value would show the column's values
            if self._expr(t.val, scope) and not any(c == dest and m for c, m in target.columns):
                self.res.refuse(COPY_RULE, f"SET {dest} = … copies masked data into a column that is not masked")

    # -- expressions -------------------------------------------------------------------------------------
    def _note(self, col: str) -> None:
        self.res.reads_masked = True
        self.res.columns.add(col)

    def _predicate(self, col: str) -> None:
        self.res.refuse(PREDICATE_RULE, f"the masked column {col} is used in a condition, ordering or grouping "
                                        f"(its answers would reveal the value)")

    def _column(self, ref: ast.ColumnRef, scope: _Scope) -> tuple[bool, str, str]:
        """(masked, column name, table) for a column or whole-row reference, looking outwards through scopes."""
        names = [_sval(f) or "" for f in ref.fields or ()]
        col = names[-1]
        qual = names[-2] if len(names) >= 2 else None
        s: _Scope | None = scope
        while s is not None:
            for r in s.rels:
                if qual is not None and r.name != qual:
                    continue
                for c, m in r.columns:
                    if c == col:
                        return m, col, r.table
                if r.unknown and (qual is not None or not r.columns):
                    return True, col, r.table
            if qual is None and len(names) == 1:  # a whole-row reference: SELECT c FROM customers c
                for r in s.rels:
                    if r.name == col:
                        return r.unknown or any(m for _, m in r.columns), col, r.table
            s = s.outer
        if len(names) >= 2:
            for r in scope.rels:  # t.col where t is a whole-row alias... or a composite field: fail closed
                if r.name == names[0]:
                    return r.unknown or any(m for _, m in r.columns), col, r.table
        return True, col, ""  # cannot be resolved: masked (fail closed)

    def _expr(self, node: object, scope: _Scope, predicate: bool = False) -> bool:
        """Whether ``node`` derives from masked data; masked references under a predicate are refused."""
        if node is None or not isinstance(node, ast.Node | list | tuple):
            return False
        if isinstance(node, list | tuple):
            return any([self._expr(x, scope, predicate) for x in node])
        if isinstance(node, ast.ColumnRef):
            if _has_star(node):
                cols = self._star(node, scope)
                masked = any(m for _, m in cols)
                col = "*"
            else:
                masked, col, table = self._column(node, scope)
                if masked and f"{table}.{col}" in self.cat.predicates_allowed:
                    predicate = False
            if masked:
                self._note(col)
                if predicate:
                    self._predicate(col)
            return masked
        if isinstance(node, ast.A_Const | ast.ParamRef | ast.SQLValueFunction):
            return False
        if isinstance(node, ast.SubLink):
            sub = self._query(node.subselect, _Scope([], scope, scope.ctes))
            kind = getattr(node.subLinkType, "name", str(node.subLinkType))
            is_pred = predicate or not kind.startswith("EXPR") and not kind.startswith("ARRAY")
            masked = any(m for _, m in sub)
            if masked and is_pred:
                self._predicate(sub[0][0] if sub else "?")
            if node.testexpr is not None:
                masked = self._expr(node.testexpr, scope, predicate=True) or masked
            return masked
        if isinstance(node, ast.FuncCall):
            name = (_sval(node.funcname[-1]) or "") if node.funcname else ""
            schema = _sval(node.funcname[0]) if node.funcname and len(node.funcname) > 1 else None
            if schema != "pg_catalog" and (name not in self.cat.builtin_functions or schema is not None):
                self.res.reads_masked = True
                self.res.refuse(UNRESOLVED_RULE, f"{'.'.join(filter(None, (schema, name)))}() is not a built-in "
                                                 f"function: what it reads cannot be seen")
            if name in READS_BY_NAME:
                self.res.reads_masked = True
                self.res.refuse(UNRESOLVED_RULE, f"{name}() reads a relation or query named in a string: what it "
                                                 f"reads cannot be seen")
            arg_masks = [self._expr(a, scope, predicate) for a in nodes(node.args)]
            masked = any(arg_masks)
            if masked and name in self.cat.set_returning:
                self._predicate(f"{', '.join(sorted(self.res.columns)) or '?'} (in {name}(), whose number of rows "
                                f"depends on it)")
            elif masked and not (name in TOTAL_ANY_ARG or (name in TOTAL_FIRST_ARG and not any(arg_masks[1:]))
                                 or name in STORES):
                self._predicate(f"{', '.join(sorted(self.res.columns)) or '?'} (in {name}(), which can fail or "
                                f"return nothing depending on it)")
            if masked and name in STORES:
                self.res.refuse(COPY_RULE, f"{name}() would keep masked data where a later statement can read it")
            if node.agg_filter is not None:
                self._expr(node.agg_filter, scope, predicate=True)
            if node.agg_order:
                self._expr([getattr(s, "node", s) for s in node.agg_order], scope, predicate=True)
            if node.over is not None:
                self._expr(node.over, scope, predicate=True)
            if name in ("greatest", "least") and masked:
                self._predicate(next(iter(self.res.columns), "?"))
            return masked
        if isinstance(node, ast.TypeCast):
            names = [_sval(n) or "" for n in nodes(getattr(node.typeName, "names", None))]
            if self.cat.builtin_types and names and names[0] != "pg_catalog" and \
                    names[-1] not in self.cat.builtin_types:
                self.res.refuse(UNRESOLVED_RULE, f"a cast to {'.'.join(names)}, which is not a built-in type "
                                                 f"(its functions may read what cannot be seen)")
            masked = self._expr(node.arg, scope, predicate)
            if masked and names and names[-1] not in TEXT_TYPES:
                # whether the cast fails depends on the value: an error (or its absence) answers a question
                self._predicate(f"{', '.join(sorted(self.res.columns)) or '?'} (cast to {names[-1]})")
            return masked
        if isinstance(node, ast.A_Expr):
            parts = [getattr(n, "sval", "") or "" for n in nodes(node.name)]
            op = parts[-1] if parts else ""
            if self.cat.builtin_operators and op and op not in self.cat.builtin_operators | {"~~", "~~*", "!~~",
                                                                                              "!~~*"} and \
                    parts[0] in (op, "pg_catalog"):
                self.res.refuse(UNRESOLVED_RULE, f"operator {op} is not a built-in (its function may read what "
                                                 f"cannot be seen)")
            elif len(parts) > 1 and parts[0] != "pg_catalog":
                self.res.refuse(UNRESOLVED_RULE, f"operator {'.'.join(parts)} is not a built-in")
            kind = getattr(node.kind, "name", str(node.kind))
            # only concatenation cannot fail: arithmetic on a masked value can (division by zero, overflow)
            compares = not (kind == "AEXPR_OP" and op == "||")
            return any([self._expr(node.lexpr, scope, predicate or compares),
                        self._expr(node.rexpr, scope, predicate or compares)])
        if isinstance(node, ast.BoolExpr | ast.NullTest | ast.BooleanTest):
            return self._expr(list(children(node)), scope, predicate=True)
        if isinstance(node, ast.MinMaxExpr):
            return self._expr(node.args, scope, predicate=True)
        if isinstance(node, ast.CaseExpr):
            masked = self._expr(node.arg, scope, predicate=True) if node.arg is not None else False
            for w in nodes(node.args):
                if isinstance(w, ast.CaseWhen):
                    self._expr(w.expr, scope, predicate=True)
                    masked = self._expr(w.result, scope, predicate) or masked
            return self._expr(node.defresult, scope, predicate) or masked
        if isinstance(node, ast.WindowDef):
            return self._expr([node.partitionClause, [getattr(s, "node", s) for s in nodes(node.orderClause)]],
                              scope, predicate=True)
        if isinstance(node, ast.SortBy):
            return self._expr(node.node, scope, predicate=True)
        if isinstance(node, ast.SelectStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
            return any(m for _, m in self._query(node, _Scope([], scope, scope.ctes)))
        # anything else (casts, arrays, rows, XML/JSON constructors, indirection...): carries what it contains
        return any([self._expr(c, scope, predicate) for c in children(node)])


def analyze(stmt: ast.Node | None, catalog: Catalog) -> Analysis:
    """The masking verdict on one top-level statement (a pglast ``RawStmt.stmt``; None, which the parser never
    gives, reads nothing)."""
    res = _analyze(stmt, catalog)
    if res.refusal and res.columns:
        res.refusal += f" (masked: {', '.join(sorted(res.columns))})"
    return res


def _analyze(stmt: ast.Node | None, catalog: Catalog) -> Analysis:
    res = Analysis()
    an = _Analyzer(catalog, res)
    top = _Scope([])
    if isinstance(stmt, ast.SelectStmt) and stmt.intoClause is None:
        cols = an._query(stmt, top)
        res.outputs = None if res.outputs_unknown else [m for _, m in cols]
    elif isinstance(stmt, ast.SelectStmt):  # SELECT ... INTO
        cols = an._query(stmt, top)
        if res.reads_masked or any(m for _, m in cols):
            res.refuse(COPY_RULE, "SELECT INTO copies masked data into a new table")
    elif isinstance(stmt, ast.CreateTableAsStmt | ast.ViewStmt | ast.DeclareCursorStmt | ast.RuleStmt):
        query = getattr(stmt, "query", None)
        if isinstance(stmt, ast.RuleStmt):
            for action in nodes(stmt.actions):
                an._query(action, _Scope([], None, {})) if not isinstance(action, ast.NotifyStmt) else None
            if stmt.whereClause is not None:
                an._expr(stmt.whereClause, _Scope([an._rangevar(stmt.relation, top)]), predicate=True)
            target = an._rangevar(stmt.relation, top)
            if target.unknown or any(m for _, m in target.columns):
                res.reads_masked = True
        else:
            an._query(query, top)
        if res.reads_masked:
            what = {"CreateTableAsStmt": "CREATE TABLE AS / MATERIALIZED VIEW", "ViewStmt": "CREATE VIEW",
                    "DeclareCursorStmt": "a cursor", "RuleStmt": "CREATE RULE"}[type(stmt).__name__]
            res.refuse(COPY_RULE, f"{what} over masked data would hand it back unmasked later")
    elif isinstance(stmt, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
        cols = an._dml(stmt, top)
        res.outputs = [m for _, m in cols]
    elif isinstance(stmt, ast.ExplainStmt):
        inner = _analyze(stmt.query, catalog)
        res.reads_masked, res.refusal, res.rule, res.columns = (inner.reads_masked, inner.refusal, inner.rule,
                                                                inner.columns)
        res.outputs = None
    elif isinstance(stmt, ast.CopyStmt):
        if stmt.query is not None:
            an._query(stmt.query, top)
        elif stmt.relation is not None:
            rel = an._rangevar(stmt.relation, top)
            if rel.unknown or any(m for _, m in rel.columns):
                res.reads_masked = True
        if res.reads_masked and not stmt.is_from:
            res.refuse(COPY_RULE, "COPY out of masked data is refused (select the columns you need: masked "
                                  "ones come back masked)")
    elif isinstance(stmt, ast.CreateFunctionStmt | ast.CreateTrigStmt | ast.CreatePolicyStmt | ast.DoStmt):
        text = repr(stmt).lower()
        named = {c for c in catalog.masked_names if c in text}
        if named or any(t.split(".")[-1] in text for t, r in catalog.relations.items() if r.masked):
            res.reads_masked = True
            res.columns |= named or {c for r in catalog.relations.values() for c in r.masked}
            res.refuse(COPY_RULE, "code created over masked data would hand it back unmasked later")
    elif isinstance(stmt, ast.IndexStmt):
        target = an._rangevar(stmt.relation, top)
        scope = _Scope([target])
        for param in nodes(stmt.indexParams):
            expr = getattr(param, "expr", None)
            name = (getattr(param, "name", None) or "").lower()
            if (expr is not None and an._expr(expr, scope)) or any(c == name and m for c, m in target.columns):
                res.refuse(PREDICATE_RULE, "an index over a masked column compares and evaluates its values")
        if stmt.whereClause is not None:
            an._expr(stmt.whereClause, scope, predicate=True)
    elif isinstance(stmt, ast.AlterTableStmt | ast.RenameStmt):
        rv = getattr(stmt, "relation", None)
        if isinstance(rv, ast.RangeVar):
            known = catalog.relations.get(".".join(p for p in (rv.schemaname, rv.relname) if p).lower())
            if known is not None and known.masked:
                res.columns |= set(known.masked)
                res.refuse(COPY_RULE, "changing a table with masked columns would change what is masked")
    elif isinstance(stmt, ast.PrepareStmt):
        inner = _analyze(stmt.query, catalog)
        res.reads_masked, res.refusal, res.rule, res.columns = (inner.reads_masked, inner.refusal, inner.rule,
                                                                inner.columns)
    return res
