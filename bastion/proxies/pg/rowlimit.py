"""The measured row limit (``max_rows``): what the proxy runs to count, what it holds back, and how it judges.

PostgreSQL cannot be asked in advance how many rows a write will touch, so a statement under a row limit runs
inside a transaction (or savepoint) of the proxy's, and the rows it touched are read afterwards from
``pg_stat_xact_user_tables``, which counts triggers, rules, functions, CTEs and EXPLAIN ANALYZE too. Its results
are held back meanwhile, so that a statement over its limit can be rolled back before the client sees anything.
The mixins in ``private``, ``measure`` and ``settle`` do the I/O; this module has the data and the pure parts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NamedTuple

from pglast import ast, parse_sql
from pglast.parser import ParseError

from policies.engine import Decision
from policies.sqlmask import Analysis

SAVEPOINT = "bastion_limit"
# rows inserted, updated and deleted so far in this transaction, per table; everything qualified so that nothing
# the session creates (a pg_temp view, an operator on the search path) can stand in for it
TRACK_SQL = "SELECT pg_catalog.current_setting('track_counts')"
ROWS_SQL = ("SELECT s.relid, s.n FROM (SELECT relid, n_tup_ins OPERATOR(pg_catalog.+) n_tup_upd "
            "OPERATOR(pg_catalog.+) n_tup_del AS n FROM pg_catalog.pg_stat_xact_user_tables) s "
            "WHERE s.n OPERATOR(pg_catalog.<>) 0")
COUNT_SQL = f"{TRACK_SQL}; {ROWS_SQL}"
PRIVATE = "bastion_limit"  # the prepared statement and portal of what the proxy runs inside a client's batch
DML_TAGS = (b"INSERT", b"UPDATE", b"DELETE", b"MERGE")
# every spelling of transaction control, COPY and PREPARE contains one of these
SHAPE_WORDS = ("begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release", "prepare", "copy")

Rows = list[list[bytes | None]]


@dataclass
class ResultBuffer:
    """The server's messages for a measured request, held until the proxy knows how many rows it touched."""

    limit: int
    done: asyncio.Future[bytes]      # the status of the request's ReadyForQuery (which is not buffered)
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    overflow: bool = False
    tags: list[bytes] = field(default_factory=list)  # CommandComplete tags

    def write(self, data: bytes) -> None:
        """Hold ``data`` back; past ``limit`` bytes keep nothing more (the request will be rolled back), so that a
        large result cannot exhaust the daemon's memory."""
        if self.overflow:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.overflow = True
            self.parts.clear()
            return
        self.parts.append(data)


class Overrun(NamedTuple):
    """The first statement of a measured request that went over its limit."""

    touched: int
    went_back: bool                  # a table's counter went back (TRUNCATE or DROP): the rows touched are unknown
    limit: int
    over: Decision                   # its rule's decision


@dataclass
class Measured:
    """One client request running under a row limit: a Query, or an extended-protocol batch up to its Sync."""

    limit: int
    over: Decision
    status: bytes                    # the client's transaction status before it: I (we BEGIN) or T (a savepoint)
    before: dict[int, int]           # the counters before it, per table
    buffer: ResultBuffer
    sent: list[bytes] = field(default_factory=list)  # the client's messages, to run again once approved
    group: list[Analysis] | None = None  # a Query: its lineage, for that run (None: extended protocol)
    reads: bool = False
    names: set[str] = field(default_factory=set)     # statements it prepared (closed before the run again)
    portals: set[str] = field(default_factory=set)   # portals it bound
    refused: bytes | None = None     # an error in place of the rest of the batch (the batch is rolled back)
    told: bool = False               # that error already went to the client
    mid: bool = False                # it began inside a batch: what the batch did before it is the client's
    tags_at: int = 0                 # where the current statement's CommandComplete tags start in the buffer
    worst: Overrun | None = None


@dataclass
class Shape:
    """What about a statement matters to the row limit beyond the policy's decision."""

    why: str | None = None           # why it cannot run under a row limit (None: it can)
    names: list[str] = field(default_factory=list)  # the names its PREPAREs create
    txn: int | None = None           # the kind of its (first) transaction control statement
    copy_in: bool = False


def shape_of(sql: str) -> Shape:
    """The shape of ``sql``: transaction control would end the transaction the limit is measured in, COPY FROM
    STDIN needs the client to talk while results are held back, and a PREPARE's statements inherit its limit."""
    out = Shape()
    low = sql.lower()
    if not any(w in low for w in SHAPE_WORDS):  # most statements: no second parse
        return out
    try:
        stmts = parse_sql(sql)
    except ParseError:
        return out  # the policy refuses it
    for rs in stmts:
        node = rs.stmt
        if isinstance(node, ast.TransactionStmt):
            if out.txn is None and node.kind is not None:
                out.txn = int(node.kind)
            out.why = out.why or ("transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, PREPARE "
                                  "TRANSACTION ...) would end the transaction the limit is measured in")
        elif isinstance(node, ast.CopyStmt) and node.is_from and not node.filename:
            out.copy_in = True
            out.why = out.why or "COPY FROM STDIN needs the client to send data while the results are held back"
        elif isinstance(node, ast.PrepareStmt) and node.name:
            out.names.append(node.name)
    return out


def counters(rows: Rows) -> dict[int, int]:
    """Rows of ``ROWS_SQL`` as {table oid: rows touched so far in the transaction}."""
    return {int(r[0]): int(r[1]) for r in rows if len(r) == 2 and r[0] is not None and r[1] is not None}


def tagged_rows(tags: list[bytes]) -> int:
    """Rows the CommandComplete tags of INSERT/UPDATE/DELETE/MERGE report."""
    n = 0
    for tag in tags:
        words = tag.rstrip(b"\x00").split()
        if words and words[0] in DML_TAGS and words[-1].isdigit():
            n += int(words[-1])
    return n


def judge_rows(m: Measured, now: dict[int, int]) -> None:
    """The rows the current statement of ``m`` touched (counters since its start, or its CommandComplete counts if
    more): the first one over its limit is kept in ``m.worst``."""
    touched, went_back = 0, False
    for relid in m.before.keys() | now.keys():
        delta = now.get(relid, 0) - m.before.get(relid, 0)
        went_back = went_back or delta < 0
        touched += max(delta, 0)
    touched = max(touched, tagged_rows(m.buffer.tags[m.tags_at:]))
    if m.worst is None and (went_back or touched > m.limit):
        m.worst = Overrun(touched, went_back, m.limit, m.over)
