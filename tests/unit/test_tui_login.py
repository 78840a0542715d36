"""The sign-in screen of a pending OIDC login, driven with Textual's Pilot against a scripted broker."""

from __future__ import annotations

import threading
from typing import Any

import segno
from textual.widgets import DataTable, Static

from bastion.rpc.proto import RpcError
from tui.app import MenuApp
from tui.login import LoginScreen, countdown, qr_text


class LoginBroker:
    """A daemon whose connection must sign in first; ``login.wait`` blocks until the test says how it ended."""

    def __init__(self, outcome: str = "ok"):
        self.outcome = outcome
        self.signed_in = False
        self.release = threading.Event()
        self.calls: list[str] = []

    def call(self, method: str, **params: Any) -> Any:
        self.calls.append(method)
        if method == "hello":
            return {"user": "ann" if self.signed_in else "", "groups": ["ops"] if self.signed_in else [],
                    "roles": ["operators"] if self.signed_in else [], "review": False, "audit": False,
                    "login_required": not self.signed_in}
        if method == "login.start":
            return {"verification_uri": "http://127.0.0.1:9/device", "user_code": "WDJB-MJHT",
                    "verification_uri_complete": "http://127.0.0.1:9/device?user_code=WDJB-MJHT", "expires_in": 600}
        if method == "login.wait":
            self.release.wait(10)
            if self.outcome != "ok":
                raise RpcError("login_failed", "the sign-in was declined at the identity provider")
            self.signed_in = True
            return self.call("hello")
        if method == "login.cancel":
            self.release.set()
            return {}
        if method == "resources.list":
            assert self.signed_in, "the menu asked for resources before the sign-in"
            return {"resources": [{"name": "web", "kind": "ssh", "description": "web server"}]}
        raise AssertionError(method)


def text(app: MenuApp, wid: str) -> str:
    return str(app.screen.query_one(wid, Static).render())


async def test_sign_in_shows_code_and_qr_then_the_menu() -> None:
    broker = LoginBroker("ok")
    app = MenuApp(broker)  # type: ignore[arg-type]
    async with app.run_test(size=(100, 60)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, LoginScreen)
        assert "WDJB-MJHT" in text(app, "#login-where") and "http://127.0.0.1:9/device" in text(app, "#login-where")
        assert "expires in 9:" in text(app, "#login-status") or "expires in 10:00" in text(app, "#login-status")
        assert "▀" in text(app, "#login-qr") or "▄" in text(app, "#login-qr")
        broker.release.set()
        for _ in range(50):
            await pilot.pause(0.05)
            if not isinstance(app.screen, LoginScreen):
                break
        table = app.query_one(DataTable)
        assert table.row_count == 1 and "ann" in app.sub_title
    assert broker.calls.index("login.wait") < broker.calls.index("resources.list")


async def test_declined_sign_in_says_why_and_quit_cancels() -> None:
    broker = LoginBroker("denied")
    app = MenuApp(broker)  # type: ignore[arg-type]
    async with app.run_test(size=(100, 60)) as pilot:
        await pilot.pause()
        broker.release.set()
        for _ in range(50):
            await pilot.pause(0.05)
            if "declined" in text(app, "#login-status"):
                break
        assert "Sign-in failed" in text(app, "#login-status") and "declined" in text(app, "#login-status")
        assert "resources.list" not in broker.calls
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 1


def test_qr_text_encodes_the_url() -> None:
    url = "http://127.0.0.1:9/device?user_code=WDJB-MJHT"
    drawn = qr_text(url).splitlines()
    size = segno.make(url, error="l").symbol_size(scale=1, border=2)
    assert len(drawn[0]) == size[0] and len(drawn) == (size[1] + 1) // 2
    assert countdown(61.5) == "1:01" and countdown(-3) == "0:00"
