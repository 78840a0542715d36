"""Starting a measured request: a Query, or an extended-protocol batch, whose decision carries a row limit.

The proxy privately opens a transaction (or a savepoint inside the client's), reads the rows touched so far in
the transaction, and forwards the client's request; from then on the server->client pump holds every message of
it back until its ReadyForQuery (``settle`` takes it from there). The private queries are sent only when no
request of the client is in flight, or inside the client's own batch when the limited statement is pipelined
after others. Whatever cannot be measured this way (transaction control, COPY FROM STDIN, a Query after unsynced
messages) is refused rather than run unmeasured.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import replace

from bastion.proxies.pg import upstream as up
from bastion.proxies.pg.extended import Statement
from bastion.proxies.pg.protocol import parse_error
from bastion.proxies.pg.rowlimit import ROWS_SQL, SAVEPOINT, TRACK_SQL, Measured, Shape, counters, judge_rows
from bastion.proxies.pg.settle import Settling
from policies.engine import Decision
from policies.sqlmask import Analysis


class Measuring(Settling):
    """The start of a measured request."""

    async def _measure_query(self, raw: bytes, sql: str, group: list[Analysis], d: Decision, reads: bool,
                             shape: Shape, conn: up.Upstream, writer: asyncio.StreamWriter,
                             expect: deque[bytes | None]) -> tuple[bool, bytes | None]:
        """Run a Query under its row limit. (handled, refusal): not handled and no refusal = forward it as is."""
        assert d.over_limit is not None and d.max_rows is not None
        over = replace(d.over_limit, max_rows=d.max_rows)
        if shape.why is not None:
            return False, self._refusal(over, f"this Query has a row limit and {shape.why}; send those statements "
                                              "separately", sql)
        if self.batch.unsynced:
            return False, self._refusal(over, "a Query with a row limit cannot follow unsynced extended-protocol "
                                              "messages", sql)
        await self._idle(expect)
        if conn.status == b"E":
            return False, None  # the client's transaction is aborted: the server refuses the statement itself
        opened = await self._open(conn, over)
        if isinstance(opened, bytes):
            return False, opened
        status, before = opened
        m = Measured(d.max_rows, over, status, before, self._new_buffer(), [raw], list(group), reads,
                     set(shape.names))
        self._buffer = m.buffer
        expect.append(None)
        self.groups.append(group)
        conn.writer.write(raw)
        await conn.writer.drain()
        await self._settle(m, conn, writer, expect)
        return True, None

    async def _admit(self, info: Statement, text: str, conn: up.Upstream,
                     expect: deque[bytes | None]) -> bytes | None:
        """An extended-protocol Parse or Bind of ``info``: inside a measured batch, whether it may join it; with a
        row limit outside one, start one (at a Sync boundary, or mid-batch: ``_admit_mid``). None to forward it,
        else the refusal."""
        if self.batch.aborted:
            return None  # the server refuses the batch's first statement and skips the rest until Sync
        if self._measuring is not None:
            return await self._join(self._measuring, info, text, conn)
        assert info.limit is not None and info.over is not None
        over = replace(info.over, max_rows=info.limit)
        if info.unmeasurable is not None:
            return self._refusal(over, f"this statement has a row limit and {info.unmeasurable}", text)
        if self.batch.unsynced:
            return await self._admit_mid(info, over, text, conn, expect)
        await self._idle(expect)
        if conn.status == b"E":  # the client's transaction is aborted: the server refuses the statement itself
            self.batch.aborted = True
            return None
        opened = await self._open(conn, over)
        if isinstance(opened, bytes):
            return opened
        status, before = opened
        self._measuring = Measured(info.limit, over, status, before, self._new_buffer(), reads=info.reads)
        self._buffer = self._measuring.buffer
        return None

    async def _join(self, m: Measured, info: Statement, text: str, conn: up.Upstream) -> bytes | None:
        """A statement joins the measured batch ``m``. Another limited one ends the measure of the one before: what
        ran since is that one's (judged now), and this one is measured on its own from here."""
        if info.unmeasurable is not None:
            return self._refusal(m.over, f"this batch has a row limit and {info.unmeasurable}", text)
        m.reads = m.reads or info.reads
        if info.limit is None or info.over is None or self.batch.failed:
            return None  # (after an error the server skips the rest of the batch)
        rows, errors, skipped = await self._inject(conn, [ROWS_SQL])
        if skipped:
            return None
        if errors:  # the server now skips the rest of the batch; it is rolled back at its Sync
            return self._refusal(m.over, "the rows it touches cannot be measured: "
                                         f"{parse_error(errors[0]).get('M', 'error')}", text)
        now = counters(rows)
        judge_rows(m, now)
        m.before, m.tags_at = now, len(m.buffer.tags)
        m.limit, m.over = info.limit, replace(info.over, max_rows=info.limit)
        return None

    async def _admit_mid(self, info: Statement, over: Decision, text: str, conn: up.Upstream,
                         expect: deque[bytes | None]) -> bytes | None:
        """A limited statement after other unsynced messages of its batch (a pipeline): measured from here to the
        Sync, with the proxy's own statements run in the batch just before it. The batch's transaction state at
        this point must be known: after transaction control other than BEGIN, COPY FROM STDIN or a Query in the
        same batch it is not, and the statement is refused."""
        assert info.limit is not None
        if self.batch.unknown:
            return self._refusal(over, "a statement with a row limit cannot follow transaction control, COPY FROM "
                                       "STDIN or a Query in the same batch: send Sync before it", text)
        await self._idle(expect)  # earlier batches answered: the answers still to come are this batch's
        if self.batch.failed or conn.status == b"E":
            self.batch.aborted = True  # the server skips the rest of this batch: nothing to measure
            return None
        status = b"T" if self.batch.began else conn.status  # the transaction state at this point of the batch
        sqls = (["BEGIN"] if status == b"I" else []) + [f"SAVEPOINT {SAVEPOINT}", TRACK_SQL, ROWS_SQL]
        rows, errors, skipped = await self._inject(conn, sqls)
        if skipped:
            self.batch.aborted = True  # the batch failed before our statements: the server skips all of the rest
            return None
        m = Measured(info.limit, over, status, {}, self._new_buffer(), reads=info.reads, mid=True)
        self._measuring = m
        self._buffer = m.buffer
        if errors or not rows or rows[0] != [b"on"]:
            why = parse_error(errors[0]).get("M", "error") if errors else \
                "the server does not count rows (track_counts is off)"
            # the batch is failing now (our error) or must not go on: nothing more of it runs
            m.refused = self._refusal(over, f"the rows it touches cannot be measured: {why}", text)
            return m.refused
        m.before = counters(rows[1:])
        return None
