"""What another process or node said (``Services.publish`` there): approvals changed, or a session this process
carries is to end or is being observed from there."""

from __future__ import annotations

import logging
from typing import Any

from bastion.oversight.live import LiveSession
from bastion.services import Services

log = logging.getLogger(__name__)


def handle_event(services: Services, event: dict[str, Any]) -> None:
    """Act on one published event (the same for every transport: LISTEN, the node's process hub)."""
    kind = event.get("kind")
    if kind not in ("terminate", "observe", "moderate"):
        services.approvals.remote_event(event)
        return
    live = services.live.get(str(event.get("id", "")))
    if live is None or event.get("node") != services.node:
        return
    by = str(event.get("by", "?"))[:255]
    if kind == "moderate":
        moderate(live, by, str(event.get("state", "")))
        return
    if kind == "terminate":
        log.warning("terminating session %s of %s at the request of %s in another process", live.sid, live.user, by)
        live.terminate(by, str(event.get("reason", ""))[:500])
        return
    origin = str(event.get("from", "?"))[:255]  # another node, or another connection process of this one
    live.tee.writer.marker(f"observed by {by}" if origin == services.node else f"observed by {by} (from node {origin})")


def moderate(live: LiveSession, by: str, state: str) -> None:
    """A moderator in another process or node joined, is still watching (a beat), or left this session.

    The other process checked the moderator's roles against the resource's (its connection holds the grants); the
    operator is never their own moderator, whatever an event says."""
    m = live.moderation
    if m is None or by == live.user:
        return
    if state in ("join", "beat"):
        if m.join(by):
            live.tee.writer.marker(f"moderator {by} joined")
    elif state == "leave" and m.leave(by):
        live.tee.writer.marker(f"moderator {by} left")
