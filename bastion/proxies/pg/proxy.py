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

The parts live in their own modules (see ``state`` for how they stack): ``client`` and ``server`` pump the
messages, ``judge`` applies the policy, ``fieldplan`` and ``errors`` mask, ``measure``, ``private``, ``settle``
and ``rowlimit`` enforce row limits, ``extended`` keeps the extended protocol's bookkeeping. This module has the
listener, the startup of a client connection, and the two pumps' lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections import deque
from pathlib import Path

from bastion.proxies.pg import upstream as up
from bastion.proxies.pg.catalog import load_catalog, resolve_masks
from bastion.proxies.pg.client import ClientPump
from bastion.proxies.pg.protocol import (
    CANCEL_REQUEST,
    GSSENC_REQUEST,
    PROTOCOL_3,
    SSL_REQUEST,
    ProtocolError,
    auth_ok,
    backend_key,
    error_response,
    message,
    read_startup,
    ready_for_query,
)
from bastion.proxies.pg.server import ServerPump

log = logging.getLogger(__name__)

__all__ = ["PgProxy"]


class PgProxy(ClientPump, ServerPump):
    """Serve one operator's psql (and its cancel requests) on ``socket_dir``. One database connection at a time:
    the session's psql; the constructor (``ProxyState``) takes the target, its password and the session's
    judge/hold/note/withdraw callbacks."""

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / ".s.PGSQL.5432"

    async def start(self) -> Path:
        """Listen on the session's socket, which only the session's user may reach."""
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
            await self._cancel(body)
            return
        if code != PROTOCOL_3:
            writer.write(error_response("bastion: unsupported protocol version", code="0A000", severity="FATAL"))
            return
        if self.connected:
            writer.write(error_response("bastion: one database connection per brokered session", code="53300",
                                        severity="FATAL"))
            return
        self.connected = True  # before the first await: a second connection racing this one is refused
        conn = await self._connect(writer)
        if conn is None:
            self.connected = False
            return
        writer.write(auth_ok())
        for k, v in conn.params.items():
            writer.write(message(b"S", k.encode() + b"\x00" + v.encode() + b"\x00"))
        writer.write(backend_key(self.fake_pid, self.fake_key))
        writer.write(ready_for_query(conn.status))
        await writer.drain()
        await self._pump(reader, conn, writer)

    async def _cancel(self, body: bytes) -> None:
        """A CancelRequest with the session's key: withdraw a held statement, or cancel the server's work."""
        pid, key = struct.unpack("!ii", body[:8])
        if (pid, key) == (self.fake_pid, self.fake_key):
            if self.holding:
                self.withdraw()
            elif self.upstream is not None:
                await up.cancel(self.target, self.upstream.pid, self.upstream.key)

    async def _connect(self, writer: asyncio.StreamWriter) -> up.Upstream | None:
        """Connect to the server and, with masking, learn what to mask (no masks, no data); None after telling the
        client why not."""
        try:
            conn = await up.connect(self.target, self._password, application_name=self.application_name)
        except up.UpstreamError as e:
            writer.write(error_response(f"bastion: {e}", code="08001", severity="FATAL"))
            return None
        self.upstream = conn
        if self.masking:
            try:
                self.masks = await resolve_masks(conn, self.masking)
                self.catalog, self.clean = await load_catalog(conn, self.masks, frozenset(
                    f"{r.table.rsplit('.', 1)[-1]}.{r.column}" for r in self.masking if r.predicates == "allow"))
            except (up.UpstreamError, asyncio.IncompleteReadError, ValueError) as e:  # no masks, no data
                writer.write(error_response(f"bastion: {e}", code="08001", severity="FATAL"))
                conn.writer.close()
                return None
        return conn

    async def _pump(self, reader: asyncio.StreamReader, conn: up.Upstream, writer: asyncio.StreamWriter) -> None:
        """Run both pumps until either side ends; an error of either is the connection's."""
        expect: deque[bytes | None] = deque()  # per forwarded Query/Sync: an error to deliver in its place
        self._reset()
        self.client = writer
        to_server = asyncio.ensure_future(self._client_to_server(reader, conn, writer, expect))
        to_client = asyncio.ensure_future(self._server_to_client(conn, writer, expect))
        try:
            await asyncio.wait([to_server, to_client], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (to_server, to_client):
                t.cancel()
            conn.writer.close()
            self.connected = False
            self.client = None
            for t in (to_server, to_client):
                if t.done() and not t.cancelled():
                    error = t.exception()
                    if error is not None:
                        raise error
