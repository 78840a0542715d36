"""The node process: what the single-process daemon does besides serving connections -- migrate the store, close
the books of a previous run, heartbeats and the cluster's bookkeeping, chain signing, indexing, retention -- and
the bridge between this node's processes and other nodes (LISTEN/NOTIFY when they share a PostgreSQL store).

Each connection process announces the sessions it carries; when one ends (crashed or killed; the supervisor says
so), those it left ``active`` are marked interrupted (their recordings chained as far as they got) and the requests
they held cancelled."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
from typing import Any

from bastion.config import Config
from bastion.daemon import Daemon, reload_services
from bastion.metrics.logs import set_process
from bastion.store.listen import CHANNEL
from bastion.workers.child import die_with_parent
from bastion.workers.hub import HubClient

log = logging.getLogger(__name__)


def run(config: Config, hub: socket.socket) -> int:
    die_with_parent("bastion-node")
    set_process(worker="node")
    for sig in (signal.SIGINT, signal.SIGHUP):  # the supervisor stops it; a reload during migration is no death
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
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

    carried: dict[int, set[str]] = {}  # connection process -> the live sessions it carries

    def on_message(msg: dict[str, Any]) -> None:
        kind, pid, sid = msg.get("kind"), msg.get("from"), msg.get("id")
        if msg.get("to") == "all" and isinstance(msg.get("event"), dict):
            to_other_nodes(msg["event"])  # a connection process's news, for the other nodes
        elif kind == "listening" and pid is None:  # the supervisor listens now
            daemon.listening = True
        elif kind == "notify":  # a connection process enqueued notifications: deliver them now
            daemon.notifier.wake()
        elif kind == "closed" and isinstance(sid, str):
            s.spawn(s.auditing.closed(sid))
        elif kind == "live.add" and isinstance(pid, int) and isinstance(sid, str):
            carried.setdefault(pid, set()).add(sid)
        elif kind == "live.remove" and isinstance(pid, int) and isinstance(sid, str):
            carried.get(pid, set()).discard(sid)
        elif kind == "exited" and isinstance(pid, int):
            left = carried.pop(pid, set())
            if left:
                s.spawn(_ended(daemon, pid, left))

    s.publish = publish
    daemon.on_event = from_other_nodes  # LISTEN feeds the hub, not this process
    await hub.start(on_message)
    await daemon.start(listen=False)
    hub.send({"to": "supervisor", "kind": "ready"})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload_services(s))
    await stop.wait()
    for pid, sids in list(carried.items()):  # the supervisor stops last: whatever is still carried was cut off
        if sids:
            await _ended(daemon, pid, sids)
    await daemon.stop()
    hub.stop()
    return 0


async def _ended(daemon: Daemon, pid: int, sids: set[str]) -> None:
    """A connection process ended with these sessions live: close their books."""
    s = daemon.services
    n = await asyncio.to_thread(s.store.mark_interrupted, s.node, ids=sids)
    ids: list[int] = []
    for sid in sids:
        ids += await asyncio.to_thread(s.approvals.db.cancel_pending, session_id=sid,
                                       reason="the connection's process ended while the request was pending")
    await s.approvals.cancelled(ids)
    log.warning("connection process %d ended with %d active session(s) and %d pending request(s): closed",
                pid, n, len(ids))
