"""What one PostgreSQL wire proxy knows: its configuration and the state of its (single) client connection.

``PgProxy`` is assembled from layers, one per module, each a class that uses only the layers below it (so that
mypy checks every call across them): this state; ``fieldplan`` (masking); ``judge`` (policy); ``private``,
``settle`` and ``measure`` (the row limit); ``client`` and ``server`` (the two message pumps); ``proxy`` (the
listener and the connection). The state lives here, in one place, because both pumps and the row limit read and
change it while one statement flows through.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bastion.proxies.pg import upstream as up
from bastion.proxies.pg.extended import Batch, Divert, Statement
from bastion.proxies.pg.masking import MaskRule
from bastion.proxies.pg.rowlimit import Measured, ResultBuffer
from policies.engine import Decision
from policies.sqlmask import Analysis, Catalog


class ProxyState:
    """The configuration of one brokered session's proxy, and what it knows of its client connection."""

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
        self.client: asyncio.StreamWriter | None = None  # the connected psql, for the bastion's own notices
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
        self.batch = Batch()
        # after a refused extended-protocol message: the client's messages are dropped until its Sync, which gets
        # this error
        self._discard: bytes | None = None
        # the row limit: what the server->client task does with what it reads while the proxy runs a private query
        # (_collector), its own messages inside the client's batch (_divert) or a measured request (_buffer);
        # _drained is set whenever no client request is in flight
        self._collector: asyncio.Queue[tuple[bytes, bytes]] | None = None
        self._divert: Divert | None = None
        self._buffer: ResultBuffer | None = None
        self._drained = asyncio.Event()
        self._late: list[bytes] = []  # ParameterStatus/notifications that arrived during private queries
        self._measuring: Measured | None = None  # an extended-protocol batch under a row limit, until its Sync
        self.prepared: dict[str, Statement] = {}  # prepared statements by name ("" unnamed)
        # the lineage outputs of each prepared statement, and the statements bound since the client last had all its
        # answers: with one statement in flight its results are placed precisely (count(*) stays a count)
        self.prepared_outputs: dict[str, list[bool] | None] = {}
        self._inflight_bound: list[list[bool] | None] = []  # per Bind in flight: its statement's outputs, then
        # portal -> its statement, and the measured batch it was bound in
        self.portals: dict[str, tuple[Statement, Measured | None]] = {}
        self.measure_buffer = 64 << 20  # the most a measured request's results may take while held back

    def _reset(self) -> None:
        """What one client connection knew of its server session starts empty for the next one."""
        self.groups.clear()
        self.ext_reads = False
        self.plan = []
        self.batch = Batch()
        self._discard = None
        self._collector = self._buffer = self._measuring = None
        self._late.clear()
        self._divert = None
        self.prepared.clear()
        self.portals.clear()
