"""The menu's RPC handlers: what the session process (the Textual menu, treated as hostile) may ask the daemon.

Identity is the connection's, never the request's: every handler acts for ``ctx``. Handlers get the daemon's
:class:`~bastion.services.Services`, the connection's context, the channel's client side and its broker -- never the
daemon -- so a test drives them with a ``Services`` of its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from bastion.context import ConnectionContext
from bastion.oversight.live import LiveSession
from bastion.rpc.budget import fit
from bastion.rpc.proto import LOG_LEVELS, LOGIN_METHODS
from bastion.rpc.recordings import RecordingHandlers
from bastion.rpc.server import Handler, RefusedRequest
from bastion.rpc.signin import SignInHandlers
from bastion.services import Services
from bastion.sessions.broker import Broker
from bastion.sessions.client import ClientSide
from bastion.sessions.watch import Elsewhere, NotWatchable, Watch
from bastion.store.approvals import DecisionRefused

log = logging.getLogger(__name__)

MENU_LOG_LINES = 200  # a session process's log lines the daemon writes; a hostile one cannot flood the log
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # escaped in its log lines (tabs and newlines kept)


def request_id(params: dict[str, Any]) -> int:
    rid = params.get("id", "")
    if not isinstance(rid, str) or not rid.isdigit() or len(rid) > 12:
        raise RefusedRequest("bad_request", "id must be a request number")
    return int(rid)


class MenuHandlers:
    """The handlers of one connection's menu."""

    def __init__(self, services: Services, ctx: ConnectionContext, client: ClientSide, broker: Broker,
                 start: dict[str, Any] | None = None):
        self.services, self.ctx, self.client, self.broker = services, ctx, client, broker
        self.start = start  # the screen the menu opens on (``ssh -t bastion review N``), told in hello
        self.watch = Watch(services, ctx)
        self.recordings = RecordingHandlers(services, ctx, client)
        self.signin = SignInHandlers(services, ctx, self.hello)
        self._log_lines = 0

    def table(self) -> dict[str, Handler]:
        """Method name -> handler; until a pending OIDC login succeeds, only the login methods answer."""
        table: dict[str, Handler] = {
            "hello": self.hello, "resources.list": self.resources, "resource.open": self.open,
            "queue.list": self.queue, "requests.mine": self.mine, "request.decide": self.decide,
            "request.revoke": self.revoke, "sessions.live": self.live, "session.observe": self.observe,
            "session.terminate": self.terminate, "recordings.list": self.recordings.listing,
            "recording.detail": self.recordings.detail, "recording.play": self.recordings.play,
            "recording.bookmark": self.recordings.bookmark, "recording.review": self.recordings.review,
            "timeline": self.recordings.timeline,
            "login.start": self.signin.start, "login.wait": self.signin.wait, "login.cancel": self.signin.cancel,
            "log": self.log,
        }
        return {name: self._gated(name, h) for name, h in table.items()}

    def _gated(self, method: str, handler: Handler) -> Handler:
        async def gated(params: dict[str, Any]) -> Any:
            if self.ctx.pending_login and method not in LOGIN_METHODS:
                raise RefusedRequest("login_required", "sign in first")
            return await handler(params)

        return gated

    async def log(self, params: dict[str, Any]) -> None:
        """A log record of the session process, written to the daemon's log under the operator's name."""
        level = params.get("level", "")
        if level not in LOG_LEVELS:
            raise RefusedRequest("bad_level", f"level must be one of {', '.join(LOG_LEVELS)}")
        self._log_lines += 1
        if self._log_lines > MENU_LOG_LINES:
            if self._log_lines == MENU_LOG_LINES + 1:
                log.warning("tui[%s]: more than %d log lines; dropping the rest", self.ctx.who, MENU_LOG_LINES)
            return
        text = CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", params.get("message", ""))
        text = text.replace("\n", "\n    | ")  # a traceback stays readable; no line can pass for the daemon's own
        log.log(getattr(logging, level), "tui[%s]: %s", self.ctx.who, text)

    async def hello(self, params: dict[str, Any]) -> dict[str, Any]:
        ctx, g = self.ctx, self.ctx.grants
        return {"user": ctx.username, "groups": sorted(ctx.groups), "roles": list(g.roles), "review": g.review,
                "audit": g.audit, "server": ctx.server_name, "login_required": ctx.pending_login,
                "start": self.start}

    async def resources(self, params: dict[str, Any]) -> dict[str, Any]:
        cfg, ctx = self.services.config, self.ctx
        out: list[dict[str, Any]] = [
            {"name": n, "kind": cfg.resources[n].kind, "description": cfg.resources[n].description, "access": "open"}
            for n in ctx.grants.permitted(cfg.resources)]
        for n in ctx.grants.requestable_only(cfg.resources):
            terms = ctx.grants.request_terms(n)
            assert terms is not None
            grant = await asyncio.to_thread(self.services.approvals.db.access_granted, ctx.username, n, terms.ttl)
            out.append({"name": n, "kind": cfg.resources[n].kind, "description": cfg.resources[n].description,
                        "access": "granted" if grant else "request", "until": grant.until if grant else None,
                        "ttl": terms.ttl})
        return {"resources": sorted(out, key=lambda r: r["name"])}

    async def open(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.client.opening:
            raise RefusedRequest("busy", "a session is already open on this connection")
        out = await self.broker.open(params.get("name", ""), command=None, reason=params.get("reason", ""))
        return out.as_dict()

    def _reviewer(self) -> None:
        if not self.ctx.grants.review:
            raise RefusedRequest("forbidden", "you have no reviewer role")

    async def queue(self, params: dict[str, Any]) -> dict[str, Any]:
        self._reviewer()
        pending, history = await self.services.approvals.queue(self.ctx)
        # pending requests are shown whole (a reviewer approves what it reads); those that do not fit are counted
        shown, more = fit([r.as_dict() for r in pending], 0.6)
        past, _ = fit([r.as_dict() for r in history], 0.2)
        return {"pending": shown, "history": past, "more_pending": more}

    async def mine(self, params: dict[str, Any]) -> dict[str, Any]:
        shown, more = fit([r.as_dict() for r in await self.services.approvals.mine(self.ctx)], 0.8)
        return {"requests": shown, "more": more}

    async def revoke(self, params: dict[str, Any]) -> dict[str, Any]:
        self._reviewer()
        rid = request_id(params)
        try:
            revoked = await self.services.approvals.revoke(self.ctx, rid, params.get("reason", ""))
        except DecisionRefused as e:
            raise RefusedRequest("refused", str(e)) from None
        return revoked.as_dict()

    async def decide(self, params: dict[str, Any]) -> dict[str, Any]:
        rid, decision = request_id(params), params.get("decision", "")
        if decision not in ("approve", "deny"):
            raise RefusedRequest("bad_request", "decision must be approve or deny")
        try:
            decided = await self.services.approvals.decide(self.ctx, rid, decision == "approve",
                                                           params.get("reason", ""))
        except DecisionRefused as e:
            raise RefusedRequest("refused", str(e)) from None
        return decided.as_dict()

    # -- live sessions: list, observe, terminate ---------------------------------------------------------
    async def live(self, params: dict[str, Any]) -> dict[str, Any]:
        g = self.ctx.grants
        if not (g.review or g.audit):
            raise RefusedRequest("forbidden", "live sessions are for reviewers and auditors")
        shown, more = fit(await self.watch.listing(), 0.8)
        return {"sessions": shown, "more": more}

    def _watchable(self, sid: object) -> LiveSession:
        try:
            return self.watch.local(sid)
        except NotWatchable as e:
            raise RefusedRequest("not_found", str(e)) from None

    def _occupy(self) -> None:
        if self.client.opening:
            raise RefusedRequest("busy", "a session is already open on this connection")
        self.client.opening = True

    async def observe(self, params: dict[str, Any]) -> dict[str, Any]:
        sid = params.get("id", "")
        self._occupy()
        try:
            title, reason = await self.watch.observe_id(self.client, sid)
        except NotWatchable as e:
            raise RefusedRequest("not_found", str(e)) from None
        except Elsewhere as e:
            raise RefusedRequest("elsewhere", str(e)) from None
        finally:
            self.client.opening = False
        return {"ok": True, "message": f"{title}: {reason}", "session_id": sid}

    async def terminate(self, params: dict[str, Any]) -> dict[str, Any]:
        sid, reason = params.get("id", ""), params.get("reason", "")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            raise RefusedRequest("bad_request", "give a reason (the operator sees it), at most 500 characters")
        reason = " ".join(reason.split())
        if not reason.isprintable():  # it is written on the operator's terminal: no escape sequences
            raise RefusedRequest("bad_request", "the reason must be printable text")
        if isinstance(sid, str) and self.services.live.get(sid) is None:
            remote = await self.watch.remote(sid)
            if remote:
                r = remote[0]
                await self.watch.terminate_remote(r, reason)
                if r.node == self.services.node:  # another process of this node: it ends it now
                    return {"ok": True, "message": f"terminated {r.user}@{r.resource} ({r.id})"}
                return {"ok": True, "message": f"terminating {r.user}@{r.resource} on node {r.node}"}
        live = self._watchable(sid)
        await self.watch.terminate(live, reason)
        return {"ok": True, "message": f"terminated {live.user}@{live.resource} ({live.sid})"}
