"""The syslog sink: RFC 5424 messages, over TCP with octet-counting framing (RFC 6587 3.4.1: ``LEN SP MSG``) or
over UDP, one message per datagram (RFC 5426).

``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG``: PRI from the configured facility and the event's
severity, TIMESTAMP the event's time, MSGID its action, no structured data, and MSG the JSON line (ASCII, so no
BOM is needed and any receiver reads it).

**When a TCP batch counts as sent.** Bytes written to a socket are only in this host's buffer; a receiver that
has gone away takes them with it. So a batch is sent on a connection checked to be open (a receiver that closed
it is noticed before writing, and the batch goes on a new connection), and counts as delivered only once the
receiver's TCP stack has acknowledged every byte (the kernel's unacknowledged send queue, ``TIOCOUTQ``, is empty)
and the connection was not reset meanwhile. What the receiving program then does with them is up to it (plain
syslog has no application-level acknowledgement). UDP has no acknowledgement at all: a datagram to a receiver
that is down is lost (a refused one fails the *next* send, which is retried). Use TCP where loss matters.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import termios
import time
from collections.abc import Sequence
from typing import Any

from bastion.export.schema import severity, shrunk
from bastion.export.sinks import DeliveryError

NIL = "-"


def header_field(value: str, limit: int) -> str:
    """A header field as RFC 5424 allows it: printable US-ASCII without spaces, at most ``limit`` characters,
    ``-`` when empty."""
    out = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return out or NIL


def message(pri: int, timestamp: str, hostname: str, app_name: str, procid: str, msgid: str, msg: str) -> bytes:
    """One RFC 5424 message. ``timestamp`` is an RFC 3339 time (``+00:00`` is written ``Z``)."""
    ts = timestamp.replace("+00:00", "Z") if timestamp else NIL
    head = (f"<{pri}>1 {header_field(ts, 64)} {header_field(hostname, 255)} {header_field(app_name, 48)} "
            f"{header_field(procid, 128)} {header_field(msgid, 32)} {NIL} ")
    return head.encode("ascii") + msg.encode()


def frame(msg: bytes) -> bytes:
    """Octet-counting framing (RFC 6587): the message's length in bytes, a space, the message."""
    return b"%d %s" % (len(msg), msg)


def unframe(data: bytes) -> tuple[list[bytes], bytes]:
    """The whole messages at the start of ``data`` and what is left (the start of the next one): a receiver's
    half of :func:`frame`."""
    out: list[bytes] = []
    while True:
        sp = data.find(b" ")
        if sp <= 0:
            return out, data
        if not data[:sp].isdigit():
            raise ValueError(f"bad frame length {data[:sp][:20]!r}")
        n = int(data[:sp])
        if len(data) < sp + 1 + n:
            return out, data
        out.append(data[sp + 1:sp + 1 + n])
        data = data[sp + 1 + n:]


def _unacked(sock: socket.socket) -> int:
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the receiver closed or reset the connection (it sends nothing otherwise)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def render(rec: dict[str, Any], *, facility: int, hostname: str, app_name: str, max_message: int) -> bytes:
    """An exported event as one RFC 5424 message of at most ``max_message`` bytes (a bigger event's detail is
    left out: :func:`bastion.export.schema.shrunk`)."""
    def build(msg: str) -> bytes:
        return message(facility * 8 + severity(rec), rec["time"], hostname, app_name, str(os.getpid()),
                       rec["action"], msg)

    head = len(build(""))
    return build(shrunk(rec, max(1, max_message - head)))


class SyslogSink:
    """Sends each event as one RFC 5424 message (see the module's notes on what counts as sent)."""

    def __init__(self, host: str, port: int, transport: str, timeout: float, *, facility: int, hostname: str,
                 app_name: str, max_message: int):
        self.host, self.port, self.transport, self.timeout = host, port, transport, timeout
        self.facility, self.hostname, self.app_name, self.max_message = facility, hostname, app_name, max_message
        self._sock: socket.socket | None = None

    def send(self, records: Sequence[dict[str, Any]]) -> None:
        self.send_messages([render(r, facility=self.facility, hostname=self.hostname, app_name=self.app_name,
                                   max_message=self.max_message) for r in records])

    def send_messages(self, messages: Sequence[bytes]) -> None:
        try:
            if self.transport == "udp":
                self._send_udp(messages)
            else:
                self._send_tcp(messages)
        except OSError as e:
            self.close()
            raise DeliveryError(f"{type(e).__name__}: {e.strerror or e}") from None

    def _connected(self) -> socket.socket:
        if self._sock is not None and self.transport == "tcp" and _closed_by_peer(self._sock):
            self.close()  # the receiver went away since the last batch: this one goes on a new connection
        if self._sock is None:
            if self.transport == "tcp":
                self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            else:
                info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
                self._sock = socket.socket(info[0], socket.SOCK_DGRAM)
                self._sock.settimeout(self.timeout)
                self._sock.connect(info[4])
        return self._sock

    def _send_tcp(self, messages: Sequence[bytes]) -> None:
        sock = self._connected()
        sock.sendall(b"".join(frame(m) for m in messages))
        deadline = time.monotonic() + self.timeout
        while _unacked(sock):
            if time.monotonic() > deadline:
                raise TimeoutError(errno.ETIMEDOUT, "the receiver did not acknowledge what was sent")
            time.sleep(0.002)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, errno.errorcode.get(err, str(err)))

    def _send_udp(self, messages: Sequence[bytes]) -> None:
        sock = self._connected()
        for m in messages:
            sock.send(m)  # a port that refused an earlier datagram fails here (ECONNREFUSED)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
