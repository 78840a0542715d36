"""The sign-in screen of a connection whose key is not bound yet: device flow URL, code, a QR code, a countdown.

The daemon runs the flow (``login.start`` / ``login.wait``); this screen only shows what the user needs and waits
in a worker thread. On success the connection's key is bound and the menu loads; nothing secret passes through here.
"""

from __future__ import annotations

import time
from typing import Any

import segno
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from bastion.rpc.proto import RpcClient, RpcError


def qr_text(data: str) -> str:
    """A QR code of ``data`` drawn with half blocks (two modules rows per text line), dark on light."""
    rows = [list(r) for r in segno.make(data, error="l").matrix_iter(scale=1, border=2)]
    if len(rows) % 2:
        rows.append([0] * len(rows[0]))
    glyph = {(0, 0): "█", (1, 0): "▄", (0, 1): "▀", (1, 1): " "}  # light background, dark modules
    return "\n".join("".join(glyph[(bool(top), bool(bot))] for top, bot in zip(rows[i], rows[i + 1], strict=True))
                     for i in range(0, len(rows), 2))


def countdown(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 60}:{s % 60:02d}"


class LoginScreen(Screen[dict[str, Any] | None]):
    """Dismissed with the new ``hello`` on success, None when the user quits."""

    BINDINGS = [Binding("q", "quit_login", "Quit"), Binding("r", "retry", "New code", show=False)]

    def __init__(self, rpc: RpcClient):
        super().__init__()
        self.rpc = rpc
        self.deadline = 0.0
        self.waiting = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        with Vertical(id="login-box"):
            yield Static("Sign in to continue", id="login-title")
            yield Static("", id="login-where")
            yield Static("", id="login-status")  # above the QR code: a short terminal still shows the countdown
            yield Static("", id="login-qr")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)
        self._start()

    def _start(self) -> None:
        try:
            code = self.rpc.call("login.start")
        except (RpcError, OSError) as e:
            self._say(f"Cannot start the sign-in: {e}. Press r to try again, q to quit.")
            return
        where = code["verification_uri_complete"] or code["verification_uri"]
        self.query_one("#login-where", Static).update(
            f"Open  {code['verification_uri']}\nand enter the code  {code['user_code']}\n\n"
            f"or open  {where}  (the QR code below)")
        self.query_one("#login-qr", Static).update(qr_text(where))
        self.deadline = time.monotonic() + float(code["expires_in"])
        self.waiting = True
        self._tick()
        self._wait()

    @work(thread=True, exclusive=True)
    def _wait(self) -> None:
        try:
            hello = self.rpc.call("login.wait")
        except (RpcError, OSError) as e:
            self.app.call_from_thread(self._failed, str(e))
            return
        self.app.call_from_thread(self.dismiss, hello)

    def _failed(self, why: str) -> None:
        self.waiting = False
        self.query_one("#login-qr", Static).update("")
        self._say(f"Sign-in failed: {why}\nPress r for a new code, q to quit.")

    def _tick(self) -> None:
        if self.waiting:
            self._say(f"Waiting for you to sign in … the code expires in {countdown(self.deadline - time.monotonic())}")

    def _say(self, text: str) -> None:
        self.query_one("#login-status", Static).update(text)

    def action_retry(self) -> None:
        if not self.waiting:
            self._start()

    def action_quit_login(self) -> None:
        if self.waiting:
            try:
                self.rpc.call("login.cancel")
            except (RpcError, OSError):
                pass
        self.dismiss(None)
