"""The metrics endpoint's HTTP: ``GET /metrics``, ``/healthz`` and ``/readyz`` on asyncio streams, optionally TLS.

It serves from the event loop of the process that keeps the node's books (the node process, or the one-process
daemon), not from a thread of the supervisor: the supervisor forks a process per connection and must hold no
thread (a thread holding a lock at a fork leaves that lock held forever in the child). Building a scrape reads
files and the store, so it runs in a worker thread; the loop only parses a few header lines.

Only ``/metrics`` needs the bearer token when one is configured: health checks carry nothing secret and load
balancers seldom send headers. The token file is read at each request, so it can be rotated without a restart.
Requests are small and few: at most ``MAX_CLIENTS`` at once, headers within ``MAX_HEAD`` bytes and
``HEAD_TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)
MAX_HEAD = 8192
HEAD_TIMEOUT = 5.0
MAX_CLIENTS = 16
TEXT = "text/plain; charset=utf-8"

Scrape = Callable[[], tuple[bytes, str]]
"""Builds one exposition: (body, content type). Called in a worker thread."""
Ready = Callable[[], Awaitable[tuple[bool, list[str]]]]
"""Whether the node is ready, and one line per check."""


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context for the endpoint (TLS 1.2 or newer)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


class MetricsServer:
    def __init__(self, host: str, port: int, scrape: Scrape, ready: Ready, *, tls: ssl.SSLContext | None = None,
                 token_file: Path | None = None) -> None:
        self.host, self.port, self.tls, self.token_file = host, port, tls, token_file
        self.scrape, self.ready = scrape, ready
        self._server: asyncio.Server | None = None
        self._clients = 0

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=self.tls,
                                                      reuse_address=True, limit=MAX_HEAD)
        except OSError as e:  # the daemon does not start without the endpoint it was told to serve
            raise RuntimeError(f"metrics: cannot listen on {self.host}:{self.port}: {e.strerror or e}") from None
        log.info("metrics on %s://%s:%d/metrics (health: /healthz, /readyz)", "https" if self.tls else "http",
                 self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.token_file is None:
            return True
        try:
            token = self.token_file.read_text().strip()
        except OSError as e:
            log.error("metrics: cannot read the token file: %s", e)
            return False
        given = headers.get("authorization", "")
        return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            request = await asyncio.wait_for(_read_head(reader), HEAD_TIMEOUT)
            if request is not None:
                await self._answer(writer, *request)
        except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass
        except Exception:
            log.exception("metrics: a request failed")
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, method: str, path: str, headers: dict[str, str]) -> None:
        path = path.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            status, body, ctype = "405 Method Not Allowed", b"GET only\n", TEXT
        elif path == "/healthz":
            status, body, ctype = "200 OK", b"ok\n", TEXT
        elif path == "/readyz":
            ok, lines = await self.ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            body, ctype = ("\n".join(lines) + "\n").encode(), TEXT
        elif path == "/metrics" and not self._authorized(headers):
            status, body, ctype = "401 Unauthorized", b"a bearer token is needed\n", TEXT
        elif path == "/metrics":
            body, ctype = await asyncio.to_thread(self.scrape)
            status = "200 OK"
        else:
            status, body, ctype = "404 Not Found", b"/metrics, /healthz, /readyz\n", TEXT
        head = [f"HTTP/1.1 {status}", f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
                "Cache-Control: no-store", "Connection: close"]
        if status.startswith("401"):
            head.append('WWW-Authenticate: Bearer realm="bastion metrics"')
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if method == "HEAD" else body))
        await writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    """The request line and headers (names lower-cased); None for something that is not HTTP/1."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for ln in lines[1:]:
        name, sep, value = ln.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers
