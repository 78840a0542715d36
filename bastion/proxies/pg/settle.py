"""Settling a measured request once its ReadyForQuery is in: deliver it, or roll it back and apply the limit.

Nothing of a measured request reached the client yet. If it touched no more rows than its limit, the proxy
commits (or releases its savepoint) and delivers what it held back; otherwise it rolls back and the client gets
the rule's action: an error, or a hold for a reviewer after which the same request runs again without the limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import replace

from bastion.proxies.pg import upstream as up
from bastion.proxies.pg.private import PrivateQueries
from bastion.proxies.pg.protocol import error_response, message, ready_for_query
from bastion.proxies.pg.rowlimit import SAVEPOINT, Measured, judge_rows
from policies.engine import Action

log = logging.getLogger(__name__)


class Settling(PrivateQueries):
    """The end of a measured request."""

    async def _end_batch(self, conn: up.Upstream, writer: asyncio.StreamWriter, expect: deque[bytes | None]) -> None:
        """The client's Sync closes a measured batch: forward it, then settle the batch."""
        m = self._measuring
        assert m is not None
        self._measuring = None
        self.batch.synced()
        sync = message(b"S")
        m.sent.append(sync)
        expect.append(None if m.told else m.refused)
        self.groups.append(None)
        conn.writer.write(sync)
        await conn.writer.drain()
        await self._settle(m, conn, writer, expect)

    async def _deliver(self, writer: asyncio.StreamWriter, parts: list[bytes], status: bytes) -> None:
        """Give the client what it is owed, then what arrived for it during private queries, then its
        ReadyForQuery."""
        writer.write(b"".join(parts) + b"".join(self._late) + ready_for_query(status))
        self._late.clear()
        await writer.drain()

    async def _settle(self, m: Measured, conn: up.Upstream, writer: asyncio.StreamWriter,
                      expect: deque[bytes | None]) -> None:
        try:
            await self._conclude(m, conn, writer, expect)
        finally:  # portals keep a reference to their batch: not to what it held back
            m.buffer.parts.clear()
            m.sent.clear()

    async def _conclude(self, m: Measured, conn: up.Upstream, writer: asyncio.StreamWriter,
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
        judge_rows(m, after)
        if m.worst is not None:
            await self._over_limit(m, conn, writer, expect)
        elif buf.overflow:
            true = await self._unwind(conn, m.status, failed=False)
            await self._deliver(writer, [self._too_large(m)], true)
        else:
            await self._commit(m, conn, writer)

    async def _commit(self, m: Measured, conn: up.Upstream, writer: asyncio.StreamWriter) -> None:
        """Within its limit: commit our transaction (or release our savepoint) and deliver what was held back."""
        end = "COMMIT" if m.status == b"I" else f"RELEASE SAVEPOINT {SAVEPOINT}"
        _, errors, got = await self._private(conn, message(b"Q", end.encode() + b"\x00"))
        if not errors:
            await self._deliver(writer, m.buffer.parts, got)
            return
        # a deferred constraint at COMMIT: the client gets the server's error after its results
        error = self._server_error(errors[0], m.reads)
        if got != m.status and m.status != b"I":
            got = await self._unwind(conn, m.status, failed=True)
        parts = list(m.buffer.parts)
        if m.group is not None:  # a Query: PostgreSQL commits before its last CommandComplete, which the error then
            last = max((i for i, part in enumerate(parts) if part[:1] == b"C"), default=None)
            if last is not None:  # replaces
                del parts[last]
        await self._deliver(writer, [*parts, error], got)

    async def _over_limit(self, m: Measured, conn: up.Upstream, writer: asyncio.StreamWriter,
                          expect: deque[bytes | None]) -> None:
        """Over its limit: roll back, then refuse, or hold for a reviewer and run the request again if approved."""
        assert m.worst is not None
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

    def _server_error(self, payload: bytes, reads: bool) -> bytes:
        """An ErrorResponse of the server's for the client, scrubbed when masking is on."""
        return message(b"E", self._scrub(payload, reads) if self.masking else payload)

    def _too_large(self, m: Measured) -> bytes:
        return self._refusal(m.over, f"its results exceed {self.measure_buffer >> 20} MiB, more than the bastion "
                                     "holds back while it measures the rows touched; rolled back", m.over.text)

    async def _close_made(self, m: Measured, conn: up.Upstream) -> None:
        """Prepared statements and portals outlive a rollback: close the ones the request made."""
        closes = [message(b"C", b"S" + n.encode() + b"\x00") for n in sorted(m.names)] + \
                 [message(b"C", b"P" + p.encode() + b"\x00") for p in sorted(m.portals) if p]
        if closes:
            await self._private(conn, *closes, message(b"S"))

    async def _again_in_block(self, m: Measured, conn: up.Upstream, writer: asyncio.StreamWriter,
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
        error = [self._server_error(errors[0], m.reads)] if errors else []
        await self._deliver(writer, [*buf.parts, *error], got)

    async def _again(self, m: Measured, conn: up.Upstream, writer: asyncio.StreamWriter,
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
