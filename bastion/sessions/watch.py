"""Live sessions for reviewers and auditors: which they may watch (here and on other nodes), watching one read-only,
and ending one with a reason the operator sees. Every step is an audit event."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.context import ConnectionContext
from bastion.oversight.live import LiveSession, Observer, ReadOnlyView, RemoteObserver
from bastion.oversight.moderation import BEAT, may_moderate
from bastion.services import Services
from bastion.sessions.client import ClientSide
from bastion.store.rows import SessionRecord
from policies.access import may_watch

log = logging.getLogger(__name__)


class NotWatchable(LookupError):
    """No such live session that this user may watch (the same answer for unknown and forbidden)."""


def client_liveness(client: ClientSide) -> Callable[[], None]:
    """While a moderator watches, their *client* must answer: keepalives every :data:`BEAT` seconds of silence, and
    the connection closed after two unanswered (a frozen laptop, a dead link, a stopped ssh): the observation then
    ends, and the moderator stops counting. Returns what restores the connection's own keepalive."""
    get = getattr(client.chan, "get_extra_info", None)
    conn = get("connection") if get is not None else None
    if conn is None or not hasattr(conn, "set_keepalive"):
        return lambda: None
    before = (getattr(conn, "_keepalive_interval", 0) or None, getattr(conn, "_keepalive_count_max", 3))
    conn.set_keepalive(BEAT, 2)
    return lambda: conn.set_keepalive(*before)


class Elsewhere(LookupError):
    """The session is carried by a node whose recordings this node cannot read: observe it from there."""


class Watch:
    """What one reviewer or auditor may see and do to the live sessions."""

    def __init__(self, services: Services, ctx: ConnectionContext):
        self.services, self.ctx = services, ctx

    def local(self, sid: object) -> LiveSession:
        """A live session on this node that this user may watch."""
        s = self.services
        live = s.live.get(sid) if isinstance(sid, str) and len(sid) <= 64 else None
        if live is None or not may_watch(self.ctx.grants, s.config.roles, live.resource):
            raise NotWatchable(f"no live session {str(sid)[:64]!r} that you may watch on this node")
        return live

    async def remote(self, sid: str | None = None) -> list[SessionRecord]:
        """Active sessions that other nodes -- or other connection processes of this node -- carry (they share the
        store) and this user may watch."""
        s = self.services
        if not s.cluster:
            return []
        rows = await asyncio.to_thread(s.store.sessions, 500, outcome="active")
        return [r for r in rows if s.live.get(r.id) is None and (sid is None or r.id == sid)
                and may_watch(self.ctx.grants, s.config.roles, r.resource)]

    async def listing(self) -> list[dict[str, Any]]:
        """The live sessions this user may watch, this node's first."""
        s, g = self.services, self.ctx.grants
        here = [x.as_dict() for x in s.live.list() if may_watch(g, s.config.roles, x.resource)]
        now = time.time()
        there = [{"id": r.id, "user": r.user, "resource": r.resource, "kind": r.kind, "mode": r.mode,
                  "command": r.command or "", "client_addr": r.client_addr, "node": r.node,
                  "started": 0, "age": round(now - r.started_at.timestamp(), 1),
                  "observers": [], "remote": True} for r in await self.remote()]
        for x in here + there:  # a moderated session is one reviewers should join (it may be waiting for them)
            res = s.config.resources.get(x["resource"])
            x["moderated"] = res is not None and res.moderators is not None
        return here + there

    async def observe_id(self, client: ClientSide, sid: object) -> tuple[str, str]:
        """Observe the live session ``sid`` wherever it runs (this process, another process or node of the shared
        store): ``(who@resource[ (node N)], why it stopped)``. Raises :class:`NotWatchable`, :class:`Elsewhere`;
        the caller occupies ``client``."""
        if isinstance(sid, str) and self.services.live.get(sid) is None:
            remote = await self.remote(sid)
            if remote:
                r = remote[0]
                path = Path(r.recording) if r.recording else None
                if path is None or not await asyncio.to_thread(path.is_file):
                    raise Elsewhere(f"node {r.node} carries this session and its recording is not on storage this "
                                    "node shares: connect to that node to observe (terminating works from here)")
                where = "" if r.node == self.services.node else f" (node {r.node})"
                return f"{r.user}@{r.resource}{where}", await self.observe_remote(client, r, path)
        live = self.local(sid)
        return f"{live.user}@{live.resource}", await self.observe(client, live)

    async def observe(self, client: ClientSide, live: LiveSession) -> str:
        """Show ``live`` on ``client`` read-only until it ends or the observer leaves; why it stopped."""
        ctx, store = self.ctx, self.services.store
        await asyncio.to_thread(store.audit, ctx.username, "session.observe", "ok", resource=live.resource,
                                session_id=live.sid, client_addr=ctx.peer, user=live.user)
        log.info("%s: observing session %s of %s", ctx.who, live.sid, live.user)
        live.tee.writer.marker(f"observed by {ctx.username}")
        m = live.moderation
        if m is None or not m.qualifies(ctx.username, ctx.grants.roles):
            return await self._run(client, Observer(client.relay, live, ctx.username))
        if m.join(ctx.username, local=True):
            live.tee.writer.marker(f"moderator {ctx.username} joined")
        await self._moderation_event(live.resource, live.sid, live.user, "joined")
        restore = client_liveness(client)
        try:
            return await self._run(client, Observer(client.relay, live, ctx.username))
        finally:
            restore()
            if m.leave(ctx.username):
                live.tee.writer.marker(f"moderator {ctx.username} left")
            await self._moderation_event(live.resource, live.sid, live.user, "left")

    def _moderates(self, resource: str, operator: str) -> bool:
        """This user counts as a moderator of ``operator``'s session on ``resource`` (which requires them)."""
        res = self.services.config.resources.get(resource)
        mods = res.moderators if res is not None else None
        return mods is not None and may_moderate(mods.roles, self.ctx.username, self.ctx.grants.roles, operator)

    async def _moderation_event(self, resource: str, sid: str, operator: str, what: str) -> None:
        await asyncio.to_thread(self.services.store.audit, self.ctx.username, "session.moderate", what,
                                resource=resource, session_id=sid, client_addr=self.ctx.peer, user=operator)

    async def observe_remote(self, client: ClientSide, r: SessionRecord, path: Path) -> str:
        """Observe a session another node carries, from its recording in the shared recordings directory."""
        ctx, s, sid = self.ctx, self.services, r.id
        await asyncio.to_thread(s.store.audit, ctx.username, "session.observe", "ok", resource=r.resource,
                                session_id=sid, client_addr=ctx.peer, user=r.user, node=r.node)
        s.publish({"kind": "observe", "id": sid, "by": ctx.username, "node": r.node, "from": s.node})
        log.info("%s: observing session %s of %s on node %s", ctx.who, sid, r.user, r.node)

        async def still_active() -> bool:
            row = await asyncio.to_thread(s.store.session, sid)
            return row is not None and row.outcome == "active"

        title = f"{r.user}@{r.resource}" + ("" if r.node == s.node else f" on node {r.node}")
        if not self._moderates(r.resource, r.user):
            return await self._run(client, RemoteObserver(client.relay, path, title, still_active))

        def say(state: str) -> None:  # the process that carries the session counts its moderators by these
            s.publish({"kind": "moderate", "id": sid, "by": ctx.username, "state": state, "node": r.node,
                       "from": s.node})

        async def beat() -> None:
            while True:
                await asyncio.sleep(BEAT)
                say("beat")

        say("join")
        await self._moderation_event(r.resource, sid, r.user, "joined")
        beats = asyncio.ensure_future(beat())
        restore = client_liveness(client)
        try:
            return await self._run(client, RemoteObserver(client.relay, path, title, still_active))
        finally:
            restore()
            beats.cancel()
            say("leave")
            await self._moderation_event(r.resource, sid, r.user, "left")

    @staticmethod
    async def _run(client: ClientSide, observer: Observer | RemoteObserver) -> str:
        view: ReadOnlyView = observer
        client.observer = view
        try:
            return await observer.run()
        finally:
            client.observer = None

    async def terminate(self, live: LiveSession, reason: str) -> None:
        """End a session of this node: the operator sees who and why."""
        ctx = self.ctx
        await asyncio.to_thread(self.services.store.audit, ctx.username, "session.terminate", "ok",
                                resource=live.resource, session_id=live.sid, client_addr=ctx.peer, user=live.user,
                                reason=reason)
        log.warning("%s: terminated session %s of %s: %s", ctx.who, live.sid, live.user,
                                            reason)
        live.terminate(ctx.username, reason)

    async def terminate_remote(self, r: SessionRecord, reason: str) -> None:
        """Ask the node that carries a session to end it (it LISTENs); checked here, audited here."""
        ctx, s, sid = self.ctx, self.services, r.id
        await asyncio.to_thread(s.store.audit, ctx.username, "session.terminate", "ok", resource=r.resource,
                                session_id=sid, client_addr=ctx.peer, user=r.user, reason=reason, node=r.node)
        s.publish({"kind": "terminate", "id": sid, "by": ctx.username, "reason": reason, "node": r.node})
        log.warning("%s: asked node %s to terminate session %s of %s: %s", ctx.who, r.node, sid, r.user, reason)
