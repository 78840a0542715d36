"""The menu's session process: the Textual TUI on a fresh pty, in the session sandbox, talking to the daemon only
over its end of a socketpair (the RPC protocol), served here with the connection's handlers."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from bastion.rpc.server import BrokerServer, Handler
from bastion.services import Services
from bastion.sessions.client import ClientSide
from bastion.terminal.ptyproc import PtyProcess
from bastion.terminal.relay import PtyEndpoint

PUSH_COALESCE = 0.1
"""Seconds over which changes to the approval requests become one ``queue.changed`` push (a burst of requests, a
decision and its release): each push costs the menu one reload."""


class MenuProcess:
    """One connection's menu: spawn it, serve its RPC until it exits."""

    def __init__(self, services: Services, client: ClientSide, handlers: dict[str, Handler], who: str):
        self.services, self.client, self.handlers, self.who = services, client, handlers, who
        self.endpoint: PtyEndpoint | None = None
        self.server: BrokerServer | None = None

    def notify(self, event: str, data: dict[str, str] | None = None) -> None:
        """Push an event to the menu (a notice, the queue changed); nothing if it is not running."""
        if self.server is not None:
            self.server.notify(event, data)

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()

    async def run(self) -> int:
        """The menu's exit: 0 when it ended normally."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        home = tempfile.mkdtemp(prefix="bastion-session-")
        try:
            exited = self._spawn(theirs, Path(home))
            self.server = BrokerServer(ours, self.handlers, self.who)
            serve = asyncio.ensure_future(self.server.serve())
            listeners = self.services.approvals.listeners
            server = self.server

            def changed() -> None:
                server.notify_soon("queue.changed", PUSH_COALESCE)

            listeners.add(changed)
            try:
                status = await exited
            finally:
                listeners.discard(changed)
                serve.cancel()
            return 0 if status in (0, None) else 1
        finally:
            ours.close()
            shutil.rmtree(home, ignore_errors=True)

    def _spawn(self, theirs: socket.socket, home: Path) -> asyncio.Future[int | None]:
        """Start ``python -m tui`` on a pty as the relay's base endpoint; a future of its exit status."""
        client, sandbox = self.client, self.services.sandbox
        env = {"TERM": client.term_type or "xterm-256color", "LANG": "C.UTF-8", "HOME": str(home),
               "PATH": "/usr/bin:/bin", "BASTION_RPC_FD": str(theirs.fileno())}
        sandbox.prepare(home)
        argv = sandbox.wrap([sys.executable, "-I", "-m", "tui"], home=home, env=env,
                            ro_paths=self.services.menu_paths)
        try:
            proc = PtyProcess(argv, env={} if sandbox.active else env, cols=client.cols, rows=client.rows,
                              pass_fds=[theirs.fileno()], cwd=str(home), wrapper=sandbox.active)
        finally:
            theirs.close()
        exited: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

        def on_exit(status: int | None) -> None:
            if not exited.done():
                exited.set_result(status)

        self.endpoint = PtyEndpoint(proc, client.relay, on_exit)
        client.relay.set_base(self.endpoint)
        client.relay.release()
        return exited
