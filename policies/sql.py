"""Classify SQL with pglast (PostgreSQL's own parser) on the exact text that would be sent.

Every statement is reported, including the ones nested where they still execute: DML inside CTEs, the statement
under ``EXPLAIN ANALYZE``, the body of ``PREPARE``, the actions of ``CREATE RULE``. Traits say what makes a
statement dangerous (``no_where``, ``copy_program``, ``dynamic`` ...). Pure; a parse failure raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.parser import ParseError

KINDS = {
    "SelectStmt": "select", "InsertStmt": "insert", "UpdateStmt": "update", "DeleteStmt": "delete",
    "MergeStmt": "merge", "TruncateStmt": "truncate", "DropStmt": "drop", "CopyStmt": "copy",
    "AlterSystemStmt": "alter_system", "DoStmt": "do", "PrepareStmt": "prepare", "ExecuteStmt": "execute",
    "DeallocateStmt": "deallocate", "ExplainStmt": "explain", "TransactionStmt": "transaction",
    "CallStmt": "call", "VariableShowStmt": "show", "VacuumStmt": "maintenance", "ClusterStmt": "maintenance",
    "ReindexStmt": "maintenance", "LockStmt": "lock", "ListenStmt": "notify", "NotifyStmt": "notify",
    "UnlistenStmt": "notify", "GrantStmt": "grant", "GrantRoleStmt": "grant", "CreateRoleStmt": "role",
    "AlterRoleStmt": "role", "AlterRoleSetStmt": "role", "DropRoleStmt": "role", "RuleStmt": "create",
    "CreateFunctionStmt": "create", "DropOwnedStmt": "drop", "ReassignOwnedStmt": "role",
    "LoadStmt": "load", "CheckPointStmt": "maintenance", "DiscardStmt": "set", "ConstraintsSetStmt": "set",
    "DeclareCursorStmt": "cursor", "FetchStmt": "cursor", "ClosePortalStmt": "cursor", "RefreshMatViewStmt": "alter",
    "RenameStmt": "alter", "CommentStmt": "alter", "SecLabelStmt": "alter", "AlterOwnerStmt": "alter",
    "CreateTableAsStmt": "create", "ViewStmt": "create", "IndexStmt": "create", "CreatedbStmt": "create",
    "DropdbStmt": "drop", "AlterDatabaseStmt": "alter", "AlterDatabaseSetStmt": "alter",
}
DANGEROUS_FUNCTIONS = frozenset({
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "lo_import", "lo_export", "lo_get",
    "lo_put", "lo_from_bytea", "dblink", "dblink_exec", "dblink_connect", "dblink_connect_u", "dblink_open",
    "dblink_send_query", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
    "pg_file_write", "pg_execute_server_program", "set_config", "pg_logical_emit_message",
})
# functions that run SQL given as a string: whatever that string says is invisible here
DYNAMIC_FUNCTIONS = frozenset({"query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "dblink",
                               "dblink_exec", "dblink_open", "dblink_send_query", "cursor_to_xml"})


# statements that leave code behind to run later (a trigger fires on another user's INSERT)
PLANTS_CODE = frozenset({"CreateTrigStmt", "CreateEventTrigStmt", "AlterEventTrigStmt", "CreatePolicyStmt",
                         "AlterPolicyStmt", "AlterFunctionStmt", "CreateTransformStmt", "CreateCastStmt",
                         "CreateOpClassStmt", "DefineStmt", "CreateConversionStmt", "CreatePLangStmt",
                         "CreateExtensionStmt", "AlterExtensionStmt", "AlterExtensionContentsStmt",
                         "CreateForeignServerStmt", "CreateFdwStmt", "CreateUserMappingStmt",
                         "CreateSubscriptionStmt", "AlterSubscriptionStmt", "CreatePublicationStmt"})
PRIVILEGE_NODES = frozenset({"AlterDefaultPrivilegesStmt", "AlterOwnerStmt", "ReassignOwnedStmt",
                             "AlterRoleStmt", "AlterRoleSetStmt", "CreateRoleStmt", "GrantRoleStmt"})


class SqlParseError(ValueError):
    """The text is not SQL PostgreSQL would accept."""


@dataclass(frozen=True)
class Statement:
    """One statement that would execute."""

    kind: str
    node: str
    tables: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    traits: tuple[str, ...] = ()
    nested: bool = False
    text: str = ""


@dataclass
class _Acc:
    tables: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)


def children(node: ast.Node) -> Iterator[ast.Node]:
    """The nodes directly under ``node`` (lists flattened)."""
    for name in node:
        v = getattr(node, name, None)
        yield from nodes(v)


def nodes(v: object) -> Iterator[ast.Node]:
    """``v`` itself if it is a node, or the nodes in a list or tuple of them."""
    if isinstance(v, ast.Node):
        yield v
    elif isinstance(v, list | tuple):
        for x in v:
            yield from nodes(x)


def _rangevar(rv: ast.RangeVar | None) -> str:
    """``schema.relation`` in lowercase ("" for none: the parser always names a statement's relation)."""
    if rv is None:
        return ""
    return ".".join(p for p in (rv.schemaname, rv.relname) if p).lower()


def _names(items: object) -> str:
    parts = [getattr(x, "sval", None) for x in nodes(items)]
    return ".".join(p for p in parts if p).lower()


def _has_column(node: ast.Node) -> bool:
    if isinstance(node, ast.ColumnRef):
        return True
    return any(_has_column(c) for c in children(node))


def _restricts(where: ast.Node | None) -> bool:
    """Whether a WHERE clause can leave rows out. No clause, constants, parameters ($1 = $2, bound later to
    anything), ``x = x`` and ``... OR <any of those>`` cannot: fail closed."""
    if where is None or not _has_column(where):
        return False
    if isinstance(where, ast.A_Expr) and _names(where.name) in ("=", ">=", "<=") and \
            repr(where.lexpr) == repr(where.rexpr):
        return False
    if isinstance(where, ast.BoolExpr):
        op = getattr(where.boolop, "name", str(where.boolop)).lower()
        if op.startswith("or"):
            return all(_restricts(a) for a in where.args or ())
        if op.startswith("and"):
            return any(_restricts(a) for a in where.args or ())
    return True


def _walk(node: ast.Node, acc: _Acc, out: list[Statement], text: str, top: bool) -> None:
    """Collect tables/functions under ``node``; nested executing statements become their own entries."""
    for child in children(node):
        name = type(child).__name__
        if isinstance(child, ast.RangeVar):
            acc.tables.append(_rangevar(child))
        elif isinstance(child, ast.FuncCall):
            acc.functions.append(_names(child.funcname).rsplit(".", 1)[-1])
        if name in KINDS and name != "SelectStmt":
            _statement(child, out, text, nested=True)
            continue
        _walk(child, acc, out, text, False)


def _explain_analyzes(node: ast.ExplainStmt) -> bool:
    for opt in nodes(node.options):
        if isinstance(opt, ast.DefElem) and opt.defname == "analyze":
            arg = opt.arg
            val = getattr(arg, "boolval", None)
            if val is None:
                val = str(getattr(arg, "sval", "true") or "true").lower() not in ("false", "off", "0", "no")
            return bool(val) if arg is not None else True
    return False


def _statement(node: ast.Node, out: list[Statement], text: str, nested: bool) -> None:
    name = type(node).__name__
    kind = KINDS.get(name) or ("create" if name.startswith(("Create", "Define")) else
                               "alter" if name.startswith("Alter") else "drop" if name.startswith("Drop") else
                               "other")
    traits: list[str] = []
    acc = _Acc()
    if isinstance(node, ast.ExplainStmt):
        if _explain_analyzes(node) and node.query is not None:
            _statement(node.query, out, text, nested=True)  # EXPLAIN ANALYZE runs it
        out.append(Statement("explain", name, nested=nested, text=text))
        return
    if isinstance(node, ast.PrepareStmt):
        pass  # its query is found by the walk below: judged as what EXECUTE will run
    elif isinstance(node, ast.ExecuteStmt | ast.DoStmt | ast.CreateFunctionStmt):
        traits.append("dynamic")
        if isinstance(node, ast.CreateFunctionStmt):
            traits.append("plants_code")
    elif isinstance(node, ast.RuleStmt):
        traits += ["rule", "plants_code"]  # its actions are found by the walk below
    elif name in PLANTS_CODE:
        traits.append("plants_code")  # code that runs later, on someone else's statement
    elif name in PRIVILEGE_NODES:
        traits.append("privilege")
    elif isinstance(node, ast.DeleteStmt | ast.UpdateStmt):
        acc.tables.append(_rangevar(node.relation))
        if not _restricts(node.whereClause):
            traits.append("no_where")
    elif isinstance(node, ast.InsertStmt | ast.MergeStmt):
        acc.tables.append(_rangevar(node.relation))
    elif isinstance(node, ast.SelectStmt) and node.intoClause is not None:
        kind = "create"
    elif isinstance(node, ast.CopyStmt):
        traits.append("copy_from" if node.is_from else "copy_to")
        if node.is_program:
            traits.append("copy_program")
        elif node.filename:
            traits.append("copy_file")
        if node.relation is not None:
            acc.tables.append(_rangevar(node.relation))
    elif isinstance(node, ast.DropStmt):
        for obj in node.objects or ():
            acc.tables.append(_names(obj))
    elif isinstance(node, ast.VariableSetStmt):
        kind = "set_role" if (node.name or "").lower() in ("role", "session_authorization") else "set"
    elif isinstance(node, ast.GrantStmt | ast.GrantRoleStmt):
        kind = "grant" if node.is_grant else "revoke"
        traits.append("privilege")
    elif kind == "role":
        traits.append("privilege")
    _walk(node, acc, out, text, True)
    functions = tuple(dict.fromkeys(acc.functions))
    if set(functions) & DYNAMIC_FUNCTIONS:
        traits.append("dynamic")
    if "set_config" in functions:
        traits.append("set_role")  # set_config('role', ...) switches role like SET ROLE
    if set(functions) & DANGEROUS_FUNCTIONS:
        traits.append("dangerous_function")
    tables = tuple(t for t in dict.fromkeys(acc.tables) if t)
    out.append(Statement(kind, name, tables, functions, tuple(dict.fromkeys(traits)), nested, text))


def classify_sql(text: str) -> list[Statement]:
    """Every statement ``text`` would execute, top-level and nested; raises SqlParseError."""
    if "\x00" in text:
        raise SqlParseError("NUL byte in SQL")
    try:
        raw = parse_sql(text)
    except ParseError as e:
        raise SqlParseError(str(e)) from None
    out: list[Statement] = []
    for rs in raw:  # pglast gives character offsets
        if rs.stmt is None:  # never from the parser; not to be passed over unjudged
            raise SqlParseError("a statement the parser gave no tree for")
        start = rs.stmt_location or 0
        end = start + rs.stmt_len if rs.stmt_len else len(text)
        _statement(rs.stmt, out, text[start:end].strip(), nested=False)
    return out
