"""PostgreSQL v3 wire protocol: framing, the few messages the proxy builds, and parsers for the ones it reads."""

from __future__ import annotations

import asyncio
import struct

PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP = 10_000
MAX_MESSAGE = 64 * 1024 * 1024


class ProtocolError(Exception):
    """A malformed or oversized message: the connection is closed."""


async def read_startup(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """A startup-phase packet (no type byte): (code, body after the code)."""
    head = await reader.readexactly(8)
    length, code = struct.unpack("!ii", head)
    if not 8 <= length <= MAX_STARTUP:
        raise ProtocolError(f"startup packet of {length} bytes")
    return code, await reader.readexactly(length - 8)


async def read_message(reader: asyncio.StreamReader, limit: int = MAX_MESSAGE) -> tuple[bytes, bytes]:
    """One typed message: (type byte, payload)."""
    head = await reader.readexactly(5)
    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
    if not 4 <= length <= limit:
        raise ProtocolError(f"message {kind!r} of {length} bytes")
    return kind, await reader.readexactly(length - 4)


def message(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def startup_message(params: dict[str, str]) -> bytes:
    body = struct.pack("!i", PROTOCOL_3) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\x00"
    return struct.pack("!i", len(body) + 4) + body


def parse_params(body: bytes) -> dict[str, str]:
    parts = body.split(b"\x00")
    out: dict[str, str] = {}
    for i in range(0, len(parts) - 1, 2):
        if not parts[i]:
            break
        out[parts[i].decode("utf-8", "replace")] = parts[i + 1].decode("utf-8", "replace")
    return out


def error_response(message_text: str, *, code: str = "42501", severity: str = "ERROR", detail: str = "",
                   hint: str = "") -> bytes:
    fields = [(b"S", severity), (b"V", severity), (b"C", code), (b"M", message_text)]
    if detail:
        fields.append((b"D", detail))
    if hint:
        fields.append((b"H", hint))
    return message(b"E", b"".join(k + cstr(v) for k, v in fields) + b"\x00")


def notice_response(message_text: str, *, code: str = "01000", severity: str = "NOTICE") -> bytes:
    """A NoticeResponse: psql prints ``NOTICE:  text`` on stderr, before the results of the statement it is about."""
    fields = [(b"S", severity), (b"V", severity), (b"C", code), (b"M", message_text)]
    return message(b"N", b"".join(k + cstr(v) for k, v in fields) + b"\x00")


def parse_error(payload: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in payload.split(b"\x00"):
        if part:
            out[part[:1].decode()] = part[1:].decode("utf-8", "replace")
    return out


def ready_for_query(status: bytes) -> bytes:
    return message(b"Z", status)


def auth_ok() -> bytes:
    return message(b"R", struct.pack("!i", 0))


def backend_key(pid: int, key: int) -> bytes:
    return message(b"K", struct.pack("!ii", pid, key))


def query_text(payload: bytes) -> str:
    """The SQL of a Query ('Q') message."""
    return payload.rstrip(b"\x00").decode("utf-8", "replace")


def parse_parse(payload: bytes) -> tuple[str, str]:
    """(statement name, SQL) of a Parse ('P') message."""
    name, rest = payload.split(b"\x00", 1)
    sql = rest.split(b"\x00", 1)[0]
    return name.decode("utf-8", "replace"), sql.decode("utf-8", "replace")


def data_row_values(payload: bytes) -> list[bytes | None]:
    """The column values of a DataRow ('D') message, None for NULL."""
    (n,) = struct.unpack("!h", payload[:2])
    pos = 2
    out: list[bytes | None] = []
    for _ in range(n):
        (length,) = struct.unpack("!i", payload[pos:pos + 4])
        pos += 4
        out.append(None if length < 0 else payload[pos:pos + length])
        pos += max(length, 0)
    return out
