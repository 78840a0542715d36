"""Bookkeeping of the extended query protocol (Parse, Bind, Execute ... Sync), kept apart from the message pumps.

A client may pipeline any number of extended-protocol messages before its Sync, and the server answers each one
later. The row limit has to know, at any point of such a batch, how many answers are still to come, whether the
batch already failed and in which transaction state it is; masking has to know what each prepared statement and
portal reads. This module holds those facts; the pumps (``client``, ``server``) keep them current.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from policies.engine import Decision

# messages the client may send that the proxy forwards as they are: Bind Execute Describe Close Flush CopyData
# CopyDone CopyFail (Bind and Execute are judged first)
FORWARD = set(b"BEDCHdcf")
# what the server sends exactly once per extended-protocol message it answers (Parse, Bind, Close, Describe, Execute)
COMPLETES = frozenset({b"1", b"2", b"3", b"n", b"T", b"C", b"I", b"s"})
BEGINS = (0, 1)  # TransactionStmt kinds BEGIN and START TRANSACTION


@dataclass
class Statement:
    """What the proxy knows of a prepared statement (a Parse, or SQL PREPARE), for each Bind of it: its text is
    judged once, at Parse, so everything a Bind needs must be remembered here."""

    limit: int | None = None
    over: Decision | None = None
    unmeasurable: str | None = None  # why it cannot run under a row limit (transaction control, COPY FROM STDIN)
    reads: bool = False              # reads masked data
    txn: int | None = None           # a transaction control statement: its kind (BEGINS ...)
    copy_in: bool = False            # COPY FROM STDIN


@dataclass
class Batch:
    """The client's unsynced extended-protocol batch so far. The row limit runs its own statements inside such a
    batch (a pipeline), so it must know where the server's answers stand and what the batch did to its
    transaction."""

    unsynced: bool = False  # extended-protocol messages forwarded since the last Sync
    # it began with a limited statement in an aborted transaction: the server skips all of it
    aborted: bool = False
    sent: int = 0           # messages of it that the server answers
    answered: int = 0       # answers seen since the last ReadyForQuery
    failed: bool = False    # one of those answers was an error
    began: bool = False     # it ran BEGIN
    # it ran something after which its transaction state cannot be told (transaction control other than BEGIN,
    # COPY FROM STDIN, a Query)
    unknown: bool = False
    reads: bool = False     # it reads masked data (keeps the proxy's ext_reads set until it is answered)

    def synced(self) -> None:
        """The client's Sync ends the batch. Its answers are still counted (``answer``) until their ReadyForQuery."""
        self.unsynced = self.aborted = self.reads = False
        self.sent = 0
        self.began = self.unknown = False

    def answer(self, kind: bytes) -> None:
        """Count one message of the server that reaches the client's side."""
        if kind in COMPLETES:
            self.answered += 1
        elif kind == b"E":
            self.failed = True
        elif kind == b"Z":
            self.answered, self.failed = 0, False


@dataclass
class Divert:
    """Where the server's answers go while the proxy runs its own messages inside a client's unsynced batch: the
    answers to the client's messages sent before ours still go to the client, then ours come to ``queue``."""

    remaining: int                   # answers to the client's messages still to come before ours
    expected: int                    # answers to ours
    queue: asyncio.Queue[tuple[bytes, bytes]]

    def route(self, kind: bytes, payload: bytes) -> tuple[bool, bool]:
        """Take one message of the server: (whether it is an answer to ours, whether the diversion is over). The
        queue is told how it ended: ``.`` after our answers (or after an error, which makes the server skip the
        rest of ours), ``!`` when the client's part failed first (the server then skips all of ours)."""
        if self.remaining <= 0:
            self.queue.put_nowait((kind, payload))
            if kind in COMPLETES:
                self.expected -= 1
            if kind == b"E" or self.expected <= 0:
                self.queue.put_nowait((b".", b""))
                return True, True
            return True, False
        if kind == b"E":
            self.queue.put_nowait((b"!", b""))
            return False, True
        if kind in COMPLETES:
            self.remaining -= 1
        return False, False
