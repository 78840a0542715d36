"""A connection process: one SSH connection, served exactly as the single-process daemon serves it, in a process
of its own (forked by the supervisor, so it starts with everything imported and costs little memory). The kernel
schedules it like any other: an operator typing here never waits behind another's bulk output, and the node's
connections spread over every core.

It dies with the supervisor (PR_SET_PDEATHSIG): a daemon killed with ``kill -9`` takes its sessions with it, as
before, and the next start marks them interrupted. On SIGTERM it closes its connection; its sessions end and are
recorded as ended. It tells the node process which sessions it carries, from the first request for approval to
the last row, so that if it dies their books are closed there (interrupted, recordings chained as far as they got,
requests cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
from typing import Any

import asyncssh

from bastion.config import Config
from bastion.daemon import build_services, jump_host, reload_services, server_options
from bastion.metrics.logs import set_process
from bastion.metrics.loop import watch_loop
from bastion.notify.events import Enqueuer
from bastion.sessions.events import handle_event
from bastion.ssh.admission import ConnectionCounter, UserKeys
from bastion.ssh.server import BastionServer
from bastion.workers.hub import HubClient

log = logging.getLogger(__name__)
DRAIN = 60.0  # seconds a closed connection's sessions get to close their books
REFUSED_LOGIN_TIMEOUT = 10.0  # a refused connection is told at its first auth request, or dropped after this


class Refused(ConnectionCounter):
    """The supervisor counted this connection over a limit: it is told so at its first auth request."""

    def admit(self, ip: str, max_total: int, max_per_source: int) -> bool:
        return False


class ClosedToNode:
    """What the session broker calls when a recording is closed: the node process signs and indexes it."""

    def __init__(self, hub: HubClient) -> None:
        self.hub = hub

    async def closed(self, sid: str) -> None:
        self.hub.send({"to": "node", "kind": "closed", "id": sid})


class PendingLoginsOfNode:
    """Device flows pending per source address, counted by the supervisor for all the node's connections."""

    def __init__(self, hub: HubClient) -> None:
        self.hub = hub

    async def take(self, ip: str, limit: int) -> bool:
        answer = await self.hub.ask({"kind": "login.take", "ip": ip, "limit": limit})
        if answer is None:  # no answer: refused (fail closed), and whatever it may have counted is given back
            self.give_back(ip)
        return bool(answer and answer.get("ok"))

    def give_back(self, ip: str) -> None:
        self.hub.send({"to": "supervisor", "kind": "login.give", "ip": ip})


def die_with_parent(name: str) -> None:
    """SIGKILL when the process that forked this one dies; ``name`` is what ps and top show for it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        libc.prctl(15, name.encode()[:15])  # PR_SET_NAME
    except (OSError, AttributeError):
        log.warning("cannot tie this process to the daemon's life")
    if os.getppid() == 1:  # the daemon died before the tie was made: nothing to serve for
        exit_now(1)


def run(config: Config, conn: socket.socket, hub: socket.socket, refused: bool,
        host_keys: list[asyncssh.SSHKey]) -> int:
    """The process's whole life (it then exits)."""
    die_with_parent("bastion-conn")
    with contextlib.suppress(OSError):
        set_process(worker="connection", connection=str(os.getpid()), client=str(conn.getpeername()[0]))
    # Ctrl-C in a foreground daemon reaches the whole process group: the supervisor ends this one properly; a
    # reload or stop before the loop's own handlers exist is ignored, not fatal
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    return asyncio.run(_serve(config, conn, hub, refused, host_keys))


async def _serve(config: Config, conn: socket.socket, hub_sock: socket.socket, refused: bool,
                 host_keys: list[asyncssh.SSHKey]) -> int:
    services = build_services(config, pool_size=2)
    hub = HubClient(hub_sock)
    services.publish, services.cluster = hub.publish, True
    services.carrying = lambda sid, on: hub.send({"to": "node", "kind": "live.add" if on else "live.remove",
                                                  "id": sid})
    services.auditing = ClosedToNode(hub)  # type: ignore[assignment]  # a narrower "recording closed" than AuditWorker
    if services.login is not None:
        services.login.pending = PendingLoginsOfNode(hub)
    keys = UserKeys(config.user_keys)

    def on_message(msg: dict[str, Any]) -> None:
        event = msg.get("event")
        if isinstance(event, dict):
            handle_event(services, event)

    def reload() -> None:
        nonlocal keys
        if reload_services(services, audit=False):
            keys = UserKeys(services.config.user_keys)

    await hub.start(on_message)
    loop = asyncio.get_running_loop()
    enqueuer = services.store.on_audit
    if isinstance(enqueuer, Enqueuer):  # the node process delivers what this one enqueues: tell it at once
        def wake() -> None:
            try:
                loop.call_soon_threadsafe(hub.send, {"to": "node", "kind": "notify"})
            except RuntimeError:  # the loop has closed: the node's next poll finds the rows
                pass
        enqueuer.wake = wake
    loop.add_signal_handler(signal.SIGHUP, reload)
    counter = Refused() if refused else ConnectionCounter()
    lag = asyncio.create_task(watch_loop("connection")) if config.metrics is not None and not refused else None
    ssh: asyncssh.SSHServerConnection | None = None
    try:
        conn.setblocking(False)
        options = server_options(config, host_keys) | ({"login_timeout": REFUSED_LOGIN_TIMEOUT} if refused else {})
        jump = jump_host(services, host_keys, lambda: keys)
        ssh = await asyncssh.run_server(
            conn, server_factory=lambda: BastionServer(services, counter, lambda: keys, jump), **options)
        # asyncssh announces the host keys after auth only to connections it accepted itself (run_server returns
        # at auth, before it would): say them here, so clients learn the next key of a rotation
        ssh.send_server_host_keys()
        loop.add_signal_handler(signal.SIGTERM, ssh.close)
        await ssh.wait_closed()
    except (OSError, asyncssh.Error) as e:  # the client went away or failed to log in: logged by the server
        log.debug("connection ended before it was served: %s", e)
    hub.send({"to": "supervisor", "kind": "released"})  # the connection is gone: it no longer counts
    if lag is not None:  # before the drain, which waits for every other task
        lag.cancel()
    await _drain(hub)
    services.store.engine.dispose()
    return 0


async def _drain(hub: HubClient) -> None:
    """Let the connection's sessions close their books (store rows, recordings, audit events) before exiting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN
    while loop.time() < deadline:
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()
                and t is not hub.reader]
        if not rest:
            break
        await asyncio.wait(rest, timeout=max(0.0, deadline - loop.time()))
    hub.stop()


def exit_now(code: int) -> None:
    """Leave without the parent's exit handlers (they are the supervisor's business)."""
    logging.shutdown()
    os._exit(code)
