"""The daemon's side of the broker RPC: validates every frame from the session process before acting on it.

The session process is treated as hostile: oversized, malformed, unknown or mistyped requests are refused with an
error reply and logged; after too many, the channel is closed. Identity is never taken from a request: handlers act
for the connection that spawned the session process. Every request is answered: a result too large for one frame
becomes the error ``too_large`` (the menu shows it), never a reply that is silently not sent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from bastion.rpc.proto import HEADER, MAX_FRAME, METHODS, FrameTooLarge, decode_body, encode

log = logging.getLogger(__name__)

MAX_STRIKES = 20
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class RefusedRequest(Exception):
    """A handler refuses a well-formed request; ``code`` and the message go back to the caller."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class BrokerServer:
    """Serve one session process over its socketpair end."""

    def __init__(self, sock: socket.socket, handlers: dict[str, Handler], who: str):
        self.sock = sock
        self.handlers = handlers
        self.who = who
        self.strikes = 0
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._due: dict[str, asyncio.TimerHandle] = {}  # coalesced pushes to come, by event

    async def serve(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(sock=self.sock)
        try:
            while True:
                try:
                    head = await reader.readexactly(HEADER.size)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                (length,) = HEADER.unpack(head)
                if length > MAX_FRAME:
                    log.warning("broker[%s]: refused oversized frame (%d bytes); closing channel", self.who, length)
                    await self._send({"id": None, "error": {"code": "too_large", "message": "frame too large"}})
                    return
                try:
                    body = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if not self._accept(body):
                    return
        finally:
            for t in self._tasks:
                t.cancel()
            for handle in self._due.values():
                handle.cancel()
            self._writer.close()

    def _accept(self, body: bytes) -> bool:
        """Validate one frame and start its handler; False when the channel should be closed."""
        rid: Any = None
        try:
            msg = decode_body(body)
            rid = msg.get("id")
            method, params = msg.get("method"), msg.get("params", {})
            if not isinstance(rid, int) or isinstance(rid, bool) or not 0 < rid < 2**53:
                raise ValueError("'id' must be a positive integer")
            if set(msg) - {"id", "method", "params"}:
                raise ValueError("unexpected fields in request")
            if not isinstance(method, str) or method not in METHODS or method not in self.handlers:
                raise ValueError(f"unknown method {str(method)[:64]!r}")
            if not isinstance(params, dict) or set(params) - METHODS[method]:
                raise ValueError(f"bad parameters for {method}")
            if any(not isinstance(v, str) or len(v) > 4096 for v in params.values()):
                raise ValueError(f"parameters of {method} must be short strings")
        except ValueError as e:  # includes JSON and UTF-8 errors
            self.strikes += 1
            log.warning("broker[%s]: refused malformed request (%s); strike %d", self.who, e, self.strikes)
            self._spawn(self._send({"id": rid if isinstance(rid, int) else None,
                                    "error": {"code": "bad_request", "message": str(e)[:200]}}))
            if self.strikes >= MAX_STRIKES:
                log.warning("broker[%s]: too many malformed requests; closing channel", self.who)
                return False
            return True
        self._spawn(self._dispatch(rid, method, params))
        return True

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, rid: int, method: str, params: dict[str, Any]) -> None:
        try:
            result = await self.handlers[method](params)
            reply: dict[str, Any] = {"id": rid, "result": result}
        except RefusedRequest as e:
            log.info("broker[%s]: %s refused: %s", self.who, method, e)
            reply = {"id": rid, "error": {"code": e.code, "message": str(e)}}
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in a handler must not take the daemon down
            log.exception("broker[%s]: %s failed", self.who, method)
            reply = {"id": rid, "error": {"code": "internal", "message": "internal error (see daemon log)"}}
        await self._write(self._reply_frame(method, reply))

    def _reply_frame(self, method: str, reply: dict[str, Any]) -> bytes:
        """The framed reply; one that cannot be framed is answered with an error the menu shows."""
        rid = reply["id"]
        try:
            return encode(reply)
        except FrameTooLarge as e:
            log.warning("broker[%s]: the reply to %s is %d bytes, over the frame limit of %d: answered too_large",
                        self.who, method, e.size, MAX_FRAME)
            return encode({"id": rid, "error": {
                "code": "too_large",
                "message": f"the answer to {method} is too large to send ({e.size} bytes; the limit is "
                           f"{MAX_FRAME}): narrow it down"}})
        except (TypeError, ValueError):
            log.exception("broker[%s]: the reply to %s cannot be encoded", self.who, method)
            return encode({"id": rid, "error": {"code": "internal", "message": "internal error (see daemon log)"}})

    def notify(self, event: str, data: dict[str, Any] | None = None) -> None:
        """Send an unsolicited event to the session process (fire and forget)."""
        self._spawn(self._send({"event": event, "data": data or {}}))

    def notify_soon(self, event: str, within: float) -> None:
        """Push ``event`` (no data) ``within`` seconds from now; the same event asked for meanwhile is this push:
        each push costs the menu a reload, and one reload reads every change."""
        if event not in self._due:
            self._due[event] = asyncio.get_running_loop().call_later(within, self._push_due, event)

    def _push_due(self, event: str) -> None:
        del self._due[event]
        self.notify(event)

    async def _send(self, obj: dict[str, Any]) -> None:
        try:
            frame = encode(obj)
        except (TypeError, ValueError) as e:
            log.warning("broker[%s]: cannot send %s: %s", self.who, "event" if "event" in obj else "reply", e)
            return
        await self._write(frame)

    async def _write(self, frame: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except ConnectionError as e:
            log.warning("broker[%s]: cannot send reply: %s", self.who, e)
