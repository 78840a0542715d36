"""A syslog receiver on loopback, written from docs/audit-export.md and the RFCs rather than from the bastion's
code: RFC 6587 octet-counting over TCP or one RFC 5424 message per UDP datagram; each message's header is parsed,
its MSG checked against the documented schema (version 1) and its hash recomputed as the docs show. It can be
stopped (listener and every connection closed) and started again on the same port."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.support.keys import free_port

RFC5424 = re.compile(rb"^<(\d{1,3})>1 (\S+) ([\x21-\x7e]{1,255}) ([\x21-\x7e]{1,48}) ([\x21-\x7e]{1,128}) "
                     rb"([\x21-\x7e]{1,32}) (-|\[.*?\]) (.*)$", re.S)
NULLABLE_STR = (str, type(None))
SCHEMA: dict[str, tuple[type, ...]] = {
    "schema": (str,), "version": (int,), "seq": (int,), "hash": (str,), "prev_hash": (str,), "time": (str,),
    "actor": (str,), "action": (str,), "outcome": (str,), "resource": NULLABLE_STR, "session_id": NULLABLE_STR,
    "client_addr": (str,), "detail": (dict,), "truncated": (bool,)}


def chain_hash(e: dict[str, Any]) -> str:
    """docs/audit-export.md, "Checking the chain at the receiver"."""
    body = [e["prev_hash"], e["seq"], e["time"], e["actor"], e["action"], e["outcome"], e["resource"],
            e["session_id"], e["client_addr"], e["detail"]]
    return hashlib.sha256(json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
                          .encode()).hexdigest()


def event_problems(e: Any) -> list[str]:
    if not isinstance(e, dict):
        return ["not an object"]
    out = [f"{k}: missing" for k in SCHEMA if k not in e] + [f"{k}: unexpected" for k in e if k not in SCHEMA]
    out += [f"{k}: {type(e[k]).__name__}" for k, t in SCHEMA.items() if k in e and not isinstance(e[k], t)]
    if not out and (e["schema"], e["version"]) != ("bastion.audit", 1):
        out.append(f"schema {e['schema']} version {e['version']}")
    if not out and not e["truncated"] and chain_hash(e) != e["hash"]:
        out.append(f"#{e['seq']}: hash does not check")
    return out


class SyslogReceiver:
    """``events``: every event received, in arrival order; ``problems``: anything malformed."""

    def __init__(self, transport: str = "tcp", port: int | None = None) -> None:
        self.transport, self.port = transport, port or free_port()
        self.events: list[dict[str, Any]] = []
        self.headers: list[tuple[bytes, ...]] = []
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        kind = socket.SOCK_STREAM if self.transport == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        if self.transport == "tcp":
            sock.listen(16)
        self._sock = sock
        self._spawn(self._accept if self.transport == "tcp" else self._datagrams, sock)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self._spawn(self._read, conn)

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while True:  # octet-counting: LEN SP MSG
                m = re.match(rb"^([1-9][0-9]*) ", buf)
                if not m:
                    if buf and not re.match(rb"^[0-9]*$", buf):
                        self._problem(f"bad framing: {buf[:40]!r}")
                        buf = b""
                    break
                n = int(m.group(1))
                if len(buf) < m.end() + n:
                    break
                self._message(buf[m.end():m.end() + n])
                buf = buf[m.end() + n:]

    def _datagrams(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            self._message(data)

    def _message(self, msg: bytes) -> None:
        m = RFC5424.match(msg)
        if not m:
            self._problem(f"not RFC 5424: {msg[:80]!r}")
            return
        try:
            event = json.loads(m.group(8))
        except ValueError:
            self._problem(f"MSG is not JSON: {m.group(8)[:80]!r}")
            return
        problems = event_problems(event)
        if not problems and m.group(6).decode() != event["action"][:32]:
            problems.append(f"MSGID {m.group(6)!r} is not the action {event['action']}")
        with self._lock:
            self.problems += problems
            self.headers.append(m.groups()[:7])
            self.events.append(event)

    def _problem(self, p: str) -> None:
        with self._lock:
            self.problems.append(p)

    def stop(self) -> None:
        """Close the listener and every connection (what a receiver that goes away does)."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._conns = []
        for t in self._threads:
            t.join(5)
        self._threads = []

    def hashes(self) -> set[str]:
        with self._lock:
            return {e["hash"] for e in self.events}

    def wait(self, cond: Callable[[SyslogReceiver], bool], timeout: float = 30, why: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not cond(self):
            assert time.monotonic() < deadline, f"{why}: {len(self.events)} events, problems {self.problems[:5]}"
            time.sleep(0.05)
