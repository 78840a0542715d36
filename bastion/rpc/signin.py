"""The menu's sign-in handlers: a connection that proved an unknown key signs in with OIDC from the TUI (device
flow); on success the connection becomes the user's and the key is bound."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bastion.context import ConnectionContext
from bastion.oidc.client import DeviceCode
from bastion.oidc.login import LoginRefused
from bastion.rpc.server import RefusedRequest
from bastion.services import Services


class SignInHandlers:
    """At most one sign-in at a time per connection; a hang-up cancels it (it never completes, nor binds a key)."""

    def __init__(self, services: Services, ctx: ConnectionContext,
                 hello: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]):
        self.services, self.ctx, self.hello = services, ctx, hello
        self.code: DeviceCode | None = None
        self.cancelled: asyncio.Event | None = None

    async def start(self, params: dict[str, Any]) -> dict[str, Any]:
        login = self.services.login
        if not self.ctx.pending_login or login is None:
            raise RefusedRequest("refused", "already signed in")
        if self.code is not None:
            raise RefusedRequest("busy", "a sign-in is already in progress")
        try:
            code = await login.start(self.ctx)
        except LoginRefused as e:
            raise RefusedRequest("login_failed", str(e)) from None
        self.code = code
        self.cancelled = asyncio.Event()
        return {"verification_uri": code.verification_uri, "user_code": code.user_code,
                "verification_uri_complete": code.verification_uri_complete or "",
                "expires_in": min(code.expires_in, login.cfg.login_timeout)}

    async def wait(self, params: dict[str, Any]) -> dict[str, Any]:
        login, code = self.services.login, self.code
        if login is None or code is None:
            raise RefusedRequest("refused", "no sign-in in progress")
        try:
            await login.finish(self.ctx, code, method="device-flow+key", cancelled=self.cancelled)
        except LoginRefused as e:
            raise RefusedRequest("login_failed", str(e)) from None
        finally:
            self.code = None
        return await self.hello({})

    async def cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        self.hung_up()
        return {}

    def hung_up(self) -> None:
        """Cancel the sign-in in progress, if any (the menu asked, or the client went away)."""
        if self.cancelled is not None:
            self.cancelled.set()
