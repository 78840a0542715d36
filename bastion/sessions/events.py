"""What another process or node said (``Services.publish`` there): approvals changed, or a session this process
carries is to end or is being observed from there."""

from __future__ import annotations

import logging
from typing import Any

from bastion.services import Services

log = logging.getLogger(__name__)


def same_node(a: str, b: str) -> bool:
    """Two connection processes (``node/PID``) of one node."""
    return a.split("/", 1)[0] == b.split("/", 1)[0]


def handle_event(services: Services, event: dict[str, Any]) -> None:
    """Act on one published event (the same for every transport: LISTEN, the node's process hub)."""
    kind = event.get("kind")
    if kind not in ("terminate", "observe"):
        services.approvals.remote_event(event)
        return
    live = services.live.get(str(event.get("id", "")))
    if live is None or event.get("node") != services.node:
        return
    by = str(event.get("by", "?"))[:255]
    if kind == "terminate":
        log.warning("terminating session %s of %s at the request of %s in another process", live.sid, live.user, by)
        live.terminate(by, str(event.get("reason", ""))[:500])
        return
    origin = str(event.get("from", "?"))[:255]
    live.tee.writer.marker(f"observed by {by}" if same_node(origin, services.node)
                           else f"observed by {by} (from node {origin.split('/', 1)[0]})")
