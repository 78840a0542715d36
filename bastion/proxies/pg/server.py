"""The server->client pump: every message of the server is routed, masked or scrubbed before the client sees it.

A message may be an answer to the proxy's own private statements (never the client's), part of a measured request
(held back), or the client's: then DataRows are masked by the current field plan, errors and notices are
scrubbed, the real BackendKeyData is dropped, and a refused statement's error takes its place in protocol order.
"""

from __future__ import annotations

import asyncio
from collections import deque

from bastion.proxies.pg import upstream as up
from bastion.proxies.pg.fieldplan import FieldPlans
from bastion.proxies.pg.masking import mask_data_row, parse_row_description
from bastion.proxies.pg.protocol import ProtocolError, message, read_message
from bastion.proxies.pg.rowlimit import ResultBuffer


class ServerPump(FieldPlans):
    """What the server sends."""

    async def _server_to_client(self, conn: up.Upstream, writer: asyncio.StreamWriter,
                                expect: deque[bytes | None]) -> None:
        """Pump the server's messages to the client (or to whichever part of the proxy awaits them)."""
        while True:
            kind, payload = await read_message(conn.reader)
            if self._private_answer(kind, payload):
                continue
            self.batch.answer(kind)
            buf = self._buffer
            out: ResultBuffer | asyncio.StreamWriter = buf if buf is not None else writer
            group = self.groups[0] if self.groups else None
            if buf is not None and kind in (b"G", b"W"):  # refused before it is sent; never while held back
                raise ProtocolError("the server asked for COPY data during a request under a row limit")
            if kind == b"I" and expect and expect[0] is not None:
                out.write(expect[0])  # the empty query stood in for a refused one: its error goes here
                expect[0] = b""
            elif kind == b"Z":
                self._ready(payload, conn, out, expect)
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

    def _private_answer(self, kind: bytes, payload: bytes) -> bool:
        """Whether the message answers the proxy's own statements (and went to them), not the client's."""
        if self._collector is not None:  # the proxy's own query: none of it is the client's
            self._collector.put_nowait((kind, payload))
            return True
        dv = self._divert
        if dv is None:
            return False
        ours, over = dv.route(kind, payload)
        if over:
            self._divert = None
        return ours

    def _ready(self, payload: bytes, conn: up.Upstream, out: ResultBuffer | asyncio.StreamWriter,
               expect: deque[bytes | None]) -> None:
        """A ReadyForQuery ends one forwarded Query/Sync/FunctionCall: a refused Parse's error comes before it, and
        once the client has all its answers, nothing of its batches is in flight any more."""
        pending = expect.popleft() if expect else None
        if self.groups:
            self.groups.popleft()
        if pending:
            out.write(pending)
        conn.status = payload[:1]
        if not expect:
            if not self.batch.reads:
                self.ext_reads = False
            self._inflight_bound.clear()
            self._drained.set()
