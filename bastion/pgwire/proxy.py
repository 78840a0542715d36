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

from bastion.pgwire import upstream as up
from bastion.pgwire.masking import MaskRule, mask_data_row, parse_row_description, sql_touches
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

log = logging.getLogger(__name__)

EMPTY_QUERY = message(b"Q", b"\x00")
COMPUTED = MaskRule("(computed)", "(computed)", "full")


async def resolve_masks(conn: up.Upstream, rules: list[MaskRule]) -> dict[tuple[int, int], MaskRule]:
    """(table OID, column number) of every masked column, from the catalog, on the upstream connection."""
    def lit(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    parts = [f"SELECT a.attrelid::oid::int, a.attnum::int, {i} FROM pg_attribute a "  # noqa: S608 - quoted by lit()
             f"WHERE a.attrelid = to_regclass({lit(r.table)}) AND a.attname = {lit(r.column)} AND NOT a.attisdropped"
             for i, r in enumerate(rules)]
    conn.writer.write(message(b"Q", (" UNION ALL ".join(parts)).encode() + b"\x00"))
    await conn.writer.drain()
    found: dict[tuple[int, int], MaskRule] = {}
    while True:
        kind, payload = await read_message(conn.reader)
        if kind == b"D":
            n = struct.unpack("!h", payload[:2])[0]
            vals, pos = [], 2
            for _ in range(n):
                (ln,) = struct.unpack("!i", payload[pos:pos + 4])
                vals.append(payload[pos + 4:pos + 4 + ln].decode())
                pos += 4 + max(ln, 0)
            found[(int(vals[0]), int(vals[1]))] = rules[int(vals[2])]
        elif kind == b"E":
            raise up.UpstreamError(f"cannot resolve masked columns: {parse_error(payload).get('M')}")
        elif kind == b"Z":
            missing = [f"{r.table}.{r.column}" for r in rules if r not in found.values()]
            if missing:
                log.warning("masking rules match no column: %s", ", ".join(missing))
            return found
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
        self.taint = False  # a statement in flight mentions masked data: computed columns get masked
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

    async def _decide(self, sql: str) -> bytes | None:
        """None to forward ``sql``; otherwise the ErrorResponse the client gets instead."""
        touches, copy_out = sql_touches(sql, self.masking)
        if copy_out:
            return error_response("bastion: COPY out of a table with masked columns is refused",
                                  hint="select the columns you need; masked ones come back masked")
        d = self.judge(sql)
        self.note(d)
        if d.action in (Action.ALLOW, Action.WARN):
            self.taint = self.taint or touches
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
            self.taint = self.taint or touches
            return None
        return error_response(f"bastion: request {result.get('status')}: {result.get('status_reason', '')}")

    def _scrub(self, payload: bytes) -> bytes:
        """Errors and notices can echo values (``Key (ssn)=(...) already exists``): withhold their detail and
        where-clause context when they name a masked column."""
        fields = parse_error(payload)
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
                    out.write(message(b"S"))
                    discard_error = None
                elif kind == b"X":
                    out.write(message(b"X"))
                    return
                continue
            if kind == b"Q":
                refusal = await self._decide(query_text(payload))
                expect.append(refusal)
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
                out.write(message(kind, payload))
            elif kind == b"F":
                expect.append(error_response("bastion: the fast-path function call interface is refused"))
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
            if kind == b"I" and expect and expect[0] is not None:
                writer.write(expect[0])  # the empty query stood in for a refused one: its error goes here
                expect[0] = b""
            elif kind == b"Z":
                pending = expect.popleft() if expect else None
                if pending:  # a refused Parse: the error comes before the ReadyForQuery of its Sync
                    writer.write(pending)
                conn.status = payload[:1]
                if not expect:
                    self.taint = False
                writer.write(message(kind, payload))
            elif kind == b"T" and (self.masks or self.taint):
                fields = parse_row_description(payload)
                self.plan = [self.masks.get((f.table_oid, f.attnum))
                             or (COMPUTED if f.table_oid == 0 and self.taint else None) for f in fields]
                writer.write(message(kind, payload))
            elif kind == b"D" and any(self.plan):
                writer.write(message(kind, mask_data_row(payload, self.plan)))
            elif kind in (b"E", b"N") and self.masking:
                writer.write(message(kind, self._scrub(payload)))
            elif kind == b"K":
                continue  # never let the real backend key through
            elif kind == b"T":
                self.plan = []
                writer.write(message(kind, payload))
            else:
                writer.write(message(kind, payload))
            await writer.drain()
