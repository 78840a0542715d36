"""The daemon's connection to the real PostgreSQL server: TLS per resource, SCRAM-SHA-256 or md5 with the password
read from the resource's credential file. Nothing here ever reaches the operator's side."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import struct
from dataclasses import dataclass, field

from scramp import ScramClient

from bastion.proxies.pg.protocol import (
    CANCEL_REQUEST,
    SSL_REQUEST,
    cstr,
    message,
    parse_error,
    read_message,
    startup_message,
)


class UpstreamError(Exception):
    """The server could not be reached or refused us; safe to show the operator."""


@dataclass
class Upstream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int = 0
    key: int = 0
    params: dict[str, str] = field(default_factory=dict)
    status: bytes = b"I"


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    database: str
    user: str
    tls_mode: str = "disable"  # disable | require | verify-full
    ca_file: str | None = None


def _ssl_context(t: Target) -> ssl.SSLContext:
    if t.tls_mode == "verify-full":
        ctx = ssl.create_default_context(cafile=t.ca_file)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _open(t: Target, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(t.host, t.port), timeout)
    except (OSError, TimeoutError) as e:
        raise UpstreamError(f"cannot connect to the database server: {e or type(e).__name__}") from None
    if t.tls_mode != "disable":
        writer.write(struct.pack("!ii", 8, SSL_REQUEST))
        await writer.drain()
        answer = await reader.readexactly(1)
        if answer != b"S":
            writer.close()
            raise UpstreamError("the database server does not offer TLS, and this resource requires it")
        try:
            await writer.start_tls(_ssl_context(t), server_hostname=t.host)
        except (ssl.SSLError, OSError) as e:
            writer.close()
            raise UpstreamError(f"TLS to the database server failed: {e}") from None
    return reader, writer


async def connect(t: Target, password: str, *, application_name: str, timeout: float = 15.0) -> Upstream:
    """Open and authenticate a connection; returns it ready for queries."""
    reader, writer = await _open(t, timeout)
    up = Upstream(reader, writer)
    writer.write(startup_message({"user": t.user, "database": t.database, "application_name": application_name,
                                  "client_encoding": "UTF8"}))
    scram: ScramClient | None = None
    scram_done = False
    try:
        while True:
            kind, payload = await asyncio.wait_for(read_message(reader, 1 << 20), timeout)
            if kind == b"R":
                code = struct.unpack("!i", payload[:4])[0]
                if code == 0:
                    if scram is not None and not scram_done:  # a server that skips its proof is not trusted
                        raise UpstreamError("the database server did not prove it knows the password (SCRAM)")
                    continue
                if code == 10:
                    mechs = [m.decode() for m in payload[4:].split(b"\x00") if m]
                    if "SCRAM-SHA-256" not in mechs:
                        raise UpstreamError(f"unsupported SASL mechanisms {mechs}")
                    scram = ScramClient(["SCRAM-SHA-256"], t.user, password)
                    first = scram.get_client_first().encode()
                    writer.write(message(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first))
                elif code == 11 and scram is not None:
                    scram.set_server_first(payload[4:].decode())
                    writer.write(message(b"p", scram.get_client_final().encode()))
                elif code == 12 and scram is not None:
                    scram.set_server_final(payload[4:].decode())  # proves the server knows the password too
                    scram_done = True
                elif code == 5:
                    salt = payload[4:8]
                    inner = hashlib.md5((password + t.user).encode()).hexdigest()  # noqa: S324 - the protocol
                    outer = hashlib.md5(inner.encode() + salt).hexdigest()  # noqa: S324
                    writer.write(message(b"p", cstr("md5" + outer)))
                elif code == 3 and t.tls_mode == "verify-full":  # cleartext only to a server we verified
                    writer.write(message(b"p", cstr(password)))
                else:
                    raise UpstreamError(f"the server asked for an authentication method the bastion refuses ({code})")
                await writer.drain()
            elif kind == b"E":
                err = parse_error(payload)
                raise UpstreamError(f"the database server refused the connection: {err.get('M', '?')}")
            elif kind == b"S":
                k, _, v = payload.partition(b"\x00")
                up.params[k.decode()] = v.rstrip(b"\x00").decode("utf-8", "replace")
            elif kind == b"K":
                up.pid, up.key = struct.unpack("!ii", payload[:8])
            elif kind == b"Z":
                up.status = payload[:1]
                return up
    except (asyncio.IncompleteReadError, OSError, TimeoutError) as e:
        writer.close()
        raise UpstreamError(f"the database server closed the connection during login: {e!r}") from None
    except UpstreamError:
        writer.close()
        raise
    except Exception as e:  # scramp raises its own errors on a bad server proof
        writer.close()
        raise UpstreamError(f"authentication with the database server failed: {e}") from None


async def cancel(t: Target, pid: int, key: int, timeout: float = 5.0) -> None:
    """Send a CancelRequest for the real backend (a new connection, as the protocol wants)."""
    try:
        _, writer = await _open(t, timeout)
        writer.write(struct.pack("!iiii", 16, CANCEL_REQUEST, pid, key))
        await writer.drain()
        writer.close()
    except (OSError, UpstreamError, asyncio.IncompleteReadError):
        pass
