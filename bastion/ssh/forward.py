"""``ssh -L PORT:localhost:PORT alice+web1@bastion`` (what VS Code Remote-SSH and database tunnels do): off unless
the resource lists the port (``forwarding: [PORT, ...]``), and then each forwarded connection goes from the
target's own loopback (a ``direct-tcpip`` channel on the bastion's connection to the target, with the vaulted
key), recorded as an audit event with its bytes each way and its duration. The operator still never holds the
target's credential, and nothing but the listed ports on the target's loopback is reachable."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncssh

from bastion import metrics
from bastion.config import SshResource
from bastion.context import ConnectionContext
from bastion.services import Services
from bastion.targets.base import TargetError
from bastion.targets.ssh import connect

log = logging.getLogger(__name__)
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
DRAIN_AT = 256 * 1024  # bytes buffered toward the target before the client is no longer read


def allowed_port(res: Any, host: str, port: int) -> bool:
    """Whether a forwarding to ``host:port`` is one ``res`` lists (its loopback only); never on a moderated
    resource: no moderator can watch a tunnel's bytes."""
    return isinstance(res, SshResource) and host in LOOPBACK and port in res.forwarding and res.moderators is None


class ForwardBridge(asyncssh.SSHTCPSession[bytes]):
    """One forwarded connection: the operator's channel to ``port`` on the target's loopback."""

    def __init__(self, services: Services, ctx: ConnectionContext, name: str, port: int):
        self.services, self.ctx, self.name, self.port = services, ctx, name, port
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._writer: asyncssh.SSHWriter[bytes] | None = None
        self._early: list[bytes] = []
        self._up = self._down = 0
        self._started = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self.on_close: Callable[[], None] | None = None  # the connection counts its forwarded channels
        # flow control both ways: the client's window full -> stop reading the target; the target's buffer
        # full -> stop reading the client (a side that does not read must not grow the bastion's memory)
        self._client_ready = asyncio.Event()
        self._client_ready.set()
        self._draining: asyncio.Task[None] | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        res = self.services.config.resources[self.name]
        assert isinstance(res, SshResource) and self._chan is not None
        why = "closed"
        try:
            self._conn = await connect(self.services.config, res)
            reader, self._writer = await self._conn.open_connection("127.0.0.1", self.port, encoding=None)
            for data in self._early:
                self._writer.write(data)
            self._early.clear()
            while chunk := await reader.read(65536):
                self._down += len(chunk)
                metrics.relayed("out", "forward", len(chunk))
                self._chan.write(chunk)
                await self._client_ready.wait()
        except (OSError, asyncssh.Error, TargetError) as e:
            why = f"failed: {e}"
        finally:
            self._chan.close()
            if self._conn is not None:
                self._conn.close()
            self._audit(why)

    def _audit(self, why: str) -> None:
        ctx, store = self.ctx, self.services.store
        duration = round(time.monotonic() - self._started, 3)
        log.info("%s: forwarding to %s port %d %s (%d bytes up, %d down, %.1f s)", ctx.who, self.name, self.port,
                 why, self._up, self._down, duration)
        self.services.spawn(asyncio.to_thread(store.audit, ctx.username, "forward.close", why, resource=self.name,
                                              client_addr=ctx.peer, port=self.port, bytes_up=self._up,
                                              bytes_down=self._down, duration=duration))

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self._up += len(data)
        metrics.relayed("in", "forward", len(data))
        if self._writer is None:
            self._early.append(data)
            if sum(map(len, self._early)) > DRAIN_AT and self._chan is not None:
                self._chan.pause_reading()  # resumed once the target connection takes it
                self._draining = asyncio.get_running_loop().create_task(self._drain())
            return
        self._writer.write(data)
        if self._draining is None and self._writer.channel.get_write_buffer_size() > DRAIN_AT:
            assert self._chan is not None
            self._chan.pause_reading()
            self._draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Wait until the target has taken what is buffered for it, then read the client again."""
        try:
            while self._writer is None and not self._task_done():
                await asyncio.sleep(0.05)
            if self._writer is not None:
                await self._writer.drain()
        except (OSError, asyncssh.Error):
            pass
        finally:
            self._draining = None
            if self._chan is not None:
                self._chan.resume_reading()

    def _task_done(self) -> bool:
        return self._task is None or self._task.done()

    def pause_writing(self) -> None:
        self._client_ready.clear()

    def resume_writing(self) -> None:
        self._client_ready.set()

    def eof_received(self) -> bool:
        if self._writer is not None:
            self._writer.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._conn.close()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None
