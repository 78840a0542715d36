"""The journal sink: systemd's native protocol, one datagram per entry to ``/run/systemd/journal/socket`` (no
python-systemd needed).

A field is ``NAME=value\\n``, or, when the value holds a newline, ``NAME\\n`` + its length (64-bit little-endian)
+ the value + ``\\n``. An entry too big for a datagram is written to a sealed memfd whose descriptor is passed
instead (as sd_journal_send does). A datagram on a local socket is either taken by journald or refused (the send
fails and the batch is retried), so the journal gets every event; what it keeps is up to its own limits
(``RateLimitBurst=``, disk use).

Fields: ``MESSAGE`` (one human line), ``PRIORITY`` (4 or 6, as syslog), ``SYSLOG_IDENTIFIER``, and ``BASTION_*``:
the event's keys in upper case (``BASTION_SEQ``, ``BASTION_HASH``, ``BASTION_ACTION``, ...; one whose value is
null is left out) and ``BASTION_EVENT``, the whole JSON line. ``journalctl BASTION_SESSION_ID=...`` finds a
session's events.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any

from bastion.export.schema import encode, severity, summary
from bastion.export.sinks import DeliveryError

FIELDS = ("schema", "version", "seq", "hash", "prev_hash", "time", "actor", "action", "outcome", "resource",
          "session_id", "client_addr", "truncated")


def field(name: str, value: str | bytes) -> bytes:
    """One field in the native protocol."""
    data = value.encode() if isinstance(value, str) else value
    if b"\n" in data:
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


def entry(rec: dict[str, Any], identifier: str) -> bytes:
    """The datagram for one exported event."""
    out = [field("MESSAGE", summary(rec)), field("PRIORITY", str(severity(rec))),
           field("SYSLOG_IDENTIFIER", identifier)]
    for key in FIELDS:
        value = rec.get(key)
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out.append(field("BASTION_" + key.upper(), text))
    out.append(field("BASTION_EVENT", encode(rec)))
    return b"".join(out)


def parse(data: bytes) -> dict[str, bytes]:
    """A receiver's half of :func:`entry`: the fields of one datagram (the last of a name given twice)."""
    out: dict[str, bytes] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, _, v = line.partition(b"=")
            out[k.decode()] = v
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            out[line.decode()] = data[nl + 9:nl + 9 + n]
            if data[nl + 9 + n:nl + 10 + n] != b"\n":
                raise ValueError(f"field {line!r}: no newline after its {n} bytes")
            i = nl + 10 + n
    return out


def _send_memfd(sock: socket.socket, data: bytes, path: str) -> None:
    """A big entry: in a sealed memfd, passed by descriptor (journald refuses an unsealed one)."""
    fd = os.memfd_create("bastion-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, data)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        # (socket.send_fds drops its address argument: sendmsg itself)
        sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], 0, path)
    finally:
        os.close(fd)


class JournalSink:
    """Sends each event as one journal entry to the socket at ``path``."""

    def __init__(self, path: str, identifier: str, timeout: float):
        self.path, self.identifier, self.timeout = path, identifier, timeout
        self._sock: socket.socket | None = None

    def send(self, records: Sequence[dict[str, Any]]) -> None:
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(self.timeout)
            for rec in records:
                data = entry(rec, self.identifier)
                try:
                    self._sock.sendto(data, self.path)
                except OSError as e:
                    if e.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                        raise
                    _send_memfd(self._sock, data, self.path)
        except OSError as e:
            self.close()
            hint = " (not running under systemd?)" if isinstance(e, FileNotFoundError | ConnectionRefusedError) \
                else ""
            raise DeliveryError(f"{type(e).__name__}: {e.strerror or e}: {self.path}{hint}") from None

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
