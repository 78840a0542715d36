"""The supervisor of ``processes: per-connection``: it listens, counts connections against the limits, and forks a
connection process (:mod:`bastion.workers.child`) for each accepted socket, after a node process
(:mod:`bastion.workers.node`) has readied the store. It routes the hub's messages between them, reaps them, passes
SIGHUP on (each process re-reads the config) and, on SIGTERM, ends them before it ends.

It runs no event loop and no thread, so forking it is safe: every process starts with the daemon's modules
already imported (``gc.freeze`` keeps those pages shared), and a connection costs a fork, not an interpreter.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import selectors
import signal
import socket
import threading
import time
from typing import Any

from bastion import metrics
from bastion.config import Config, ConfigError
from bastion.daemon import ensure_host_ca, ensure_host_key, reread, start_operations
from bastion.metrics.files import Reaper
from bastion.sdnotify import monotonic_usec, notify, watchdog_interval
from bastion.workers import child as connection
from bastion.workers import node as node_process
from bastion.workers.hub import Peer
from bastion.workers.router import Child, Router

log = logging.getLogger(__name__)
READY_TIMEOUT = 300.0  # seconds the node process may take to migrate the store and start
SETTLE = 0.5  # seconds a connection over the limits waits for closed ones to say so before it is refused
MAX_PARKED = 64  # connections waiting so at once (more: closed)
MAX_REFUSING = 16  # processes saying "too many connections" at once (more: the socket is closed)
COUNT_EVERY = 0.2  # seconds between two updates of the supervisor's gauges (metrics on)
STOP_GRACE = 20.0  # seconds connection processes get to close their sessions on SIGTERM (systemd waits 30)


class Supervisor(Router):
    def __init__(self, config: Config, reaper: Reaper | None = None) -> None:
        self.config = config
        self.reaper = reaper  # metrics on: dead processes' counters are folded into the archive
        self._counted = 0.0  # when the gauges were last written
        self.watchdog = watchdog_interval()  # systemd's WatchdogSec / 2, or None
        self._petted = 0.0
        self.host_keys = [ensure_host_key(p) for p in config.host_keys]
        ensure_host_ca(config)  # connection processes read it (ssh -J host certificates)
        super().__init__()
        self.listeners: list[socket.socket] = []
        self.parked: list[tuple[socket.socket, str, float]] = []
        self.stopping = False
        self.signals: list[int] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- processes --------------------------------------------------------------------------------------
    def _fork(self, what: str, body: Any) -> tuple[int, Peer] | None:
        """Fork a process running ``body(hub_end)``; the supervisor keeps the other end of its hub. None when the
        system cannot fork now (out of processes or memory): the caller refuses what it was for."""
        if threading.active_count() != 1:
            log.error("the supervisor has %d threads: forking it is not safe", threading.active_count())
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as e:
            log.error("cannot start a %s: %s", what, e)
            return None
        if self.reaper is not None:  # a dead pid's files are merged before the pid can be reused
            self.reaper.settle(wait=True)
        gc.freeze()  # the objects that exist now stay shared with the child (no copy-on-write by the collector)
        try:
            pid = os.fork()
        except OSError as e:
            log.error("cannot start a %s: %s", what, e)
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            code = 1
            try:
                for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):  # until the child has its own handlers:
                    signal.signal(sig, signal.SIG_IGN)  # a reload or a stop in these first milliseconds is no death
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                self._forget(ours)
                self.reaper = None  # the supervisor's, not the child's
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
        forked = self._fork("node process", lambda hub: node_process.run(self.config, hub))
        if forked is None:
            self.stopping = True
            return
        self.node = Child(forked[0], forked[1], None)

    def _admit(self, ip: str) -> bool:
        """Count one more connection from ``ip`` unless that passes a limit."""
        lim = self.config.limits
        return self.counter.admit(ip, lim.max_connections, lim.max_connections_per_source)

    def accept(self, lsock: socket.socket) -> None:
        try:
            conn, addr = lsock.accept()
        except OSError:
            return
        ip = str(addr[0])
        if self._admit(ip):
            self.serve(conn, ip, refused=False)
        elif len(self.parked) < MAX_PARKED:
            # a connection that just closed may not have said so yet (a health check's): look again in a moment,
            # never holding up the others meanwhile
            self.parked.append((conn, ip, time.monotonic() + SETTLE))
        else:
            conn.close()

    def unpark(self) -> None:
        """Parked connections: served once under the limits, refused (said so) when their moment is up."""
        now, keep = time.monotonic(), []
        for conn, ip, until in self.parked:
            if self._admit(ip):
                self.serve(conn, ip, refused=False)
            elif now >= until:
                self.refuse(conn, ip)
            else:
                keep.append((conn, ip, until))
        self.parked = keep

    def refuse(self, conn: socket.socket, ip: str) -> None:
        """Over the limits: a short-lived process says so in the SSH protocol (the client shows the reason), unless
        too many are saying it already (then the socket is just closed: nobody floods the node with processes)."""
        log.warning("refusing connection from %s: connection limit reached", ip)
        if sum(1 for c in self.children.values() if c.refused) >= MAX_REFUSING:
            conn.close()
            return
        self.serve(conn, ip, refused=True)

    def serve(self, conn: socket.socket, ip: str, *, refused: bool) -> None:
        """A connection process for ``conn`` (counted by the caller unless ``refused``)."""
        config, keys = self.config, self.host_keys

        def body(hub: socket.socket) -> int:
            return connection.run(config, conn, hub, refused, keys)

        forked = self._fork("connection process", body)
        conn.close()
        if forked is None:
            if not refused:
                self.counter.release(ip)
            return
        pid, peer = forked
        self.children[pid] = Child(pid, peer, None if refused else ip, refused=refused)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if self.reaper is not None:
                self.reaper.dead(pid)
            if self.node is not None and pid == self.node.pid:
                if not self.stopping:
                    log.error("the node process ended (%s); stopping", _ended_how(code))
                    self.stopping = True
                self._drop(self.node)
                self.node = None
                continue
            c = self.children.pop(pid, None)
            if c is None:
                continue
            self.read_peer(pid, c)  # what it said before it went (its sessions, its closed recordings) counts
            self._drop(c)
            self._release(c)
            for ip in c.logins:  # its sign-ins in progress end with it
                self._give(ip)
            if code != 0:
                log.warning("connection process %d ended (%s)", pid, _ended_how(code))
            if self.node is not None:
                self.node.peer.send({"kind": "exited", "from": pid, "status": status})

    def _drop(self, c: Child) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(c.peer.sock)
        c.peer.close()

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
            self.config, _ = reread(self.config)
        except ConfigError as e:
            log.error("reload refused; the running config stays:\n%s", e)
            notify("READY=1", "STATUS=serving; the last reload was refused (see the log)")
            return
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
            if self.node is not None:  # its /readyz says so from now on
                self.node.peer.send({"kind": "listening"})
            notify("READY=1", f"STATUS=serving on {self.config.listen.host}:{self.config.listen.port}")
        while not self.stopping:
            self.turn(1.0)
        return self.shutdown()

    def turn(self, timeout: float) -> None:
        """One round: whatever is ready, parked connections, the dead. Nothing one peer sends can stop it."""
        for key, events in self.sel.select(0.05 if self.parked else timeout):
            what, arg = key.data
            try:
                if what == "listen":
                    self.accept(arg)
                elif what == "peer" and events & selectors.EVENT_WRITE:
                    self.flush_peer(arg)
                elif what == "peer":
                    self.read_peer(arg)
                else:
                    self.handle_signals()
            except Exception:
                log.exception("supervisor: handling %s failed; going on", what)
                if what == "peer" and arg in self.children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(arg, signal.SIGKILL)  # a peer that breaks the supervisor is not kept
        self.unpark()
        self.reap()
        if self.reaper is not None:
            try:
                self.count()
            except Exception:  # metrics are not worth a node: off from now on, said once
                log.exception("metrics: the supervisor's gauges cannot be written; it stops counting")
                self.reaper = None
        if self.watchdog is not None and time.monotonic() - self._petted >= min(self.watchdog, 1.0) / 2:
            self._petted = time.monotonic()  # the loop turns (a turn ends at least every second)
            notify("WATCHDOG=1")
        for c in [*self.children.values(), *([self.node] if self.node else [])]:
            if c.peer.stuck:
                c.peer.stuck = False
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.pid, signal.SIGKILL)
            elif c.peer.out:  # wake when it can take more
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.modify(c.peer.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ("peer", c.pid))

    def count(self) -> None:
        """The gauges only the supervisor knows (written to its own file: no thread, no loop), at most every
        COUNT_EVERY seconds however busy the hub is (a turn ends at least every second)."""
        assert self.reaper is not None
        self.reaper.settle(wait=False)
        now = time.monotonic()
        if now - self._counted < COUNT_EVERY:
            return
        self._counted = now
        refusing = sum(1 for c in self.children.values() if c.refused)
        metrics.set_connections(self.counter.total)
        metrics.set_processes("connection", len(self.children) - refusing)
        metrics.set_processes("refusing", refusing)
        metrics.set_processes("node", 0 if self.node is None else 1)

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
        deadline = time.monotonic() + 5  # reaped, so the node process hears of them before it stops
        while self.children and time.monotonic() < deadline:
            self.turn(0.1)
        if self.node is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.node.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while (self.children or self.node is not None) and time.monotonic() < deadline:
            self.turn(0.2)
        return 1 if failed else 0


def _ended_how(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


def serve(config: Config) -> int:
    """Run the daemon with a process per connection until SIGINT/SIGTERM; SIGHUP reloads the config."""
    reaper = start_operations(config, "supervisor")
    return Supervisor(config, reaper).run()
