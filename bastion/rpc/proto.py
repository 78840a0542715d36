"""Broker RPC wire format shared by the daemon and the session process (no daemon imports here).

Frames are a 4-byte big-endian length followed by a UTF-8 JSON object. Requests are
``{"id": int, "method": str, "params": {...}}``; replies ``{"id": int, "result": ...}`` or
``{"id": int, "error": {"code": str, "message": str}}``. The daemon may also push ``{"event": str, "data": {...}}``.

Every request gets a reply: one the daemon cannot frame (over MAX_FRAME) is answered with the error ``too_large``;
and a caller waits for it at most REPLY_TIMEOUT seconds (an RpcError ``timeout`` then), except for the calls that
last as long as the operator wants (a session, a replay, a sign-in).
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

MAX_FRAME = 64 * 1024
HEADER = struct.Struct(">I")
REPLY_TIMEOUT = 60.0  # seconds a menu waits for a reply before it says so (the daemon answers in milliseconds)
UNTIMED = frozenset({"resource.open", "session.observe", "recording.play", "login.wait"})
"""Methods whose reply comes when the operator is done: a session, an observation, a replay, a sign-in."""

# Methods the daemon serves, with the parameter names each accepts (anything else is refused).
METHODS: dict[str, frozenset[str]] = {
    "hello": frozenset(),
    "resources.list": frozenset(),
    "resource.open": frozenset({"name", "reason"}),
    "queue.list": frozenset(),
    "requests.mine": frozenset(),
    "request.decide": frozenset({"id", "decision", "reason"}),
    "request.revoke": frozenset({"id", "reason"}),
    "sessions.live": frozenset(),
    "session.observe": frozenset({"id"}),
    "session.terminate": frozenset({"id", "reason"}),
    "recordings.list": frozenset({"user", "resource", "since", "outcome", "policy", "cursor", "risk", "reviewed"}),
    "recording.detail": frozenset({"id"}),
    "recording.play": frozenset({"id"}),
    "recording.bookmark": frozenset({"id", "t", "note"}),
    "recording.review": frozenset({"id", "verdict", "comment"}),
    "timeline": frozenset({"user", "grant", "resource"}),
    "login.start": frozenset(),
    "login.wait": frozenset(),
    "login.cancel": frozenset(),
    "log": frozenset({"level", "message"}),
}
LOGIN_METHODS = frozenset({"hello", "login.start", "login.wait", "login.cancel", "log"})  # all a pending login may call
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # the ``level`` a ``log`` request may name


class RpcError(Exception):
    """An error reply from the daemon, or a broken channel."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class FrameTooLarge(ValueError):
    """A message that does not fit in one frame."""

    def __init__(self, size: int):
        self.size = size
        super().__init__(f"RPC frame of {size} bytes exceeds {MAX_FRAME}")


def encode(obj: dict[str, Any]) -> bytes:
    """Frame one message; raises FrameTooLarge (a ValueError) if it is too big."""
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_FRAME:
        raise FrameTooLarge(len(body))
    return HEADER.pack(len(body)) + body


def reply_timeout(method: str, default: float = REPLY_TIMEOUT) -> float | None:
    """How long a caller waits for the reply to ``method``; None: as long as it takes."""
    return None if method in UNTIMED else default


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse a frame body; raises ValueError on anything that is not a JSON object."""
    obj = json.loads(body.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("RPC frame is not a JSON object")
    return obj


class RpcClient:
    """Client used by the session process. Thread-safe; a reader thread routes replies to their callers and
    pushed events to ``on_event`` (called on the reader thread: it must not block)."""

    def __init__(self, sock: socket.socket, on_event: Callable[[dict[str, Any]], None] | None = None,
                 timeout: float = REPLY_TIMEOUT):
        self._sock = sock
        self.timeout = timeout
        self._lock = threading.Lock()
        self._next = 1
        self._waiting: dict[int, queue.Queue[dict[str, Any] | None]] = {}
        self._closed = False
        self.on_event = on_event
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read_loop, name="rpc-reader", daemon=True).start()

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self._sock.recv(n - len(buf))
            except OSError:
                chunk = b""
            if not chunk:
                raise RpcError("closed", "the bastion closed the broker channel")
            buf += chunk
        return bytes(buf)

    def _read_loop(self) -> None:
        try:
            while True:
                (length,) = HEADER.unpack(self._recv_exact(HEADER.size))
                if length > MAX_FRAME:
                    raise RpcError("protocol", "oversized frame from the bastion")
                msg = decode_body(self._recv_exact(length))
                if "event" in msg:
                    cb = self.on_event
                    cb(msg) if cb is not None else self.events.append(msg)
                    continue
                with self._lock:
                    q = self._waiting.pop(msg.get("id"), None)  # type: ignore[arg-type]
                if q is not None:
                    q.put(msg)
        except (RpcError, ValueError):
            pass
        finally:
            with self._lock:
                self._closed = True
                waiting, self._waiting = self._waiting, {}
            for q in waiting.values():
                q.put(None)

    def _request(self, method: str, params: dict[str, Any],
                 reply_to: queue.Queue[dict[str, Any] | None] | None) -> int:
        """Number and send one request; its reply goes to ``reply_to`` (None: the reader drops it)."""
        with self._lock:
            if self._closed:
                raise RpcError("closed", "the bastion closed the broker channel")
            rid = self._next
            self._next += 1
            if reply_to is not None:
                self._waiting[rid] = reply_to
            try:
                self._sock.sendall(encode({"id": rid, "method": method, "params": params}))
            except OSError as e:
                self._waiting.pop(rid, None)
                raise RpcError("closed", f"the bastion closed the broker channel ({e})") from None
        return rid

    def call(self, method: str, **params: Any) -> Any:
        """Send a request and wait for its reply: never forever (a menu that waits takes no key), except for the
        methods that last as long as the operator wants (UNTIMED)."""
        q: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=1)
        rid = self._request(method, params, q)
        wait = reply_timeout(method, self.timeout)
        try:
            msg = q.get(timeout=wait)
        except queue.Empty:
            with self._lock:
                self._waiting.pop(rid, None)  # a reply that comes after all is dropped by the reader
            raise RpcError("timeout", f"the bastion did not answer ({method}) within {wait:g} s") from None
        if msg is None:
            raise RpcError("closed", "the bastion closed the broker channel")
        if "error" in msg:
            err = msg["error"] or {}
            raise RpcError(str(err.get("code", "error")), str(err.get("message", "error")))
        return msg.get("result")

    def send(self, method: str, **params: Any) -> None:
        """Send a request without waiting for its reply (which the reader then drops); silent once closed."""
        with contextlib.suppress(RpcError):
            self._request(method, params, None)

    def close(self) -> None:
        self._sock.close()
