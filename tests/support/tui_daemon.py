"""A real Daemon (SQLite in a temporary directory) whose menu RPC handlers serve a TUI driven by Textual's Pilot in
the test's own process: the broker runs on a loop of its own thread, as it runs in the daemon while the session
process waits on its replies."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from textual.pilot import Pilot

from bastion.config import load_config
from bastion.daemon import build_services
from bastion.rpc.proto import RpcClient
from bastion.rpc.server import BrokerServer
from bastion.services import Services
from bastion.store.approvals import ApprovalStore
from tests.support.menu import menu_for


@dataclass
class TuiDaemon:
    daemon: Services
    requests: ApprovalStore
    connect: Callable[[str], RpcClient]  # a session process's channel for this user (alice, bob, eve)
    loop: asyncio.AbstractEventLoop | None = None  # the brokers' loop

    def changed(self, rid: int) -> None:
        """Request ``rid`` changed elsewhere (another node, as its notification says): every menu is pushed
        ``queue.changed``, from the brokers' loop as in the daemon."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.daemon.approvals.remote_event,
                                       {"kind": "approval", "id": rid, "node": "elsewhere"})


@contextmanager
def tui_daemon(d: Path) -> Iterator[TuiDaemon]:
    host = " ".join(asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()[:2])
    cfg = d / "bastion.yaml"
    cfg.write_text(f"""\
listen: {{host: 127.0.0.1, port: 2222}}
host_keys: [host_key]
database: sqlite:///bastion.db
recordings_dir: rec
sandbox: {{mode: "off"}}
users:
  alice: {{groups: [ops]}}
  bob: {{groups: [reviewers]}}
  eve: {{groups: [auditors]}}
resources:
  web:
    kind: ssh
    description: web server
    host: 127.0.0.1
    port: 22
    user: deploy
    credential: {{private_key_file: cred}}
    host_key: "{host}"
roles:
  operators: {{groups: [ops], resources: ["web"]}}
  reviewers: {{groups: [reviewers], review: true}}
  auditors: {{groups: [auditors], audit: true}}
""")
    daemon = build_services(load_config(cfg, check_files=False))
    daemon.store.migrate()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    clients: list[tuple[socket.socket, RpcClient]] = []
    served: list[concurrent.futures.Future[None]] = []

    def connect(user: str) -> RpcClient:
        menu = menu_for(daemon, user, term_type=None)
        handlers = {"hello": menu.hello, "resources.list": menu.resources, "queue.list": menu.queue,
                    "requests.mine": menu.mine, "request.decide": menu.decide,
                    "recordings.list": menu.recordings.listing, "sessions.live": menu.live}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        server = BrokerServer(ours, handlers, user)

        async def serve() -> None:
            listeners = daemon.approvals.listeners
            changed = lambda: server.notify("queue.changed")  # noqa: E731
            listeners.add(changed)
            try:
                await server.serve()
            finally:
                listeners.discard(changed)

        served.append(asyncio.run_coroutine_threadsafe(serve(), loop))
        client = RpcClient(theirs)
        clients.append((theirs, client))
        return client

    try:
        yield TuiDaemon(daemon, ApprovalStore(daemon.store), connect, loop)
    finally:
        for sock, client in clients:  # the session process goes away: its broker stops serving
            sock.shutdown(socket.SHUT_RDWR)  # (close alone does not wake the client's reader thread)
            client.close()
        concurrent.futures.wait(served, 10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        daemon.store.engine.dispose()


async def until(pilot: Pilot[Any], what: Callable[[], bool], timeout: float = 10) -> None:
    """Wait on what the app shows (the RPC answers on another thread), never a fixed time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not what():
        assert loop.time() < deadline, "the screen never got there"
        await pilot.pause(0.02)
