"""The supervisor of ``processes: per-connection``: it listens, counts connections against the limits, and forks a
connection process (:mod:`bastion.workers.child`) for each accepted socket, after a node process
(:mod:`bastion.workers.node`) has readied the store. It routes the hub's messages between them, reaps them, passes
SIGHUP on (each process re-reads the config) and, on SIGTERM, ends them before it ends.

It runs no event loop and no thread, so forking it is safe: every process starts with the daemon's modules
already imported (``gc.freeze`` keeps those pages shared), and a connection costs a fork, not an interpreter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import selectors
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bastion.config import Config, ConfigError, load_config
from bastion.daemon import RESTART_ONLY, ensure_host_key, node_name
from bastion.sdnotify import monotonic_usec, notify
from bastion.workers import child as connection
from bastion.workers import node as node_process
from bastion.workers.hub import Peer

log = logging.getLogger(__name__)
READY_TIMEOUT = 300.0  # seconds the node process may take to migrate the store and start
SETTLE = 0.5  # seconds a connection over the limits waits for closed ones to say so before it is refused
STOP_GRACE = 30.0  # seconds connection processes get to close their sessions on SIGTERM


@dataclass
class Child:
    pid: int
    peer: Peer
    node: str
    ip: str | None  # counted against the limits (None: refused, not counted)
    logins: list[str] = field(default_factory=list)  # source addresses of its pending sign-ins


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.base = node_name(config)
        self.host_keys = [ensure_host_key(p) for p in config.host_keys]
        self.sel = selectors.DefaultSelector()
        self.listeners: list[socket.socket] = []
        self.children: dict[int, Child] = {}
        self.node: Child | None = None
        self.total = 0
        self.per_ip: Counter[str] = Counter()
        self.pending_logins: Counter[str] = Counter()
        self.ready = False
        self.stopping = False
        self.signals: list[int] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- processes --------------------------------------------------------------------------------------
    def _fork(self, what: str, body: Any) -> tuple[int, Peer]:
        """Fork a process running ``body(hub_end)``; the supervisor keeps the other end of its hub."""
        if threading.active_count() != 1:
            log.error("the supervisor has %d threads: forking it is not safe", threading.active_count())
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        gc.freeze()  # the objects that exist now stay shared with the child (no copy-on-write by the collector)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self._forget(ours)
                code = body(theirs)
            except BaseException:
                log.exception("%s failed", what)
            finally:
                connection.exit_now(code)
        theirs.close()
        peer = Peer(ours, f"{what} {pid}")
        self.sel.register(peer.sock, selectors.EVENT_READ, ("peer", pid))
        return pid, peer

    def _forget(self, keep: socket.socket) -> None:
        """In a new child: close what is the supervisor's (listeners, other hubs, the signal pipe)."""
        signal.set_wakeup_fd(-1)
        for sock in self.listeners:
            sock.close()
        for c in [*self.children.values(), *([self.node] if self.node else [])]:
            c.peer.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        with contextlib.suppress(Exception):
            self.sel.close()
        keep.close()

    def start_node(self) -> None:
        pid, peer = self._fork("node process", lambda hub: node_process.run(self.config, hub))
        self.node = Child(pid, peer, self.base, None)

    def accept(self, lsock: socket.socket) -> None:
        try:
            conn, addr = lsock.accept()
        except OSError:
            return
        ip = str(addr[0])
        lim = self.config.limits
        over = self.total >= lim.max_connections or self.per_ip[ip] >= lim.max_connections_per_source
        if over:  # a connection that just closed may not have said so yet (a health check's): hear the hub first
            self.settle(ip, SETTLE)
            over = self.total >= lim.max_connections or self.per_ip[ip] >= lim.max_connections_per_source
        if over and (self.total >= 2 * lim.max_connections or self.per_ip[ip] >= 2 * lim.max_connections_per_source):
            conn.close()  # far over: not even a process to say so
            return
        if over:
            log.warning("refusing connection from %s: connection limit reached", ip)
        config, keys = self.config, self.host_keys

        def body(hub: socket.socket) -> int:
            return connection.run(config, conn, hub, over, keys)

        pid, peer = self._fork("connection process", body)
        conn.close()
        self.children[pid] = Child(pid, peer, f"{self.base}/{pid}", None if over else ip)
        if not over:
            self.total += 1
            self.per_ip[ip] += 1

    def settle(self, ip: str, seconds: float) -> None:
        """Read the hub (not the listeners) for up to ``seconds`` or until ``ip`` is under the limits again."""
        lim = self.config.limits
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (self.total >= lim.max_connections
                                                or self.per_ip[ip] >= lim.max_connections_per_source):
            for key, _ in self.sel.select(max(0.0, deadline - time.monotonic())):
                if key.data[0] == "peer":
                    self.read_peer(key.data[1])
            self.reap()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.node is not None and pid == self.node.pid:
                if not self.stopping:
                    log.error("the node process ended (status %d); stopping", status)
                    self.stopping = True
                self._drop(self.node)
                self.node = None
                continue
            c = self.children.pop(pid, None)
            if c is None:
                continue
            self._drop(c)
            self._release(c)
            for ip in c.logins:  # its sign-ins in progress end with it
                self.pending_logins[ip] -= 1
            if self.node is not None:
                self.node.peer.send({"kind": "exited", "from": pid, "status": status})

    def logins(self, c: Child, msg: dict[str, Any]) -> None:
        """Pending sign-ins per source address, for all connection processes (the OIDC login service asks)."""
        ip = str(msg.get("ip", ""))[:64]
        if msg["kind"] == "login.give":
            if ip in c.logins:
                c.logins.remove(ip)
                self.pending_logins[ip] -= 1
            return
        limit = msg.get("limit")
        ok = isinstance(limit, int) and self.pending_logins[ip] < limit
        if ok:
            self.pending_logins[ip] += 1
            c.logins.append(ip)
        c.peer.send({"answer": msg.get("ask"), "ok": ok})

    def _release(self, c: Child) -> None:
        """The connection no longer counts against the limits (closed; its process may still be closing books)."""
        if c.ip is not None:
            self.total -= 1
            self.per_ip[c.ip] -= 1
            if self.per_ip[c.ip] <= 0:
                del self.per_ip[c.ip]
            c.ip = None

    def _drop(self, c: Child) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(c.peer.sock)
        c.peer.close()

    # -- the hub ----------------------------------------------------------------------------------------
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

    def read_peer(self, pid: int) -> None:
        c = self.children.get(pid) or (self.node if self.node is not None and self.node.pid == pid else None)
        if c is None:
            return
        msgs = c.peer.read()
        if msgs is None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(c.peer.sock)
            return
        for msg in msgs:
            self.route(pid, msg)

    # -- signals ----------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def handle_signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        while self.signals:
            sig = self.signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
            elif sig == signal.SIGHUP:
                self.reload()

    def reload(self) -> None:
        notify("RELOADING=1", monotonic_usec(), "STATUS=reloading the config")
        try:
            new = load_config(self.config.path, check_files=True)
        except ConfigError as e:
            log.error("reload refused; the running config stays:\n%s", e)
            notify("READY=1", "STATUS=serving; the last reload was refused (see the log)")
            return
        fixed = [f for f in RESTART_ONLY if getattr(new, f) != getattr(self.config, f)]
        self.config = dataclasses.replace(new, **{f: getattr(self.config, f) for f in fixed})
        for c in [*self.children.values(), *([self.node] if self.node else [])]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.pid, signal.SIGHUP)  # each re-reads it (and says what it kept)
        notify("READY=1", "STATUS=serving")

    # -- the loop ---------------------------------------------------------------------------------------
    def listen(self) -> None:
        host, port = self.config.listen.host, self.config.listen.port
        for family, kind, proto, _, addr in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                               flags=socket.AI_PASSIVE):
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
            self.listeners.append(sock)
            self.sel.register(sock, selectors.EVENT_READ, ("listen", sock))
        log.info("listening on %s:%d, a process per connection (host key %s)", host, port,
                 ", ".join(k.get_fingerprint() for k in self.host_keys))

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGCHLD, self._on_signal)
        signal.set_wakeup_fd(self._wake_w)
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self.start_node()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready and not self.stopping:
            if time.monotonic() > deadline:
                log.error("the node process did not get ready in %.0f s", READY_TIMEOUT)
                self.stopping = True
                break
            self.turn(1.0)
        if not self.stopping:
            self.listen()
            notify("READY=1", f"STATUS=serving on {self.config.listen.host}:{self.config.listen.port}")
        while not self.stopping:
            self.turn(1.0)
        return self.shutdown()

    def turn(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            what, arg = key.data
            if what == "listen":
                self.accept(arg)
            elif what == "peer":
                self.read_peer(arg)
            else:
                self.handle_signals()
        self.reap()

    def shutdown(self) -> int:
        log.info("shutting down")
        notify("STOPPING=1", "STATUS=shutting down")
        for sock in self.listeners:
            self.sel.unregister(sock)
            sock.close()
        self.listeners = []
        failed = self.node is None  # the node process died under us
        for c in list(self.children.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.children and time.monotonic() < deadline:
            self.turn(0.2)
        for c in list(self.children.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.pid, signal.SIGKILL)
        if self.node is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.node.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while (self.children or self.node is not None) and time.monotonic() < deadline:
            self.turn(0.2)
        return 1 if failed else 0


def serve(config: Config) -> int:
    """Run the daemon with a process per connection until SIGINT/SIGTERM; SIGHUP reloads the config."""
    return Supervisor(config).run()
