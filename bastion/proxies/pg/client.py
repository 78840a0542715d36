"""The client->server pump: every message of psql is judged, recorded, and forwarded or refused.

A refused Query is replaced by an empty one, so that the server's EmptyQueryResponse marks where the client gets
its error, in protocol order. A refused extended-protocol message makes the proxy drop the client's messages up to
its Sync (as the server itself would after an error), and the Sync's ReadyForQuery carries the error.
"""

from __future__ import annotations

import asyncio
from collections import deque

from bastion.proxies.pg import upstream as up
from bastion.proxies.pg.extended import BEGINS, FORWARD, Statement
from bastion.proxies.pg.measure import Measuring
from bastion.proxies.pg.protocol import ProtocolError, error_response, message, parse_parse, query_text, read_message
from bastion.proxies.pg.rowlimit import PRIVATE, shape_of
from policies.sqlmask import Analysis

EMPTY_QUERY = message(b"Q", b"\x00")


class ClientPump(Measuring):
    """What the client sends."""

    async def _client_to_server(self, reader: asyncio.StreamReader, conn: up.Upstream,
                                writer: asyncio.StreamWriter, expect: deque[bytes | None]) -> None:
        """Pump the client's messages until it terminates. ``expect`` gets, per forwarded Query/Sync/FunctionCall,
        the error to deliver in place of its answer (None: the server's answer as it is)."""
        while True:
            kind, payload = await read_message(reader)
            raw = message(kind, payload)
            if kind == b"X":
                conn.writer.write(raw)
                return
            if self._discard is not None:
                if kind == b"S":
                    await self._on_sync(raw, conn, writer, expect, self._discard)
                    self._discard = None
                continue
            if kind in (b"Q", b"F") and self._measuring is not None:
                raise ProtocolError("a Query or FunctionCall inside an extended-protocol batch under a row limit")
            if kind == b"Q":
                drain = await self._on_query(payload, raw, conn, writer, expect)
            elif kind == b"P":
                drain = await self._on_parse(payload, raw, conn, expect)
            elif kind == b"B":
                drain = await self._on_bind(payload, raw, conn, expect)
            elif kind == b"E":
                drain = self._on_execute(payload, raw)
            elif kind == b"S":
                drain = await self._on_sync(raw, conn, writer, expect)
            elif kind == b"H" and self._measuring is not None:
                drain = await self._on_measured_flush(writer)
            elif kind == b"F":
                expect.append(error_response("bastion: the fast-path function call interface is refused"))
                self.groups.append([])
                conn.writer.write(EMPTY_QUERY)
                drain = True
            elif kind[0] in FORWARD:
                self._forward(raw, unsynced=kind in (b"D", b"C"))
                drain = True
            else:
                raise ProtocolError(f"unexpected message type {kind!r} from the client")
            if drain:
                await conn.writer.drain()

    def _refuse(self, error: bytes) -> None:
        """Refuse an extended-protocol message: drop the rest of the batch; its Sync gets ``error``."""
        self._discard = error
        m = self._measuring
        if m is not None and m.refused is None:
            m.refused = error  # the batch is rolled back at its Sync

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
            self.batch.unsynced = True
            self.batch.sent += 1
        self.upstream.writer.write(raw)

    async def _on_query(self, payload: bytes, raw: bytes, conn: up.Upstream, writer: asyncio.StreamWriter,
                        expect: deque[bytes | None]) -> bool:
        """A simple-protocol Query. Returns whether something was sent upstream that is still to be drained."""
        sql = query_text(payload)
        group: list[Analysis] = []
        if self.batch.unsynced:  # a Query inside an extended-protocol batch ends its implicit transaction
            self.batch.unknown = True
        refusal, d, reads = await self._decide(sql, group)
        if refusal is None:
            shape = shape_of(sql)
            for name in shape.names:  # SQL PREPARE: a later Bind of it is limited like the statement
                self.prepared[name] = Statement(d.max_rows, d.over_limit, shape.why, reads)
            if d.max_rows is not None and d.over_limit is not None:
                handled, refusal = await self._measure_query(raw, sql, group, d, reads, shape, conn, writer, expect)
                if handled:
                    return False
        expect.append(refusal)
        self.groups.append(group if refusal is None else [])
        conn.writer.write(EMPTY_QUERY if refusal is not None else raw)
        return True

    async def _on_parse(self, payload: bytes, raw: bytes, conn: up.Upstream, expect: deque[bytes | None]) -> bool:
        """A Parse: judged on its text, remembered for the Binds of it."""
        name, sql = parse_parse(payload)
        if name == PRIVATE:
            self._refuse(self._refusal(None, f"the prepared statement name {PRIVATE!r} is the bastion's", name))
            return False
        refusal, d, reads = await self._decide(sql)
        shape = shape_of(sql)
        info = Statement(d.max_rows, d.over_limit, shape.why, reads, shape.txn, shape.copy_in)
        if refusal is None and (info.limit is not None or self._measuring is not None):
            refusal = await self._admit(info, sql, conn, expect)
        if refusal is not None:
            self._refuse(refusal)
            return False
        self.prepared[name] = info
        lineage, _ = self._lineage(sql)
        self.prepared_outputs[name] = lineage[0].outputs if len(lineage) == 1 else None
        self._forward(raw, name=name)
        return True

    async def _on_bind(self, payload: bytes, raw: bytes, conn: up.Upstream, expect: deque[bytes | None]) -> bool:
        """A Bind: only of a statement prepared through the bastion, whose judgement (limit, masking) it inherits."""
        portal, _, rest = payload.partition(b"\x00")
        stmt_name = rest.split(b"\x00", 1)[0].decode("utf-8", "replace")
        info = self.prepared.get(stmt_name)
        if info is None:
            self._refuse(self._refusal(None, f"prepared statement {stmt_name!r} was not prepared through the "
                                             "bastion (its text was never judged)", stmt_name))
            return False
        if info.limit is not None or self._measuring is not None:
            refusal = await self._admit(info, f"(bind of prepared statement {stmt_name!r})", conn, expect)
            if refusal is not None:
                self._refuse(refusal)
                return False
        if info.reads:  # each execution of a statement that reads masked data is treated so
            self.ext_reads = self.batch.reads = True
        self._inflight_bound.append(self.prepared_outputs.get(stmt_name))
        name = portal.decode("utf-8", "replace")
        if name == PRIVATE:
            self._refuse(self._refusal(None, f"the portal name {PRIVATE!r} is the bastion's", name))
            return False
        self.portals[name] = (info, self._measuring)
        self._forward(raw, portal=name)
        return True

    def _on_execute(self, payload: bytes, raw: bytes) -> bool:
        """An Execute: a portal under a row limit runs only in the measured batch that bound it."""
        name = payload.split(b"\x00", 1)[0].decode("utf-8", "replace")
        bound = self.portals.get(name)
        if bound is not None and bound[0].limit is not None and not self.batch.aborted and \
                (bound[1] is None or bound[1] is not self._measuring):
            self._refuse(self._refusal(bound[0].over, "a portal of a statement with a row limit runs only in the "
                                                      "batch (up to Sync) that bound it", name, bound[0].limit))
            return False
        if bound is not None and (bound[0].txn is not None or bound[0].copy_in):
            if bound[0].txn in BEGINS and not bound[0].copy_in:
                self.batch.began = True
            else:
                self.batch.unknown = True
        self._forward(raw)
        return True

    async def _on_sync(self, raw: bytes, conn: up.Upstream, writer: asyncio.StreamWriter,
                       expect: deque[bytes | None], error: bytes | None = None) -> bool:
        """A Sync ends the batch: a measured one is settled now; otherwise its ReadyForQuery brings ``error``."""
        if self._measuring is not None:
            await self._end_batch(conn, writer, expect)
            return False
        expect.append(error)
        self.groups.append(None)
        self.batch.synced()
        conn.writer.write(raw)
        return True

    async def _on_measured_flush(self, writer: asyncio.StreamWriter) -> bool:
        """The batch's results are held back until its Sync: a client that waits for them after a Flush would wait
        forever, so it gets its error now (and the batch is rolled back at Sync)."""
        m = self._measuring
        assert m is not None
        error = self._refusal(m.over, "a Flush inside a batch with a row limit: its results are known only at Sync",
                              "Flush")
        self._refuse(error)
        m.told = True
        writer.write(error)
        await writer.drain()
        return False
