"""The proxy's own statements on the client's server session, which the client never sees.

To measure a row limit the proxy must open a transaction or savepoint, read the row counters, and commit or roll
back, on the very connection the client uses. It does so only when no request of the client is in flight
(``_private``: the server->client pump hands it everything up to the ReadyForQuery), or, inside a client's
pipelined batch, as extra named messages after the client's (``_inject``: the pump diverts the answers to them).
Parameter changes and notifications that arrive meanwhile are the client's, and are delivered later (``_late``).
"""

from __future__ import annotations

import asyncio
from collections import deque

from bastion.proxies.pg import upstream as up
from bastion.proxies.pg.extended import Divert
from bastion.proxies.pg.judge import Judging
from bastion.proxies.pg.protocol import ProtocolError, cstr, data_row_values, message, parse_error
from bastion.proxies.pg.rowlimit import COUNT_SQL, PRIVATE, SAVEPOINT, ResultBuffer, Rows, counters
from policies.engine import Decision


class PrivateQueries(Judging):
    """The row limit's access to the server: private queries, and opening and unwinding its transaction."""

    async def _idle(self, expect: deque[bytes | None]) -> None:
        """Wait until every request the client sent earlier has had its ReadyForQuery."""
        while expect:
            self._drained.clear()
            await self._drained.wait()

    async def _private(self, conn: up.Upstream, *msgs: bytes) -> tuple[Rows, list[bytes], bytes]:
        """Send ``msgs`` upstream and read their answer up to ReadyForQuery, none of it for the client: (data rows,
        ErrorResponse payloads, status). Only called while no client request is in flight."""
        queue: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        self._collector = queue
        try:
            conn.writer.write(b"".join(msgs))
            await conn.writer.drain()
            rows: Rows = []
            errors: list[bytes] = []
            while True:
                kind, payload = await queue.get()
                if kind == b"D":
                    rows.append(data_row_values(payload))
                elif kind == b"E":
                    errors.append(payload)
                elif kind in (b"S", b"A"):  # a parameter the server reports, a notification: the client's
                    self._late.append(message(kind, payload))
                elif kind == b"Z":
                    conn.status = payload[:1]
                    return rows, errors, payload[:1]
        finally:
            self._collector = None

    async def _inject(self, conn: up.Upstream, sqls: list[str]) -> tuple[Rows, list[bytes], bool]:
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
        self._divert = Divert(self.batch.sent - self.batch.answered, len(msgs), queue)
        conn.writer.write(b"".join(msgs) + message(b"H"))
        await conn.writer.drain()
        rows: Rows = []
        errors: list[bytes] = []
        while True:
            kind, payload = await queue.get()
            if kind == b"!":
                return rows, errors, True
            if kind == b".":
                return rows, errors, False
            if kind == b"D":
                rows.append(data_row_values(payload))
            elif kind == b"E":
                errors.append(payload)
            elif kind in (b"S", b"A"):
                self._late.append(message(kind, payload))

    async def _counts(self, conn: up.Upstream, head: str = "") -> tuple[dict[int, int] | None, str | None]:
        """The rows touched so far in this transaction, per table; or why they cannot be known. ``head`` runs first,
        in the same round trip."""
        rows, errors, _ = await self._private(conn, message(b"Q", (head + COUNT_SQL).encode() + b"\x00"))
        if errors:
            return None, parse_error(errors[0]).get("M", "error")
        if not rows or rows[0] != [b"on"]:
            return None, "the server does not count rows (track_counts is off)"
        return counters(rows[1:]), None

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

    def _new_buffer(self) -> ResultBuffer:
        return ResultBuffer(self.measure_buffer, asyncio.get_running_loop().create_future())
