"""The hub: how a node's processes tell each other things. Each child has a socketpair to the supervisor; a message
is one JSON object on one line. ``{"to": "all", "event": E}`` is delivered to every other process (the node
process passes it on to other nodes when they share a PostgreSQL store); ``{"to": "node", ...}`` to the node
process only (a recording closed: index it; a connection process ended: its sessions, if still active, were
interrupted)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
MAX_LINE = 1 << 20


def line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


class Peer:
    """The supervisor's end of one child's socketpair: non-blocking reads of whole lines, and sends that never
    block (what the child does not take now waits in ``out``; a child that takes nothing for long is dropped)."""

    MAX_OUT = 1 << 20

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock, self.name = sock, name
        self.sock.setblocking(False)
        self._buf = b""
        self.out = bytearray()
        self.stuck = False  # it let MAX_OUT pile up: the supervisor ends it

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[dict[str, Any]] | None:
        """The complete messages that arrived (None: the child's end is closed)."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return []
        except OSError:
            return None
        if not data:
            return None
        self._buf += data
        out = []
        while b"\n" in self._buf:
            raw, self._buf = self._buf.split(b"\n", 1)
            try:
                msg = json.loads(raw)
            except Exception:  # not JSON, or JSON nested to break the parser: dropped, said once
                log.warning("hub: ignoring a malformed message from %s", self.name)
                continue
            if isinstance(msg, dict):
                out.append(msg)
        if len(self._buf) > MAX_LINE:
            log.warning("hub: %s sent an oversized message; dropping it", self.name)
            self._buf = b""
        return out

    def send(self, msg: dict[str, Any]) -> None:
        self.out += line(msg)
        if len(self.out) > self.MAX_OUT:
            log.warning("hub: %s takes nothing; dropping it", self.name)
            self.out.clear()
            self.stuck = True
            return
        self.flush()

    def flush(self) -> bool:
        """Send what waits; True when nothing does any more."""
        while self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                return False
            except OSError:  # gone: what it would have been told no longer matters
                self.out.clear()
                break
            del self.out[:n]
        return True

    def close(self) -> None:
        self.sock.close()


class HubClient:
    """A child's end: publish, tell the node process, and hand what arrives to ``on_message``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._asked: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0

    async def start(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        self.sock.setblocking(False)
        reader, self._writer = await asyncio.open_connection(sock=self.sock, limit=MAX_LINE)
        self._task = asyncio.create_task(self._read(reader, on_message))

    async def _read(self, reader: asyncio.StreamReader, on_message: Callable[[dict[str, Any]], None]) -> None:
        while True:
            try:
                raw = await reader.readline()
            except (OSError, ValueError):
                return
            if not raw:
                return
            try:
                msg = json.loads(raw)
            except Exception:  # a malformed line is dropped; the reader goes on
                log.warning("hub: ignoring a malformed message")
                continue
            if isinstance(msg, dict) and isinstance(msg.get("answer"), int):
                fut = self._asked.pop(msg["answer"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif isinstance(msg, dict):
                try:
                    on_message(msg)
                except Exception:
                    log.exception("hub: handling %s failed", msg.get("kind") or msg.get("event", {}).get("kind"))

    @property
    def reader(self) -> asyncio.Task[None] | None:
        """The task that reads the hub (it runs as long as the process)."""
        return self._task

    def send(self, msg: dict[str, Any]) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(line(msg))

    async def ask(self, msg: dict[str, Any], timeout: float = 10.0) -> dict[str, Any] | None:
        """Ask the supervisor; its answer (None if none comes)."""
        self._next += 1
        rid = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._asked[rid] = fut
        self.send({"to": "supervisor", "ask": rid, **msg})
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            self._asked.pop(rid, None)

    def publish(self, event: dict[str, Any]) -> None:
        """To every other process of the node (and, through the node process, to other nodes)."""
        self.send({"to": "all", "event": event})

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()
