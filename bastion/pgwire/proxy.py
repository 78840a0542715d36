"""One PostgreSQL wire proxy per brokered session, on a unix socket only that session's psql can reach.

The client (psql) connects with no password; its user/database/options are ignored: the broker decides them. Every
Query and Parse is judged on its exact text before it is forwarded; a refused statement never reaches the server and
the client gets an ErrorResponse naming the rule, in protocol order. BackendKeyData is replaced by a per-session key
and CancelRequests are mapped (or withdraw a held statement), so the client never learns the upstream key.
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
from pathlib import Path
from typing import Any

from pglast import parse_sql
from pglast.parser import ParseError

from bastion.pgwire import upstream as up
from bastion.pgwire.catalog import load_catalog, resolve_masks
from bastion.pgwire.masking import Field, MaskRule, mask_data_row, parse_row_description
from bastion.pgwire.protocol import (
    CANCEL_REQUEST,
    GSSENC_REQUEST,
    PROTOCOL_3,
    SSL_REQUEST,
    ProtocolError,
    auth_ok,
    backend_key,
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


FORWARD = set(b"BEDCHdcf")  # Bind Execute Describe Close Flush CopyData CopyDone CopyFail


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

    async def _decide(self, sql: str, analyses: list[Analysis] | None = None) -> bytes | None:
        """None to forward ``sql``; otherwise the ErrorResponse the client gets instead."""
        d = self.judge(sql)
        lineage, refusal = self._lineage(sql) if d.action != Action.BLOCK else ([], None)
        if refusal is not None:  # masking refuses before anyone is asked to approve
            return refusal
        self.note(d)
        if analyses is not None:
            analyses.extend(lineage)
        reads = any(a.reads_masked for a in lineage)
        if d.action in (Action.ALLOW, Action.WARN):
            self.ext_reads = self.ext_reads or (reads and analyses is None)
            return None
        if d.action == Action.BLOCK:
            what = f"rule {d.rule!r}" if d.rule else "the bastion"
            return error_response(f"bastion: blocked by {what}: {d.reason}", hint=f"statement: {sql[:200]}")
        self.holding = True
        try:
            result = await self.hold(d)
        except Exception as e:  # RPC or store failure = deny
            log.exception("approval failed")
            result = {"status": "failed", "status_reason": f"approval could not be obtained ({e})"}
        finally:
            self.holding = False
        if result.get("status") == "approved":
            self.ext_reads = self.ext_reads or (reads and analyses is None)
            return None
        return error_response(f"bastion: request {result.get('status')}: {result.get('status_reason', '')}")

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
        outputs = a.outputs if a is not None and a.outputs is not None and len(a.outputs) == len(fields) else None
        plan: list[MaskRule | None] = []
        for i, f in enumerate(fields):
            rule = self.masks.get((f.table_oid, f.attnum))
            if rule is not None or not reads:
                plan.append(rule)
            elif f.table_oid != 0 and f.attnum > 0 and f.table_oid in self.clean:
                plan.append(None)  # a column of a known relation that is not masked, as the server reports it
            elif f.table_oid == 0 and outputs is not None and not outputs[i]:
                plan.append(None)  # computed from clean columns only (lineage)
            else:
                plan.append(COMPUTED)  # a whole row, a view over masked data, an unknown relation, or derived
        return plan

    def _scrub(self, payload: bytes) -> bytes:
        """Errors and notices can echo values (``invalid input syntax for type integer: "123-45-6789"``, ``Key
        (ssn)=(...) already exists``): while a statement that reads masked data runs, every field that can carry a
        value is withheld (the SQLSTATE stays); otherwise detail and context that name a masked column are."""
        fields = parse_error(payload)
        if self._current()[1]:
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

    async def _client_to_server(self, reader: asyncio.StreamReader, conn: up.Upstream,
                                writer: asyncio.StreamWriter, expect: deque[bytes | None]) -> None:
        discard_error: bytes | None = None  # after a refused Parse: drop messages until Sync
        while True:
            kind, payload = await read_message(reader)
            out = conn.writer
            if discard_error is not None:
                if kind == b"S":
                    expect.append(discard_error)
                    self.groups.append(None)
                    out.write(message(b"S"))
                    discard_error = None
                elif kind == b"X":
                    out.write(message(b"X"))
                    return
                continue
            if kind == b"Q":
                group: list[Analysis] = []
                refusal = await self._decide(query_text(payload), group)
                expect.append(refusal)
                self.groups.append(group if refusal is None else [])
                out.write(EMPTY_QUERY if refusal is not None else message(kind, payload))
            elif kind == b"P":
                _, sql = parse_parse(payload)
                refusal = await self._decide(sql)
                if refusal is None:
                    out.write(message(kind, payload))
                else:
                    discard_error = refusal
            elif kind == b"S":
                expect.append(None)
                self.groups.append(None)
                out.write(message(kind, payload))
            elif kind == b"F":
                expect.append(error_response("bastion: the fast-path function call interface is refused"))
                self.groups.append([])
                out.write(EMPTY_QUERY)
            elif kind == b"X":
                out.write(message(kind, payload))
                return
            elif kind[0] in FORWARD:
                out.write(message(kind, payload))
            else:
                raise ProtocolError(f"unexpected message type {kind!r} from the client")
            await out.drain()

    async def _server_to_client(self, conn: up.Upstream, writer: asyncio.StreamWriter,
                                expect: deque[bytes | None]) -> None:
        while True:
            kind, payload = await read_message(conn.reader)
            group = self.groups[0] if self.groups else None
            if kind == b"I" and expect and expect[0] is not None:
                writer.write(expect[0])  # the empty query stood in for a refused one: its error goes here
                expect[0] = b""
            elif kind == b"Z":
                pending = expect.popleft() if expect else None
                if self.groups:
                    self.groups.popleft()
                if pending:  # a refused Parse: the error comes before the ReadyForQuery of its Sync
                    writer.write(pending)
                conn.status = payload[:1]
                if not expect:
                    self.ext_reads = False
                writer.write(message(kind, payload))
            elif kind == b"T":
                self.plan = self._field_plan(parse_row_description(payload)) if self.masking or self.masks else []
                writer.write(message(kind, payload))
            elif kind == b"D" and any(self.plan):
                writer.write(message(kind, mask_data_row(payload, self.plan)))
            elif kind in (b"E", b"N") and self.masking:
                writer.write(message(kind, self._scrub(payload)))
                if kind == b"E" and group:
                    group.clear()  # the rest of this Query is skipped by the server
            elif kind in (b"C", b"I"):
                if group:
                    group.pop(0)
                self.plan = []
                writer.write(message(kind, payload))
            elif kind == b"K":
                continue  # never let the real backend key through
            else:
                writer.write(message(kind, payload))
            await writer.drain()
