"""One Kubernetes API proxy per brokered session: kubectl talks TLS to it with a throwaway token; every request is
parsed (``policies.kube``), judged, held for approval or refused, and only then sent to the real API server with
the real credential.

A request a rule warns about is forwarded with a ``Warning`` header added to the answer (kubectl prints
``Warning: bastion: warning (rule 'x'): why`` on stderr); an exec or attach stream, whose 101 kubectl does not read
warnings from, gets the line from the bastion instead (``say``).

The client's ``Authorization`` is checked against the session token and never forwarded; ``Impersonate-*`` headers
are refused (with ``impersonate: true`` the bastion sets them itself, to the operator's identity). Exec, attach and
port-forward arrive as WebSocket upgrades and are relayed byte for byte once allowed; SPDY upgrades are refused
deliberately (kubectl >= 1.30 speaks WebSocket). HTTP/1.1 only; bodies are capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11

from bastion.proxies.kube.tls import SessionCert, make_session_cert
from policies.engine import Action, Decision
from policies.kube import KubeParseError, KubeRequest, parse_request

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024  # the API server's own request limit
MAX_HEAD = 64 * 1024
MAX_WARNING = 2000  # characters of a Warning header (a reason may quote a long exec argv)
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate",
              b"te", b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"host", b"authorization"}
UPGRADABLE = {"exec", "attach", "portforward"}


@dataclass(frozen=True)
class Upstream:
    """The real API server and how to authenticate to it (token, or the client certificate in ``ssl``)."""

    host: str
    port: int
    ssl: ssl.SSLContext
    token: str | None = None
    impersonate_user: str | None = None
    impersonate_groups: tuple[str, ...] = ()


def status_body(code: int, reason: str, message: str) -> bytes:
    """A ``meta/v1 Status``: kubectl prints ``Error from server (reason): message``."""
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code}).encode()


def warning_header(d: Decision) -> bytes:
    """The value of a ``Warning`` header for a ``warn`` decision, in the form kubectl prints on stderr as
    ``Warning: bastion: warning (rule 'x'): why`` (RFC 7234 ``299 - "text"``: quotes and backslashes escaped, no
    control characters, which client-go refuses)."""
    text = "".join(c if c.isprintable() else " " for c in f"bastion: {d.warning()}"[:MAX_WARNING])
    return ('299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"').encode()


class _Closed(Exception):
    pass


class KubeProxy:
    """Serve one session's kubectl; ``judge`` decides, ``hold`` asks reviewers, ``note`` records a decision,
    ``say`` tells the operator a line kubectl would not show (a warning about an exec or attach stream)."""

    def __init__(self, upstream: Upstream, *, judge: Callable[[KubeRequest], Decision],
                 hold: Callable[[Decision], Awaitable[dict[str, Any]]], note: Callable[[Decision], None],
                 withdraw: Callable[[], None], event: Callable[[str], None] | None = None,
                 say: Callable[[str], None] | None = None):
        self.upstream = upstream
        self.judge, self.hold, self.note, self.withdraw = judge, hold, note, withdraw
        self.event = event or (lambda _text: None)
        self.say = say or (lambda _text: None)
        self.token = secrets.token_urlsafe(32)
        self.cert: SessionCert = make_session_cert()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def serve(self, listener: socket.socket | None = None) -> int:
        """Accept on ``listener`` (a listening socket, e.g. made inside the sandbox's network namespace) or on a
        new 127.0.0.1 port; the port."""
        ctx = self.cert.server_context()
        if listener is None:
            self.server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=ctx, limit=MAX_HEAD)
        else:
            listener.setblocking(False)
            self.server = await asyncio.start_server(self._client, sock=listener, ssl=ctx, limit=MAX_HEAD)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    def kubeconfig(self, namespace: str, cluster: str = "bastion") -> str:
        """A kubeconfig (JSON is YAML) for this proxy: the session certificate as CA, the session token."""
        import base64

        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": cluster, "preferences": {},
            "clusters": [{"name": cluster, "cluster": {
                "server": f"https://127.0.0.1:{self.port}",
                "certificate-authority-data": base64.b64encode(self.cert.cert_pem).decode()}}],
            "users": [{"name": "operator", "user": {"token": self.token}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "operator",
                                                       "namespace": namespace}}],
        }, indent=2) + "\n"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one kubectl connection ----------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            while True:
                ev = await self._next(conn, reader)
                if isinstance(ev, h11.ConnectionClosed):
                    return
                if not isinstance(ev, h11.Request):
                    return
                keep = await self._request(conn, ev, reader, writer)
                if not keep or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except h11.RemoteProtocolError as e:
            self._refuse_raw(writer, 400, "BadRequest", f"bastion: malformed HTTP request ({e})")
        except (_Closed, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:  # closing: end quietly (3.11's stream callback logs a re-raised cancel)
            return
        except Exception as e:  # a bug must not take the daemon down: this connection ends, logged
            log.exception("kube proxy: connection failed")
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            return ev

    @staticmethod
    def _refuse_raw(writer: asyncio.StreamWriter, code: int, reason: str, message: str) -> None:
        body = status_body(code, reason, message)
        writer.write(f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)

    def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, ev: Any) -> None:
        data = conn.send(ev)
        if data:
            writer.write(data)

    def _status(self, conn: h11.Connection, writer: asyncio.StreamWriter, code: int, reason: str,
                message: str) -> bool:
        body = status_body(code, reason, message)
        self._send(conn, writer, h11.Response(status_code=code, headers=[
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]))
        self._send(conn, writer, h11.Data(data=body))
        self._send(conn, writer, h11.EndOfMessage())
        return True

    async def _request(self, conn: h11.Connection, req: h11.Request, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        """Handle one request; whether the connection may carry another."""
        headers = [(k.lower(), v) for k, v in req.headers]
        auth = next((v for k, v in headers if k == b"authorization"), b"")
        if not hmac.compare_digest(auth, b"Bearer " + self.token.encode()):
            await self._drain_body(conn, reader)
            return self._status(conn, writer, 401, "Unauthorized", "bastion: this proxy takes only the session's token")
        if any(k.startswith(b"impersonate-") for k, _ in headers):
            await self._drain_body(conn, reader)
            return self._status(conn, writer, 403, "Forbidden",
                                "bastion: impersonation (--as, --as-group) is not allowed through the bastion")
        method, target = req.method.decode("ascii", "replace"), req.target.decode("ascii", "replace")
        try:
            kreq = parse_request(method, target)
        except KubeParseError as e:
            await self._drain_body(conn, reader)
            self.note(Decision(Action.BLOCK, None, f"the request cannot be judged ({e})", f"{method} {target[:200]}"))
            return self._status(conn, writer, 400, "BadRequest", f"bastion: refused: {e}")
        upgrade = next((v for k, v in headers if k == b"upgrade"), b"").lower()
        if upgrade and kreq.subresource not in UPGRADABLE:
            return self._status(conn, writer, 400, "BadRequest", "bastion: upgrade only for exec/attach/portforward")
        body = await self._read_body(conn, reader)
        if body is None:
            return self._status(conn, writer, 413, "RequestEntityTooLarge",
                                f"bastion: request bodies are limited to {MAX_BODY} bytes") and False
        d = self.judge(kreq)
        if not kreq.discovery:
            self.note(d)
        if d.action == Action.BLOCK:  # judged before the protocol check: kubectl's SPDY fallback gets the same answer
            return self._status(conn, writer, 403, "Forbidden", f"bastion: {d.refusal()}")
        if upgrade and b"websocket" not in upgrade:
            return self._status(conn, writer, 400, "BadRequest",
                                "bastion: SPDY streams are not supported; use kubectl 1.30 or newer (WebSocket)")
        if d.action == Action.REQUIRE_APPROVAL:
            result = await self._hold(d, conn, reader)
            if result.get("status") != "approved":
                return self._status(conn, writer, 403, "Forbidden", f"bastion: request {result.get('status')}: "
                                    f"{result.get('status_reason', '')}")
        warned = d if d.action == Action.WARN and not kreq.discovery else None
        return await self._forward(conn, req, headers, body, kreq, bool(upgrade), reader, writer, warned)

    async def _hold(self, d: Decision, conn: h11.Connection, reader: asyncio.StreamReader) -> dict[str, Any]:
        """Wait for reviewers; kubectl hanging up (Ctrl-C) withdraws the request."""
        hold = asyncio.ensure_future(self.hold(d))
        gone = asyncio.ensure_future(reader.read(65536))  # kubectl sends nothing more while it waits
        try:
            done, _ = await asyncio.wait({hold, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                data = gone.result()
                if data:
                    conn.receive_data(data)  # not expected; kept for h11 rather than lost
                elif not hold.done():
                    self.withdraw()
            return await hold
        except Exception as e:  # RPC or store failure = deny
            log.exception("kube proxy: approval failed")
            return {"status": "failed", "status_reason": f"approval could not be obtained ({e})"}
        finally:
            if not gone.done():
                gone.cancel()

    async def _drain_body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> None:
        await self._read_body(conn, reader)

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            ev = await self._next(conn, reader)
            if isinstance(ev, h11.Data):
                size += len(ev.data)
                if size > MAX_BODY:
                    return None
                parts.append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                return b"".join(parts)
            elif ev is h11.PAUSED:  # an upgrade request: no body
                return b""
            else:
                raise _Closed()

    # -- to the real API server ----------------------------------------------------------------------------
    def _upstream_headers(self, headers: list[tuple[bytes, bytes]], upgrade: bool) -> list[tuple[bytes, bytes]]:
        up = self.upstream
        named = {v.strip().lower() for k, v in headers if k == b"connection" for v in v.split(b",")}
        out = [(k, v) for k, v in headers if k not in HOP_BY_HOP and k not in named
               and not k.startswith(b"impersonate-")]
        host = up.host if ":" not in up.host else f"[{up.host}]"
        out.insert(0, (b"host", f"{host}:{up.port}".encode()))
        if up.token:
            out.append((b"authorization", b"Bearer " + up.token.encode()))
        if up.impersonate_user:
            out.append((b"impersonate-user", up.impersonate_user.encode()))
            out += [(b"impersonate-group", g.encode()) for g in up.impersonate_groups]
        if upgrade:
            out += [(b"connection", b"Upgrade"), (b"upgrade", b"websocket")]
        return out

    async def _forward(self, conn: h11.Connection, req: h11.Request, headers: list[tuple[bytes, bytes]],
                       body: bytes, kreq: KubeRequest, upgrade: bool, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, warned: Decision | None = None) -> bool:
        """Send the allowed request to the API server and its answer back, with a ``Warning`` header when a rule
        warns about it (``warned``); whether the connection may carry another request."""
        up = self.upstream
        try:
            ur, uw = await asyncio.wait_for(asyncio.open_connection(up.host, up.port, ssl=up.ssl,
                                                                    server_hostname=up.host, limit=MAX_HEAD), 15)
        except (OSError, TimeoutError, ssl.SSLError) as e:
            log.warning("kube proxy: cannot reach %s:%s: %s", up.host, up.port, e)
            return self._status(conn, writer, 503, "ServiceUnavailable",
                                f"bastion: the cluster's API server cannot be reached ({type(e).__name__})")
        uconn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        try:
            out = self._upstream_headers(headers, upgrade)
            if body or req.method in (b"POST", b"PUT", b"PATCH"):
                out.append((b"content-length", str(len(body)).encode()))
            uw.write(uconn.send(h11.Request(method=req.method, target=req.target, headers=out)))
            if body:
                uw.write(uconn.send(h11.Data(data=body)))
            uw.write(uconn.send(h11.EndOfMessage()))
            await uw.drain()
            while True:
                ev = await self._next(uconn, ur)
                if isinstance(ev, h11.InformationalResponse):
                    if ev.status_code == 101 and upgrade:
                        if warned is not None:  # kubectl reads no Warning on a 101: the bastion says it
                            self.say(warned.warning())
                        return await self._tunnel(conn, ev, uconn, ur, uw, kreq, reader, writer)
                    continue
                if isinstance(ev, h11.Response):
                    break
                raise h11.RemoteProtocolError("unexpected event from the API server")
            rh = [(k, v) for k, v in ev.headers if k.lower() not in HOP_BY_HOP]
            if warned is not None:
                rh.append((b"warning", warning_header(warned)))
            length = next((v for k, v in ev.headers if k.lower() == b"content-length"), None)
            if length is not None:
                rh.append((b"content-length", length))
            self._send(conn, writer, h11.Response(status_code=ev.status_code, headers=rh, reason=ev.reason))
            while True:
                ev = await self._next(uconn, ur)
                if isinstance(ev, h11.Data):
                    self._send(conn, writer, h11.Data(data=ev.data))
                    await writer.drain()  # backpressure: a slow kubectl slows the stream, memory stays bounded
                elif isinstance(ev, h11.EndOfMessage):
                    self._send(conn, writer, h11.EndOfMessage())
                    await writer.drain()
                    return True
                else:
                    return False
        except h11.RemoteProtocolError as e:
            log.warning("kube proxy: the API server sent a malformed response: %s", e)
            if conn.our_state is h11.SEND_RESPONSE:
                return self._status(conn, writer, 502, "BadGateway", "bastion: malformed answer from the API server")
            return False
        finally:
            with contextlib.suppress(Exception):
                uw.close()

    async def _tunnel(self, conn: h11.Connection, resp: h11.InformationalResponse, uconn: h11.Connection,
                      ur: asyncio.StreamReader, uw: asyncio.StreamWriter, kreq: KubeRequest,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """101 from the API server: hand kubectl the same switch, then relay bytes both ways until one side ends."""
        keep = {b"upgrade", b"connection", b"sec-websocket-accept", b"sec-websocket-protocol",
                b"sec-websocket-extensions"}
        self._send(conn, writer, h11.InformationalResponse(status_code=101, headers=[
            (k, v) for k, v in resp.headers if k.lower() in keep], reason=resp.reason))
        client_rest, _ = conn.trailing_data
        server_rest, _ = uconn.trailing_data
        if client_rest:
            uw.write(client_rest)
        if server_rest:
            writer.write(server_rest)
        what = kreq.describe()
        self.event(f"kube: {what}: stream opened")

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        a = asyncio.ensure_future(pump(reader, uw))
        b = asyncio.ensure_future(pump(ur, writer))
        try:
            await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            a.cancel()
            b.cancel()
            await asyncio.gather(a, b, return_exceptions=True)
            self.event(f"kube: {what}: stream closed")
        return False
