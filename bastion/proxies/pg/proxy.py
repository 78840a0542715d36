"""One PostgreSQL wire proxy per brokered session, on a unix socket only that session's psql can reach.

The client (psql) connects with no password; its user/database/options are ignored: the broker decides them. Every
Query and Parse is judged on its exact text before it is forwarded; a refused statement never reaches the server and
the client gets an ErrorResponse naming the rule, in protocol order. BackendKeyData is replaced by a per-session key
and CancelRequests are mapped (or withdraw a held statement), so the client never learns the upstream key.

A statement whose decision carries a row limit (``max_rows``) runs *measured*: the proxy privately opens a
transaction (or a savepoint inside the client's), reads the rows touched so far in the transaction from
``pg_stat_xact_user_tables``, forwards the client's request, holds back every message of it until its
ReadyForQuery, reads the counter again and then commits and delivers, or rolls back and applies the rule's action
(an error, or a hold for approval after which the same request runs again without the limit). The private queries
never reach the client; they are sent only when no request of the client is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError

from bastion.proxies.pg import upstream as up
from bastion.proxies.pg.catalog import load_catalog, resolve_masks
from bastion.proxies.pg.masking import Field, MaskRule, mask_data_row, parse_row_description
from bastion.proxies.pg.protocol import (
    CANCEL_REQUEST,
    GSSENC_REQUEST,
    PROTOCOL_3,
    SSL_REQUEST,
    ProtocolError,
    auth_ok,
    backend_key,
    cstr,
    error_response,
    message,
    parse_error,
    parse_parse,
    query_text,
    read_message,
    read_startup,
    ready_for_query,
)
from policies.engine import Action, Decision
from policies.sqlmask import Analysis, Catalog, analyze

log = logging.getLogger(__name__)

EMPTY_QUERY = message(b"Q", b"\x00")
COMPUTED = MaskRule("(computed)", "(computed)", "full")
WITHHELD = MaskRule("(binary)", "(binary)", "null")  # a masked value in binary format, not text: sent as NULL
TEXT_OIDS = frozenset({25, 1043, 1042, 19, 18, 705})  # text, varchar, bpchar, name, "char", unknown


FORWARD = set(b"BEDCHdcf")  # Bind Execute Describe Close Flush CopyData CopyDone CopyFail

# -- the row limit (max_rows) --------------------------------------------------------------------------------------
SAVEPOINT = "bastion_limit"
# rows inserted, updated and deleted so far in this transaction, per table (triggers, rules, functions, CTEs and
# EXPLAIN ANALYZE included); everything qualified so that nothing the session creates (a pg_temp view, an operator
# on the search path) can stand in for it
TRACK_SQL = "SELECT pg_catalog.current_setting('track_counts')"
ROWS_SQL = ("SELECT s.relid, s.n FROM (SELECT relid, n_tup_ins OPERATOR(pg_catalog.+) n_tup_upd "
            "OPERATOR(pg_catalog.+) n_tup_del AS n FROM pg_catalog.pg_stat_xact_user_tables) s "
            "WHERE s.n OPERATOR(pg_catalog.<>) 0")
COUNT_SQL = f"{TRACK_SQL}; {ROWS_SQL}"
PRIVATE = "bastion_limit"  # the prepared statement and portal of what the proxy runs inside a client's batch
# what the server sends exactly once per extended-protocol message it answers (Parse, Bind, Close, Describe, Execute)
COMPLETES = frozenset({b"1", b"2", b"3", b"n", b"T", b"C", b"I", b"s"})
BEGINS = (0, 1)  # TransactionStmt kinds BEGIN and START TRANSACTION
DML_TAGS = (b"INSERT", b"UPDATE", b"DELETE", b"MERGE")
# every spelling of transaction control, COPY and PREPARE contains one of these
SHAPE_WORDS = ("begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release", "prepare", "copy")


@dataclass
class _Stmt:
    """What the proxy knows of a prepared statement (a Parse, or SQL PREPARE), for each Bind of it."""

    limit: int | None = None
    over: Decision | None = None
    unmeasurable: str | None = None  # why it cannot run under a row limit (transaction control, COPY FROM STDIN)
    reads: bool = False              # reads masked data
    txn: int | None = None           # a transaction control statement: its kind (BEGINS ...)
    copy_in: bool = False            # COPY FROM STDIN


@dataclass
class _Divert:
    """Where the server's answers go while the proxy runs its own messages inside a client's unsynced batch."""

    remaining: int                   # answers to the client's messages still to come before ours
    expected: int                    # answers to ours
    queue: asyncio.Queue[tuple[bytes, bytes]]


@dataclass
class _Buffer:
    """The server's messages for a measured request, held until the proxy knows how many rows it touched."""

    limit: int
    done: asyncio.Future[bytes]      # the status of the request's ReadyForQuery (which is not buffered)
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    overflow: bool = False
    tags: list[bytes] = field(default_factory=list)  # CommandComplete tags

    def write(self, data: bytes) -> None:
        if self.overflow:
            return
        self.size += len(data)
        if self.size > self.limit:  # nothing more is kept; the request is rolled back
            self.overflow = True
            self.parts.clear()
            return
        self.parts.append(data)


@dataclass
class _Measured:
    """One client request running under a row limit: a Query, or an extended-protocol batch up to its Sync."""

    limit: int
    over: Decision
    status: bytes                    # the client's transaction status before it: I (we BEGIN) or T (a savepoint)
    before: dict[int, int]           # the counters before it, per table
    buffer: _Buffer
    sent: list[bytes] = field(default_factory=list)  # the client's messages, to run again once approved
    group: list[Analysis] | None = None  # a Query: its lineage, for that run (None: extended protocol)
    reads: bool = False
    names: set[str] = field(default_factory=set)     # statements it prepared (closed before the run again)
    portals: set[str] = field(default_factory=set)   # portals it bound
    refused: bytes | None = None     # an error in place of the rest of the batch (the batch is rolled back)
    told: bool = False               # that error already went to the client
    mid: bool = False                # it began inside a batch: what the batch did before it is the client's
    tags_at: int = 0                 # where the current statement's CommandComplete tags start in the buffer
    worst: tuple[int, bool, int, Decision] | None = None  # the first statement over its limit: touched, counter
    #                                  went back, its limit, its rule's decision


def _values(payload: bytes) -> list[bytes | None]:
    """The column values of a DataRow."""
    (n,) = struct.unpack("!h", payload[:2])
    pos, out = 2, []
    for _ in range(n):
        (length,) = struct.unpack("!i", payload[pos:pos + 4])
        pos += 4
        out.append(None if length < 0 else payload[pos:pos + length])
        pos += max(length, 0)
    return out


@dataclass
class _Shape:
    why: str | None = None           # why it cannot run under a row limit (None: it can)
    names: list[str] = field(default_factory=list)  # the names its PREPAREs create
    txn: int | None = None           # the kind of its (first) transaction control statement
    copy_in: bool = False


def _shape(sql: str) -> _Shape:
    """What about ``sql`` matters to the row limit beyond the policy's decision."""
    out = _Shape()
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
            out.txn = int(node.kind) if out.txn is None else out.txn
            out.why = out.why or ("transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, PREPARE "
                                  "TRANSACTION ...) would end the transaction the limit is measured in")
        elif isinstance(node, ast.CopyStmt) and node.is_from and not node.filename:
            out.copy_in = True
            out.why = out.why or "COPY FROM STDIN needs the client to send data while the results are held back"
        elif isinstance(node, ast.PrepareStmt) and node.name:
            out.names.append(node.name)
    return out


def _tagged(tags: list[bytes]) -> int:
    """Rows the CommandComplete tags of INSERT/UPDATE/DELETE/MERGE report."""
    n = 0
    for tag in tags:
        words = tag.rstrip(b"\x00").split()
        if words and words[0] in DML_TAGS and words[-1].isdigit():
            n += int(words[-1])
    return n


class PgProxy:
    """Serve one operator's psql (and its cancel requests) on ``socket_dir``."""

    def __init__(self, target: up.Target, password: str, *, judge: Callable[[str], Decision],
                 hold: Callable[[Decision], Awaitable[dict[str, Any]]], note: Callable[[Decision], None],
                 withdraw: Callable[[], None], socket_dir: Path, application_name: str = "bastion",
                 masking: list[MaskRule] | None = None):
        self.target = target
        self._password = password
        self.judge, self.hold, self.note, self.withdraw = judge, hold, note, withdraw
        self.socket_dir = socket_dir
        self.application_name = application_name
        self.fake_pid = secrets.randbelow(2**31 - 1) + 1
        self.fake_key = secrets.randbelow(2**31 - 1) + 1
        self.server: asyncio.AbstractServer | None = None
        self.upstream: up.Upstream | None = None
        self.holding = False
        self.connected = False
        self.masking = list(masking or [])
        self.masks: dict[tuple[int, int], MaskRule] = {}
        self.catalog = Catalog()
        self.clean: frozenset[int] = frozenset()  # relations whose unmasked columns are shown as they are
        # one entry per forwarded Query/Sync/FunctionCall (like ``expect``): the lineage of each statement of a
        # Query, in order (None for the extended protocol, whose statements are judged as a whole: ext_reads)
        self.groups: deque[list[Analysis] | None] = deque()
        self.ext_reads = False
        self.plan: list[MaskRule | None] = []
        self.errors: list[str] = []
        self._batch_reads = False  # the unsynced extended-protocol batch reads masked data (keeps ext_reads set)
        # the row limit: what the server->client task does with what it reads while the proxy runs a private query
        # (_collector) or a measured request (_buffer); _drained is set whenever no client request is in flight
        self._collector: asyncio.Queue[tuple[bytes, bytes]] | None = None
        self._buffer: _Buffer | None = None
        self._drained = asyncio.Event()
        self._late: list[bytes] = []  # ParameterStatus/notifications that arrived during private queries
        self._measuring: _Measured | None = None  # an extended-protocol batch under a row limit, until its Sync
        self._unsynced = False  # extended-protocol messages forwarded since the last Sync
        # this batch began with a limited statement in an aborted transaction: the server skips all of it
        self._aborted = False
        # the client's unsynced batch so far: messages that the server answers, the answers seen since the last
        # ReadyForQuery, whether one was an error, whether it ran BEGIN, or something after which its
        # transaction state cannot be told (other transaction control, COPY FROM STDIN, a Query)
        self._sent_in_batch = self._done_in_batch = 0
        self._batch_error = self._seg_begin = self._seg_unknown = False
        self._divert: _Divert | None = None
        self.prepared: dict[str, _Stmt] = {}  # prepared statements by name ("" unnamed)
        # the lineage outputs of each prepared statement, and the statements bound since the client last had all its
        # answers: with one statement in flight its results are placed precisely (count(*) stays a count)
        self.prepared_outputs: dict[str, list[bool] | None] = {}
        self._inflight_bound: list[list[bool] | None] = []  # per Bind in flight: its statement's outputs, then
        self.portals: dict[str, tuple[_Stmt, _Measured | None]] = {}  # portal -> its statement, the batch it is in
        self.measure_buffer = 64 << 20  # the most a measured request's results may take while held back

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / ".s.PGSQL.5432"

    async def start(self) -> Path:
        self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = os.umask(0o077)
        try:
            self.server = await asyncio.start_unix_server(self._client, path=str(self.socket_path))
        finally:
            os.umask(old)
        return self.socket_path

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.upstream is not None:
            self.upstream.writer.close()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()

    # -- one client connection --------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as e:
            log.warning("pg proxy: %s; closing the client connection", e)
            self.errors.append(str(e))
            with contextlib.suppress(ConnectionError):
                writer.write(error_response(f"bastion: protocol error ({e})", code="08P01", severity="FATAL"))
        except Exception:  # a bug must not take the daemon down
            log.exception("pg proxy failed")
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            code, body = await read_startup(reader)
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                writer.write(b"N")  # the local socket needs neither; the client goes on in clear
                continue
            break
        if code == CANCEL_REQUEST:
            pid, key = struct.unpack("!ii", body[:8])
            if (pid, key) == (self.fake_pid, self.fake_key):
                if self.holding:
                    self.withdraw()
                elif self.upstream is not None:
                    await up.cancel(self.target, self.upstream.pid, self.upstream.key)
            return
        if code != PROTOCOL_3:
            writer.write(error_response("bastion: unsupported protocol version", code="0A000", severity="FATAL"))
            return
        if self.connected:
            writer.write(error_response("bastion: one database connection per brokered session", code="53300",
                                        severity="FATAL"))
            return
        self.connected = True
        try:
            conn = await up.connect(self.target, self._password, application_name=self.application_name)
        except up.UpstreamError as e:
            writer.write(error_response(f"bastion: {e}", code="08001", severity="FATAL"))
            self.connected = False
            return
        self.upstream = conn
        if self.masking:
            try:
                self.masks = await resolve_masks(conn, self.masking)
                self.catalog, self.clean = await load_catalog(conn, self.masks, frozenset(
                    f"{r.table.rsplit('.', 1)[-1]}.{r.column}" for r in self.masking if r.predicates == "allow"))
            except (up.UpstreamError, asyncio.IncompleteReadError, ValueError) as e:  # no masks, no data
                writer.write(error_response(f"bastion: {e}", code="08001", severity="FATAL"))
                conn.writer.close()
                self.connected = False
                return
        writer.write(auth_ok())
        for k, v in conn.params.items():
            writer.write(message(b"S", k.encode() + b"\x00" + v.encode() + b"\x00"))
        writer.write(backend_key(self.fake_pid, self.fake_key))
        writer.write(ready_for_query(conn.status))
        await writer.drain()
        expect: deque[bytes | None] = deque()  # per forwarded Query/Sync: an error to deliver in its place
        self._reset()
        to_server = asyncio.ensure_future(self._client_to_server(reader, conn, writer, expect))
        to_client = asyncio.ensure_future(self._server_to_client(conn, writer, expect))
        try:
            await asyncio.wait([to_server, to_client], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (to_server, to_client):
                t.cancel()
            conn.writer.close()
            self.connected = False
            for t in (to_server, to_client):
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]

    def _reset(self) -> None:
        """What one client connection knew of its server session starts empty for the next one."""
        self.groups.clear()
        self.ext_reads = self._batch_reads = False
        self.plan = []
        self._collector = self._buffer = self._measuring = None
        self._late.clear()
        self._unsynced = self._aborted = False
        self._sent_in_batch = self._done_in_batch = 0
        self._batch_error = self._seg_begin = self._seg_unknown = False
        self._divert = None
        self.prepared.clear()
        self.portals.clear()

    def _lineage(self, sql: str) -> tuple[list[Analysis], bytes | None]:
        """The masking analysis of each statement of ``sql``, or the refusal the client gets instead."""
        if not self.masking:
            return [], None
        try:
            stmts = parse_sql(sql)
        except ParseError:
            return [], None  # the policy refuses it with the parser's message
        out: list[Analysis] = []
        for rs in stmts:
            a = analyze(rs.stmt, self.catalog)
            if a.refusal is not None:
                self.note(Decision(Action.BLOCK, a.rule, a.refusal, sql))
                return [], error_response(f"bastion: refused by rule {a.rule!r}: {a.refusal}",
                                          hint="masked columns can be selected (they come back masked); they "
                                               "cannot be compared, copied or returned elsewhere")
            out.append(a)
        return out, None

    async def _decide(self, sql: str, analyses: list[Analysis] | None = None) -> tuple[bytes | None, Decision, bool]:
        """(None to forward ``sql``, or the ErrorResponse the client gets instead; the decision; whether it reads
        masked data). A decision with ``max_rows`` runs measured (the caller's part)."""
        d = self.judge(sql)
        lineage, refusal = self._lineage(sql) if d.action != Action.BLOCK else ([], None)
        if refusal is not None:  # masking refuses before anyone is asked to approve
            return refusal, d, False
        self.note(d)
        if analyses is not None:
            analyses.extend(lineage)
        reads = any(a.reads_masked for a in lineage)
        if d.action in (Action.ALLOW, Action.WARN):
            if reads and analyses is None:
                self.ext_reads = self._batch_reads = True
            return None, d, reads
        if d.action == Action.BLOCK:
            what = f"rule {d.rule!r}" if d.rule else "the bastion"
            return error_response(f"bastion: blocked by {what}: {d.reason}", hint=f"statement: {sql[:200]}"), d, reads
        result = await self._hold(d)
        if result.get("status") == "approved":
            if reads and analyses is None:
                self.ext_reads = self._batch_reads = True
            return None, d, reads
        return error_response(f"bastion: request {result.get('status')}: {result.get('status_reason', '')}"), d, reads

    async def _hold(self, d: Decision) -> dict[str, Any]:
        """Wait for a reviewer (a CancelRequest withdraws); any failure is a denial."""
        self.holding = True
        try:
            return await self.hold(d)
        except Exception as e:  # RPC or store failure = deny
            log.exception("approval failed")
            return {"status": "failed", "status_reason": f"approval could not be obtained ({e})"}
        finally:
            self.holding = False

    def _current(self) -> tuple[Analysis | None, bool]:
        """The lineage of the statement whose results arrive now, and whether it reads masked data."""
        if not self.groups or self.groups[0] is None:
            return None, self.ext_reads
        group = self.groups[0]
        if not group:
            return None, True  # results we cannot place: fail closed
        return group[0], group[0].reads_masked

    def _field_plan(self, fields: list[Field]) -> list[MaskRule | None]:
        """Per output column: its masking rule, COMPUTED (masked whole), or None (shown as it is)."""
        a, reads = self._current()
        candidates = a.outputs if a is not None else None
        if a is None and (not self.groups or self.groups[0] is None) and len(self._inflight_bound) == 1:
            candidates = self._inflight_bound[0]  # exactly one execution in flight: these are its results
        outputs = candidates if candidates is not None and len(candidates) == len(fields) else None
        plan: list[MaskRule | None] = []
        for i, f in enumerate(fields):
            rule = self.masks.get((f.table_oid, f.attnum))
            if f.fmt == 1 and f.type_oid not in TEXT_OIDS and (rule is not None or reads and not (
                    f.table_oid != 0 and f.attnum > 0 and f.table_oid in self.clean) and not (
                    f.table_oid == 0 and outputs is not None and not outputs[i])):
                plan.append(WITHHELD)  # a binary value that is not text cannot be shown masked: withheld
            elif rule is not None or not reads:
                plan.append(rule)
            elif f.table_oid != 0 and f.attnum > 0 and f.table_oid in self.clean:
                plan.append(None)  # a column of a known relation that is not masked, as the server reports it
            elif f.table_oid == 0 and outputs is not None and not outputs[i]:
                plan.append(None)  # computed from clean columns only (lineage)
            else:
                plan.append(COMPUTED)  # a whole row, a view over masked data, an unknown relation, or derived
        return plan

    def _scrub(self, payload: bytes, reads: bool | None = None) -> bytes:
        """Errors and notices can echo values (``invalid input syntax for type integer: "123-45-6789"``, ``Key
        (ssn)=(...) already exists``): while a statement that reads masked data runs, every field that can carry a
        value is withheld (the SQLSTATE stays); otherwise detail and context that name a masked column are."""
        fields = parse_error(payload)
        if self._current()[1] if reads is None else reads:
            cols = ", ".join(sorted({r.column for r in self.masking}))
            kept = {k: v for k, v in fields.items() if k in "SVCPFLRstcdn"}
            kept["M"] = (f"bastion: the server's message is withheld: the statement reads masked columns ({cols}); "
                         f"SQLSTATE {fields.get('C', '?')}")
            fields = {k: kept[k] for k in kept}
            return b"".join(k.encode() + v.encode() + b"\x00" for k, v in fields.items()) + b"\x00"
        names = {r.column.lower() for r in self.masking}
        text = " ".join(fields.values()).lower()
        if not any(n in text for n in names):
            return payload
        for k in ("D", "W", "M"):
            if k in fields and any(n in fields[k].lower() for n in names):
                fields[k] = "(withheld by the bastion: it may contain masked values)"
        return b"".join(k.encode() + v.encode() + b"\x00" for k, v in fields.items()) + b"\x00"

    # -- client -> server ----------------------------------------------------------------------------------------
    async def _client_to_server(self, reader: asyncio.StreamReader, conn: up.Upstream,
                                writer: asyncio.StreamWriter, expect: deque[bytes | None]) -> None:
        discard: bytes | None = None  # after a refused message: drop messages until Sync, then this error

        def refuse(error: bytes) -> None:
            nonlocal discard
            discard = error
            m = self._measuring
            if m is not None and m.refused is None:
                m.refused = error  # the batch is rolled back at its Sync

        while True:
            kind, payload = await read_message(reader)
            raw = message(kind, payload)
            out = conn.writer
            if discard is not None:
                if kind == b"S":
                    if self._measuring is not None:
                        await self._end_batch(conn, writer, expect)
                    else:
                        expect.append(discard)
                        self.groups.append(None)
                        self._synced()
                        out.write(raw)
                    discard = None
                elif kind == b"X":
                    out.write(raw)
                    return
                continue
            if kind in (b"Q", b"F") and self._measuring is not None:
                raise ProtocolError("a Query or FunctionCall inside an extended-protocol batch under a row limit")
            if kind == b"Q":
                sql = query_text(payload)
                group: list[Analysis] = []
                if self._unsynced:  # a Query inside an extended-protocol batch ends its implicit transaction
                    self._seg_unknown = True
                refusal, d, reads = await self._decide(sql, group)
                if refusal is None:
                    shape = _shape(sql)
                    for name in shape.names:  # SQL PREPARE: a later Bind of it is limited like the statement
                        self.prepared[name] = _Stmt(d.max_rows, d.over_limit, shape.why, reads)
                    if d.max_rows is not None and d.over_limit is not None:
                        handled, refusal = await self._measure_query(raw, sql, group, d, reads, shape.why,
                                                                     shape.names, conn, writer, expect)
                        if handled:
                            continue
                expect.append(refusal)
                self.groups.append(group if refusal is None else [])
                out.write(EMPTY_QUERY if refusal is not None else raw)
            elif kind == b"P":
                name, sql = parse_parse(payload)
                if name == PRIVATE:
                    refuse(self._refusal(None, f"the prepared statement name {PRIVATE!r} is the bastion's", name))
                    continue
                refusal, d, reads = await self._decide(sql)
                shape = _shape(sql)
                info = _Stmt(d.max_rows, d.over_limit, shape.why, reads, shape.txn, shape.copy_in)
                if refusal is None and (info.limit is not None or self._measuring is not None):
                    refusal = await self._admit(info, sql, conn, expect)
                if refusal is not None:
                    refuse(refusal)
                    continue
                self.prepared[name] = info
                lineage, _ = self._lineage(sql)
                self.prepared_outputs[name] = lineage[0].outputs if len(lineage) == 1 else None
                self._forward(raw, name=name)
            elif kind == b"B":
                portal, _, rest = payload.partition(b"\x00")
                stmt_name = rest.split(b"\x00", 1)[0].decode("utf-8", "replace")
                info_or_none = self.prepared.get(stmt_name)
                if info_or_none is None:
                    refuse(self._refusal(None, f"prepared statement {stmt_name!r} was not prepared through the "
                                               "bastion (its text was never judged)", stmt_name))
                    continue
                info = info_or_none
                if info.limit is not None or self._measuring is not None:
                    refusal = await self._admit(info, f"(bind of prepared statement {stmt_name!r})", conn, expect)
                    if refusal is not None:
                        refuse(refusal)
                        continue
                if info.reads:  # each execution of a statement that reads masked data is treated so
                    self.ext_reads = self._batch_reads = True
                self._inflight_bound.append(self.prepared_outputs.get(stmt_name))
                name = portal.decode("utf-8", "replace")
                if name == PRIVATE:
                    refuse(self._refusal(None, f"the portal name {PRIVATE!r} is the bastion's", name))
                    continue
                self.portals[name] = (info, self._measuring)
                self._forward(raw, portal=name)
            elif kind == b"E":
                name = payload.split(b"\x00", 1)[0].decode("utf-8", "replace")
                bound = self.portals.get(name)
                if bound is not None and bound[0].limit is not None and not self._aborted and \
                        (bound[1] is None or bound[1] is not self._measuring):
                    refuse(self._refusal(bound[0].over, "a portal of a statement with a row limit runs only in the "
                                                        "batch (up to Sync) that bound it", name, bound[0].limit))
                    continue
                if bound is not None and (bound[0].txn is not None or bound[0].copy_in):
                    if bound[0].txn in BEGINS and not bound[0].copy_in:
                        self._seg_begin = True
                    else:
                        self._seg_unknown = True
                self._forward(raw)
            elif kind == b"S":
                if self._measuring is not None:
                    await self._end_batch(conn, writer, expect)
                    continue
                expect.append(None)
                self.groups.append(None)
                self._synced()
                out.write(raw)
            elif kind == b"H" and self._measuring is not None:
                # the batch's results are held back until its Sync: a client that waits for them after a Flush
                # would wait forever, so it gets its error now (and the batch is rolled back at Sync)
                error = self._refusal(self._measuring.over, "a Flush inside a batch with a row limit: its results "
                                                             "are known only at Sync", "Flush")
                refuse(error)
                self._measuring.told = True
                writer.write(error)
                await writer.drain()
                continue
            elif kind == b"F":
                expect.append(error_response("bastion: the fast-path function call interface is refused"))
                self.groups.append([])
                out.write(EMPTY_QUERY)
            elif kind == b"X":
                out.write(raw)
                return
            elif kind[0] in FORWARD:
                self._forward(raw, unsynced=kind in (b"D", b"C"))
            else:
                raise ProtocolError(f"unexpected message type {kind!r} from the client")
            await out.drain()

    def _forward(self, raw: bytes, *, name: str | None = None, portal: str | None = None,
                 unsynced: bool = True) -> None:
        """Send one extended-protocol (or copy) message upstream, recording it in a measured batch."""
        assert self.upstream is not None
        m = self._measuring
        if m is not None:
            m.sent.append(raw)
            if name:
                m.names.add(name)
            if portal:
                m.portals.add(portal)
        if unsynced:
            self._unsynced = True
            self._sent_in_batch += 1
        self.upstream.writer.write(raw)

    def _synced(self) -> None:
        self._unsynced = self._aborted = self._batch_reads = False
        self._sent_in_batch = 0
        self._seg_begin = self._seg_unknown = False

    def _refusal(self, over: Decision | None, why: str, text: str, limit: int | None = None) -> bytes:
        """A refusal of something that cannot run under a row limit, noted like any other decision."""
        rule = over.rule if over is not None else None
        self.note(Decision(Action.BLOCK, rule, why, text))
        limit = limit if limit is not None or over is None else over.max_rows
        what = f" (rule {rule!r}: at most {limit} rows)" if rule and limit is not None else ""
        return error_response(f"bastion: refused: {why}{what}", code="0A000" if over is not None else "42501")

    # -- the row limit -----------------------------------------------------------------------------------------
    async def _idle(self, expect: deque[bytes | None]) -> None:
        """Wait until every request the client sent earlier has had its ReadyForQuery."""
        while expect:
            self._drained.clear()
            await self._drained.wait()

    async def _private(self, conn: up.Upstream, *msgs: bytes) -> tuple[list[list[bytes | None]], list[bytes], bytes]:
        """Send ``msgs`` upstream and read their answer up to ReadyForQuery, none of it for the client: (data rows,
        ErrorResponse payloads, status). Only called while no client request is in flight."""
        queue: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        self._collector = queue
        try:
            conn.writer.write(b"".join(msgs))
            await conn.writer.drain()
            rows: list[list[bytes | None]] = []
            errors: list[bytes] = []
            while True:
                kind, payload = await queue.get()
                if kind == b"D":
                    rows.append(_values(payload))
                elif kind == b"E":
                    errors.append(payload)
                elif kind in (b"S", b"A"):  # a parameter the server reports, a notification: the client's
                    self._late.append(message(kind, payload))
                elif kind == b"Z":
                    conn.status = payload[:1]
                    return rows, errors, payload[:1]
        finally:
            self._collector = None

    async def _counts(self, conn: up.Upstream, head: str = "") -> tuple[dict[int, int] | None, str | None]:
        """The rows touched so far in this transaction, per table; or why they cannot be known."""
        rows, errors, _ = await self._private(conn, message(b"Q", (head + COUNT_SQL).encode() + b"\x00"))
        if errors:
            return None, parse_error(errors[0]).get("M", "error")
        if not rows or rows[0] != [b"on"]:
            return None, "the server does not count rows (track_counts is off)"
        out: dict[int, int] = {}
        for row in rows[1:]:
            if len(row) == 2 and row[0] is not None and row[1] is not None:
                out[int(row[0])] = int(row[1])
        return out, None

    async def _unwind(self, conn: up.Upstream, status: bytes, *, failed: bool, keep: bool = False) -> bytes:
        """Roll back what ran since our BEGIN (``status`` I) or savepoint (T, or ``keep``: our transaction stays
        open); with ``failed`` inside the client's transaction, leave it aborted as PostgreSQL would have. Returns
        the status the client sees."""
        if status == b"I" and not keep:
            sql, want = "ROLLBACK", b"I"
        else:
            sql, want = f"ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}", b"T"
            if failed:  # the client's statement failed: its transaction is aborted, without our savepoint
                sql, want = sql + "; SELECT 'bastion: the statement failed'::pg_catalog.int4", b"E"
        for _ in range(3):  # a CancelRequest racing with us can interrupt one attempt
            _, errors, got = await self._private(conn, message(b"Q", sql.encode() + b"\x00"))
            ours = want != b"E" or (len(errors) == 1 and parse_error(errors[0]).get("C") == "22P02")
            if got == want and (want == b"E" or not errors) and ours:
                return got
        raise ProtocolError("the transaction state could not be restored after a statement under a row limit")

    async def _open(self, conn: up.Upstream, over: Decision) -> tuple[bytes, dict[int, int]] | bytes:
        """Open our transaction (or a savepoint in the client's) and read the counters: (the client's status,
        counts), or the refusal the client gets."""
        status = conn.status
        head = "BEGIN; " if status == b"I" else f"SAVEPOINT {SAVEPOINT}; "
        before, why = await self._counts(conn, head)
        if before is None:
            if status == b"T" or conn.status != status:  # our BEGIN or SAVEPOINT ran
                await self._unwind(conn, status, failed=False)
            return self._refusal(over, f"the rows it touches cannot be measured: {why}", over.text)
        return status, before

    async def _measure_query(self, raw: bytes, sql: str, group: list[Analysis], d: Decision, reads: bool,
                             why: str | None, names: list[str], conn: up.Upstream, writer: asyncio.StreamWriter,
                             expect: deque[bytes | None]) -> tuple[bool, bytes | None]:
        """Run a Query under its row limit. (handled, refusal): not handled and no refusal = forward it as is."""
        assert d.over_limit is not None and d.max_rows is not None
        over = replace(d.over_limit, max_rows=d.max_rows)
        if why is not None:
            return False, self._refusal(over, f"this Query has a row limit and {why}; send those statements "
                                              "separately", sql)
        if self._unsynced:
            return False, self._refusal(over, "a Query with a row limit cannot follow unsynced extended-protocol "
                                              "messages", sql)
        await self._idle(expect)
        if conn.status == b"E":
            return False, None  # the client's transaction is aborted: the server refuses the statement itself
        opened = await self._open(conn, over)
        if isinstance(opened, bytes):
            return False, opened
        status, before = opened
        m = _Measured(d.max_rows, over, status, before, self._new_buffer(), [raw], list(group), reads, set(names))
        self._buffer = m.buffer
        expect.append(None)
        self.groups.append(group)
        conn.writer.write(raw)
        await conn.writer.drain()
        await self._settle(m, conn, writer, expect)
        return True, None

    def _new_buffer(self) -> _Buffer:
        return _Buffer(self.measure_buffer, asyncio.get_running_loop().create_future())

    async def _admit(self, info: _Stmt, text: str, conn: up.Upstream, expect: deque[bytes | None]) -> bytes | None:
        """An extended-protocol Parse or Bind of ``info``: inside a measured batch, whether it may join it; with a
        row limit outside one, start one (at a Sync boundary only). None to forward it, else the refusal."""
        m = self._measuring
        if self._aborted:
            return None  # the server refuses the batch's first statement and skips the rest until Sync
        if m is not None:
            if info.unmeasurable is not None:
                return self._refusal(m.over, f"this batch has a row limit and {info.unmeasurable}", text)
            m.reads = m.reads or info.reads
            if info.limit is None or info.over is None or self._batch_error:
                return None  # (after an error the server skips the rest of the batch)
            # another limited statement: what ran since the last one is that one's; this one is measured on its own
            rows, errors, skipped = await self._inject(conn, [ROWS_SQL])
            if skipped:
                return None
            if errors:  # the server now skips the rest of the batch; it is rolled back at its Sync
                return self._refusal(m.over, "the rows it touches cannot be measured: "
                                             f"{parse_error(errors[0]).get('M', 'error')}", text)
            now = {int(r[0]): int(r[1]) for r in rows if len(r) == 2 and r[0] is not None and r[1] is not None}
            self._judge(m, now)
            m.before, m.tags_at = now, len(m.buffer.tags)
            m.limit, m.over = info.limit, replace(info.over, max_rows=info.limit)
            return None
        assert info.limit is not None and info.over is not None
        over = replace(info.over, max_rows=info.limit)
        if info.unmeasurable is not None:
            return self._refusal(over, f"this statement has a row limit and {info.unmeasurable}", text)
        if self._unsynced:
            return await self._admit_mid(info, over, text, conn, expect)
        await self._idle(expect)
        if conn.status == b"E":  # the client's transaction is aborted: the server refuses the statement itself
            self._aborted = True
            return None
        opened = await self._open(conn, over)
        if isinstance(opened, bytes):
            return opened
        status, before = opened
        self._measuring = _Measured(info.limit, over, status, before, self._new_buffer(), reads=info.reads)
        self._buffer = self._measuring.buffer
        return None

    async def _admit_mid(self, info: _Stmt, over: Decision, text: str, conn: up.Upstream,
                         expect: deque[bytes | None]) -> bytes | None:
        """A limited statement after other unsynced messages of its batch (a pipeline): measured from here to the
        Sync, with the proxy's own statements run in the batch just before it. The batch's transaction state at
        this point must be known: after transaction control other than BEGIN, COPY FROM STDIN or a Query in the
        same batch it is not, and the statement is refused."""
        assert info.limit is not None
        if self._seg_unknown:
            return self._refusal(over, "a statement with a row limit cannot follow transaction control, COPY FROM "
                                       "STDIN or a Query in the same batch: send Sync before it", text)
        await self._idle(expect)  # earlier batches answered: the answers still to come are this batch's
        if self._batch_error or conn.status == b"E":
            self._aborted = True  # the server skips the rest of this batch: nothing to measure
            return None
        status = b"T" if self._seg_begin else conn.status  # the transaction state at this point of the batch
        sqls = (["BEGIN"] if status == b"I" else []) + [f"SAVEPOINT {SAVEPOINT}", TRACK_SQL, ROWS_SQL]
        rows, errors, skipped = await self._inject(conn, sqls)
        if skipped:
            self._aborted = True  # the batch failed before our statements: the server skips all of the rest
            return None
        m = _Measured(info.limit, over, status, {}, self._new_buffer(), reads=info.reads, mid=True)
        if errors or not rows or rows[0] != [b"on"]:
            why = parse_error(errors[0]).get("M", "error") if errors else \
                "the server does not count rows (track_counts is off)"
            # the batch is failing now (our error) or must not go on: nothing more of it runs
            m.refused = self._refusal(over, f"the rows it touches cannot be measured: {why}", text)
            self._measuring = m
            self._buffer = m.buffer
            return m.refused
        m.before = {int(r[0]): int(r[1]) for r in rows[1:] if len(r) == 2 and r[0] is not None and r[1] is not None}
        self._measuring = m
        self._buffer = m.buffer
        return None

    async def _inject(self, conn: up.Upstream, sqls: list[str]) -> tuple[list[list[bytes | None]], list[bytes], bool]:
        """Run ``sqls`` inside the client's unsynced batch, after what it sent so far (a named statement and portal
        of the proxy's, and a Flush): (data rows, ErrorResponse payloads, whether the server skipped them because
        the batch had already failed). None of the answers reaches the client."""
        name = cstr(PRIVATE)
        close = [message(b"C", b"P" + name), message(b"C", b"S" + name)]
        msgs = list(close)
        for sql in sqls:
            msgs += [message(b"P", name + cstr(sql) + b"\x00\x00"), message(b"B", name + name + b"\x00" * 6),
                     message(b"E", name + b"\x00" * 4), *close]
        queue: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        self._divert = _Divert(self._sent_in_batch - self._done_in_batch, len(msgs), queue)
        conn.writer.write(b"".join(msgs) + message(b"H"))
        await conn.writer.drain()
        rows: list[list[bytes | None]] = []
        errors: list[bytes] = []
        while True:
            kind, payload = await queue.get()
            if kind == b"!":
                return rows, errors, True
            if kind == b".":
                return rows, errors, False
            if kind == b"D":
                rows.append(_values(payload))
            elif kind == b"E":
                errors.append(payload)
            elif kind in (b"S", b"A"):
                self._late.append(message(kind, payload))

    async def _end_batch(self, conn: up.Upstream, writer: asyncio.StreamWriter, expect: deque[bytes | None]) -> None:
        """The client's Sync closes a measured batch: forward it, then settle the batch."""
        m = self._measuring
        assert m is not None
        self._measuring = None
        self._synced()
        sync = message(b"S")
        m.sent.append(sync)
        expect.append(None if m.told else m.refused)
        self.groups.append(None)
        conn.writer.write(sync)
        await conn.writer.drain()
        await self._settle(m, conn, writer, expect)

    async def _deliver(self, writer: asyncio.StreamWriter, parts: list[bytes], status: bytes) -> None:
        writer.write(b"".join(parts) + b"".join(self._late) + ready_for_query(status))
        self._late.clear()
        await writer.drain()

    async def _settle(self, m: _Measured, conn: up.Upstream, writer: asyncio.StreamWriter,
                      expect: deque[bytes | None]) -> None:
        try:
            await self._conclude(m, conn, writer, expect)
        finally:  # portals keep a reference to their batch: not to what it held back
            m.buffer.parts.clear()
            m.sent.clear()

    async def _conclude(self, m: _Measured, conn: up.Upstream, writer: asyncio.StreamWriter,
                        expect: deque[bytes | None]) -> None:
        """After the measured request's ReadyForQuery: commit and deliver, or roll back and apply the limit."""
        status = await m.buffer.done
        buf = m.buffer
        if status == b"I":
            if m.refused is None:  # our transaction ended inside the request: cannot happen (transaction control
                log.error("pg proxy: a measured request ended its transaction; its rows were not limited")
                self.errors.append("a measured request ended its transaction")
            await self._deliver(writer, buf.parts, status)  # (refused: the batch failed, the server rolled back)
            return
        if status == b"E" or m.refused is not None:  # it failed (or was refused): nothing of it stays
            true = await self._unwind(conn, m.status, failed=status == b"E")
            parts = [] if m.told else buf.parts
            if buf.overflow and not m.told:
                parts = [m.refused or self._too_large(m)]
            await self._deliver(writer, parts, true)
            return
        after, why = await self._counts(conn)
        if after is None:
            true = await self._unwind(conn, m.status, failed=False)
            await self._deliver(writer, [self._refusal(m.over, f"the rows it touched could not be measured ({why}); "
                                                               "rolled back", m.over.text)], true)
            return
        self._judge(m, after)
        if m.worst is None:
            if buf.overflow:
                true = await self._unwind(conn, m.status, failed=False)
                await self._deliver(writer, [self._too_large(m)], true)
                return
            end = "COMMIT" if m.status == b"I" else f"RELEASE SAVEPOINT {SAVEPOINT}"
            _, errors, got = await self._private(conn, message(b"Q", end.encode() + b"\x00"))
            if errors:  # a deferred constraint at COMMIT: the client gets the server's error after its results
                error = message(b"E", self._scrub(errors[0], m.reads) if self.masking else errors[0])
                if got != m.status and m.status != b"I":
                    got = await self._unwind(conn, m.status, failed=True)
                parts = list(buf.parts)
                if m.group is not None:  # a Query: PostgreSQL commits before its last CommandComplete, which the
                    last = max((i for i, part in enumerate(parts) if part[:1] == b"C"), default=None)
                    if last is not None:  # error then replaces
                        del parts[last]
                await self._deliver(writer, [*parts, error], got)
                return
            await self._deliver(writer, buf.parts, got)
            return
        touched, went_back, limit, over = m.worst
        count = (f"touched {touched} rows" if not went_back else
                 "a table's row counter went back (TRUNCATE or DROP inside it), so the rows it touched are unknown")
        what = f"{count}, limit {limit}; rolled back"
        default = over.reason.startswith("more than ")  # the engine's own words say no more than ours
        over = replace(over, reason=what if default else f"{over.reason}: {what}")
        self.note(over)
        rule = f"rule {over.rule!r}" if over.rule else "the bastion"
        # inside a pipeline outside a transaction, what the batch did before the statement is in our transaction:
        # kept while a reviewer decides, rolled back with the rest on a refusal (as after any error in a batch)
        keep = m.mid and m.status == b"I"
        if over.action == Action.REQUIRE_APPROVAL:
            true = await self._unwind(conn, m.status, failed=False, keep=keep)
            result = await self._hold(over)
            if result.get("status") == "approved":
                await (self._again_in_block if keep else self._again)(m, conn, writer, expect)
                return
            if keep:
                true = await self._unwind(conn, b"I", failed=False)
            error = error_response(f"bastion: request {result.get('status')}: {result.get('status_reason', '')} "
                                   f"({what})")
        else:
            true = await self._unwind(conn, m.status, failed=False)
            error = error_response(f"bastion: blocked by {rule}: {what}", hint=f"statement: {over.text[:200]}")
        await self._deliver(writer, [error], true)

    @staticmethod
    def _judge(m: _Measured, now: dict[int, int]) -> None:
        """The rows the current statement of ``m`` touched (counters since its start, or its CommandComplete counts
        if more): the first one over its limit is kept in ``m.worst``."""
        touched, went_back = 0, False
        for relid in m.before.keys() | now.keys():
            delta = now.get(relid, 0) - m.before.get(relid, 0)
            went_back = went_back or delta < 0
            touched += max(delta, 0)
        touched = max(touched, _tagged(m.buffer.tags[m.tags_at:]))
        if m.worst is None and (went_back or touched > m.limit):
            m.worst = (touched, went_back, m.limit, m.over)

    def _too_large(self, m: _Measured) -> bytes:
        return self._refusal(m.over, f"its results exceed {self.measure_buffer >> 20} MiB, more than the bastion "
                                     "holds back while it measures the rows touched; rolled back", m.over.text)

    async def _close_made(self, m: _Measured, conn: up.Upstream) -> None:
        """Prepared statements and portals outlive a rollback: close the ones the request made."""
        closes = [message(b"C", b"S" + n.encode() + b"\x00") for n in sorted(m.names)] + \
                 [message(b"C", b"P" + p.encode() + b"\x00") for p in sorted(m.portals) if p]
        if closes:
            await self._private(conn, *closes, message(b"S"))

    async def _again_in_block(self, m: _Measured, conn: up.Upstream, writer: asyncio.StreamWriter,
                              expect: deque[bytes | None]) -> None:
        """Approved, in a pipeline whose earlier part is in the proxy's transaction: run the rest of the batch again
        without the limit, then commit the whole batch, as PostgreSQL would have at its Sync."""
        await self._close_made(m, conn)
        buf = self._new_buffer()
        self._buffer = buf
        if m.reads:
            self.ext_reads = True
        expect.append(None)
        self.groups.append(None)
        conn.writer.write(b"".join(m.sent))
        await conn.writer.drain()
        status = await buf.done
        if status != b"T" or buf.overflow:
            true = await self._unwind(conn, b"I", failed=False)
            await self._deliver(writer, [self._too_large(m)] if buf.overflow else buf.parts, true)
            return
        _, errors, got = await self._private(conn, message(b"Q", b"COMMIT\x00"))
        error = [message(b"E", self._scrub(errors[0], m.reads) if self.masking else errors[0])] if errors else []
        await self._deliver(writer, [*buf.parts, *error], got)

    async def _again(self, m: _Measured, conn: up.Upstream, writer: asyncio.StreamWriter,
                     expect: deque[bytes | None]) -> None:
        """Approved over the limit: send the exact request again, without the limit; its results stream."""
        await self._close_made(m, conn)
        if self._late:
            writer.write(b"".join(self._late))
            self._late.clear()
        if m.group is None:
            if m.reads:
                self.ext_reads = True
            self.groups.append(None)
        else:
            self.groups.append(list(m.group))
        expect.append(None)
        conn.writer.write(b"".join(m.sent))
        await conn.writer.drain()

    # -- server -> client ----------------------------------------------------------------------------------------
    async def _server_to_client(self, conn: up.Upstream, writer: asyncio.StreamWriter,
                                expect: deque[bytes | None]) -> None:
        while True:
            kind, payload = await read_message(conn.reader)
            if self._collector is not None:  # the proxy's own query: none of it is the client's
                self._collector.put_nowait((kind, payload))
                continue
            dv = self._divert
            if dv is not None:
                if dv.remaining <= 0:  # an answer to the proxy's own messages inside the client's batch
                    dv.queue.put_nowait((kind, payload))
                    if kind in COMPLETES:
                        dv.expected -= 1
                    if kind == b"E" or dv.expected <= 0:  # after an error the server skips the rest of ours
                        self._divert = None
                        dv.queue.put_nowait((b".", b""))
                    continue
                if kind == b"E":  # the client's batch failed before ours: the server skips ours too
                    self._divert = None
                    dv.queue.put_nowait((b"!", b""))
                elif kind in COMPLETES:
                    dv.remaining -= 1
            if kind in COMPLETES:
                self._done_in_batch += 1
            elif kind == b"E":
                self._batch_error = True
            elif kind == b"Z":
                self._done_in_batch, self._batch_error = 0, False
            buf = self._buffer
            out: _Buffer | asyncio.StreamWriter = buf if buf is not None else writer
            group = self.groups[0] if self.groups else None
            if buf is not None and kind in (b"G", b"W"):  # refused before it is sent; never while held back
                raise ProtocolError("the server asked for COPY data during a request under a row limit")
            if kind == b"I" and expect and expect[0] is not None:
                out.write(expect[0])  # the empty query stood in for a refused one: its error goes here
                expect[0] = b""
            elif kind == b"Z":
                pending = expect.popleft() if expect else None
                if self.groups:
                    self.groups.popleft()
                if pending:  # a refused Parse: the error comes before the ReadyForQuery of its Sync
                    out.write(pending)
                conn.status = payload[:1]
                if not expect:
                    if not self._batch_reads:
                        self.ext_reads = False
                    self._inflight_bound.clear()
                    self._drained.set()
                if buf is not None:  # the end of a measured request: the client task decides what to deliver
                    self._buffer = None
                    buf.done.set_result(payload[:1])
                    continue
                writer.write(message(kind, payload))
            elif kind == b"T":
                self.plan = self._field_plan(parse_row_description(payload)) if self.masking or self.masks else []
                out.write(message(kind, payload))
            elif kind == b"D" and any(self.plan):
                out.write(message(kind, mask_data_row(payload, self.plan)))
            elif kind in (b"E", b"N") and self.masking:
                out.write(message(kind, self._scrub(payload)))
                if kind == b"E" and group:
                    group.clear()  # the rest of this Query is skipped by the server
            elif kind in (b"C", b"I"):
                if group:
                    group.pop(0)
                self.plan = []
                if buf is not None and kind == b"C":
                    buf.tags.append(payload)
                out.write(message(kind, payload))
            elif kind == b"K":
                continue  # never let the real backend key through
            else:
                out.write(message(kind, payload))
            if out is writer:
                await writer.drain()
