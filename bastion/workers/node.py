"""The node process: what the single-process daemon does besides serving connections -- migrate the store, close
the books of a previous run, heartbeats and the cluster's bookkeeping, chain signing, indexing, retention -- and
the bridge between this node's processes and other nodes (LISTEN/NOTIFY when they share a PostgreSQL store).

A connection process that ends (crashed or killed) is reported by the supervisor; sessions it left ``active`` are
marked interrupted (their recordings chained as far as they got) and its pending requests cancelled."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
from typing import Any

from bastion.config import Config
from bastion.daemon import Daemon, reload_services
from bastion.store.listen import CHANNEL
from bastion.workers.child import die_with_parent
from bastion.workers.hub import HubClient

log = logging.getLogger(__name__)


def run(config: Config, hub: socket.socket) -> int:
    die_with_parent()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    return asyncio.run(_serve(config, hub))


async def _serve(config: Config, hub_sock: socket.socket) -> int:
    daemon = Daemon(config)
    s = daemon.services
    hub = HubClient(hub_sock)
    origin = s.node

    def to_other_nodes(event: dict[str, Any]) -> None:
        if s.store.shared:
            payload = json.dumps(event | {"origin": origin})
            s.spawn(asyncio.to_thread(s.store.notify, CHANNEL, payload))

    def publish(event: dict[str, Any]) -> None:  # this process's own news (requests it cancelled)
        hub.publish(event)
        to_other_nodes(event)

    def from_other_nodes(event: dict[str, Any]) -> None:  # LISTEN: for this node's connection processes
        if event.get("origin") != origin:
            hub.send({"to": "children", "event": event})

    def on_message(msg: dict[str, Any]) -> None:
        if msg.get("to") == "all" and isinstance(msg.get("event"), dict):
            to_other_nodes(msg["event"])  # a connection process's news, for the other nodes
        elif msg.get("kind") == "closed" and isinstance(msg.get("id"), str):
            s.spawn(s.auditing.closed(msg["id"]))
        elif msg.get("kind") == "exited" and isinstance(msg.get("node"), str):
            s.spawn(_ended(daemon, msg["node"]))

    s.publish = publish
    daemon.on_event = from_other_nodes  # LISTEN feeds the hub, not this process
    await hub.start(on_message)
    await daemon.start(listen=False)
    hub.send({"to": "supervisor", "kind": "ready"})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload_services(s))
    await stop.wait()
    await daemon.stop()
    hub.stop()
    return 0


async def _ended(daemon: Daemon, node: str) -> None:
    """A connection process is gone: whatever it left open is closed in the books."""
    s = daemon.services
    n = await asyncio.to_thread(s.store.mark_interrupted, node)
    ids = await asyncio.to_thread(s.approvals.db.cancel_pending, node=node,
                                  reason="the connection's process ended while the request was pending")
    if n or ids:
        log.warning("connection process %s ended with %d active session(s) and %d pending request(s): closed",
                    node, n, len(ids))
    for rid in ids:
        s.publish({"kind": "approval", "id": rid, "node": s.node})
