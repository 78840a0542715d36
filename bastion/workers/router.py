"""The supervisor's switchboard: which child is which, and where each hub message goes (events to every other
process, books to the node process, sign-in counting to the supervisor itself)."""

from __future__ import annotations

import contextlib
import selectors
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bastion.ssh.admission import ConnectionCounter
from bastion.workers.hub import Peer


@dataclass
class Child:
    pid: int
    peer: Peer
    ip: str | None  # counted against the limits (None: refused, or released: not counted)
    logins: list[str] = field(default_factory=list)  # source addresses of its pending sign-ins
    refused: bool = False  # only says "too many connections"


class Router:
    """Children, the node process, and the routes between them (the supervisor's selector registers the peers)."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.children: dict[int, Child] = {}
        self.node: Child | None = None
        self.pending_logins: Counter[str] = Counter()
        self.counter = ConnectionCounter()  # connections counted against the limits, as the one-process daemon does
        self.ready = False

    def route(self, sender: int, msg: dict[str, Any]) -> None:
        to = msg.get("to")
        from_node = self.node is not None and sender == self.node.pid
        if to == "supervisor" and from_node and msg.get("kind") == "ready":
            self.ready = True
        elif to == "supervisor" and msg.get("kind") == "released" and sender in self.children:
            self._release(self.children[sender])
        elif to == "supervisor" and msg.get("kind") in ("login.take", "login.give") and sender in self.children:
            self.logins(self.children[sender], msg)
        elif to in ("all", "children") and isinstance(msg.get("event"), dict):
            for c in list(self.children.values()):
                if c.pid != sender:
                    c.peer.send({"event": msg["event"]})
            if to == "all" and not from_node and self.node is not None:
                self.node.peer.send(msg)
        elif to == "node" and self.node is not None and not from_node:
            self.node.peer.send(msg | {"from": sender})

    def read_peer(self, pid: int, c: Child | None = None) -> None:
        c = c or self.children.get(pid) or (self.node if self.node is not None and self.node.pid == pid else None)
        if c is None:
            return
        for _ in range(64):  # what it has sent, within reason (the others get their turn)
            msgs = c.peer.read()
            if msgs is None:
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(c.peer.sock)
                return
            if not msgs:
                return
            for msg in msgs:
                self.route(pid, msg)

    def flush_peer(self, pid: int) -> None:
        c = self.children.get(pid) or (self.node if self.node is not None and self.node.pid == pid else None)
        if c is not None and c.peer.flush():
            self.sel.modify(c.peer.sock, selectors.EVENT_READ, ("peer", pid))

    def logins(self, c: Child, msg: dict[str, Any]) -> None:
        """Pending sign-ins per source address, for all connection processes (the OIDC login service asks)."""
        ip = str(msg.get("ip", ""))[:64]
        if msg["kind"] == "login.give":
            if ip in c.logins:
                c.logins.remove(ip)
                self._give(ip)
            return
        limit = msg.get("limit")
        ok = isinstance(limit, int) and self.pending_logins[ip] < limit
        if ok:
            self.pending_logins[ip] += 1
            c.logins.append(ip)
        c.peer.send({"answer": msg.get("ask"), "ok": ok})

    def _give(self, ip: str) -> None:
        self.pending_logins[ip] -= 1
        if self.pending_logins[ip] <= 0:
            del self.pending_logins[ip]

    def _release(self, c: Child) -> None:
        """The connection no longer counts against the limits (closed; its process may still be closing books)."""
        if c.ip is not None:
            self.counter.release(c.ip)
            c.ip = None

