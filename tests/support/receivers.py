"""Real notification receivers on loopback: an HTTP server that checks each webhook's HMAC signature, timestamp and
JSON schema (and a Slack-compatible endpoint that checks the blocks), and an SMTP server (aiosmtpd) that requires
STARTTLS and a login before it takes a mail. They check independently of the bastion's own code, as a receiver
written from docs/notifications.md would."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
import time
from collections.abc import Callable
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.keys import free_port

NULLABLE_STR = (str, type(None))
SCHEMA: dict[str, tuple[type, ...]] = {
    "version": (int,), "id": (str,), "event": (str,), "time": (str,), "node": (str,), "actor": (str,),
    "user": NULLABLE_STR, "resource": NULLABLE_STR, "resource_kind": NULLABLE_STR, "session_id": NULLABLE_STR,
    "request_id": (int, type(None)), "request_kind": NULLABLE_STR, "text": NULLABLE_STR, "rule": NULLABLE_STR,
    "reason": NULLABLE_STR, "status": NULLABLE_STR, "status_reason": NULLABLE_STR,
    "approvals": (dict, type(None)), "approver_roles": (list,), "created_at": NULLABLE_STR,
    "expires_at": NULLABLE_STR, "decisions": (list,), "hint": NULLABLE_STR,
}
EVENTS = {"request.created", "request.decided", "request.expired", "request.withdrawn", "request.cancelled",
          "access.granted", "access.revoked", "session.terminated", "moderation.needed", "command.blocked"}


def schema_problems(body: Any) -> list[str]:
    """What is wrong with a webhook body, by the documented schema (every key present, of its type)."""
    if not isinstance(body, dict):
        return ["not an object"]
    out = [f"{k}: missing" for k in SCHEMA if k not in body]
    out += [f"{k}: unexpected" for k in body if k not in SCHEMA]
    out += [f"{k}: {type(body[k]).__name__}" for k, types in SCHEMA.items() if k in body
            and not isinstance(body[k], types)]
    if body.get("version") != 1 or body.get("event") not in EVENTS or len(str(body.get("id"))) != 64:
        out.append(f"version/event/id: {body.get('version')} {body.get('event')} {body.get('id')}")
    if isinstance(body.get("approvals"), dict) and set(body["approvals"]) != {"given", "needed"}:
        out.append(f"approvals: {body['approvals']}")
    return out


class HookReceiver:
    """``/hook``: a signed webhook (refused with 401 when the signature or the timestamp is wrong, 422 when the
    schema is); ``/slack``: an incoming-webhook message. Can be stopped and started again on the same port."""

    def __init__(self, secret: bytes, port: int | None = None) -> None:
        self.secret, self.port = secret, port or free_port()
        self.hooks: list[dict[str, Any]] = []
        self.slack: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _check(self, headers: Any, data: bytes) -> tuple[int, str]:
        ts, sig = headers.get("X-Bastion-Timestamp", ""), headers.get("X-Bastion-Signature", "")
        mac = hmac.new(self.secret, ts.encode() + b"." + data, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(f"sha256={mac}", sig):
            return 401, "bad signature"
        if not ts.isdigit() or abs(time.time() - int(ts)) > 300:
            return 401, "stale timestamp"
        problems = schema_problems(json.loads(data))
        return (422, "; ".join(problems)) if problems else (204, "")

    def _handle(self, path: str, headers: Any, data: bytes) -> tuple[int, str]:
        if path == "/hook":
            code, why = self._check(headers, data)
            with self._lock:
                if code == 204:
                    self.hooks.append(json.loads(data) | {"_delivery": headers.get("X-Bastion-Delivery")})
                else:
                    self.refused.append(why)
            return code, why
        if path == "/slack":
            msg = json.loads(data)
            ok = isinstance(msg.get("text"), str) and isinstance(msg.get("blocks"), list)
            with self._lock:
                (self.slack.append(msg) if ok else self.refused.append(f"slack: {msg}"))
            return (200, "ok") if ok else (400, "not a Slack message")
        return 404, "no such hook"

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                code, why = outer._handle(self.path, self.headers, data)
                self.send_response(code)
                self.send_header("Content-Length", str(len(why)))
                self.end_headers()
                self.wfile.write(why.encode())

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait(self, what: Callable[[HookReceiver], bool], timeout: float = 20, why: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not what(self):
            assert time.monotonic() < deadline, f"receiver: {why} (hooks {[h['event'] for h in self.hooks]}, " \
                                                f"slack {len(self.slack)}, refused {self.refused})"
            time.sleep(0.05)

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [h for h in self.hooks if h["event"] == name]


class MailReceiver:
    """An SMTP server on loopback that offers STARTTLS (required) and takes a mail only after a login."""

    def __init__(self, cert: Path, key: Path, user: str, password: str) -> None:
        self.port = free_port()
        self.mails: list[tuple[list[str], Message]] = []
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cert), str(key))
        outer = self

        class Box:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                outer.mails.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
                return "250 OK"

        def login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode()
            return AuthResult(success=ok)

        self.controller = Controller(Box(), hostname="127.0.0.1", port=self.port, tls_context=ctx,
                                     require_starttls=True, authenticator=login, auth_require_tls=True)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def wait(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.mails) < n:
            assert time.monotonic() < deadline, f"{len(self.mails)} mail(s), expected {n}"
            time.sleep(0.05)
