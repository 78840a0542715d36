"""The reviewer's queue (F2) decides nothing by stray keys, driven with Textual's Pilot against the daemon's own RPC
handlers, store and approval service (a real Daemon on a SQLite file, served on a loop of its own, as the session
process's broker would be)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from bastion.broker import BrokerServer
from bastion.config import load_config
from bastion.daemon import ConnectionContext, Daemon
from bastion.rpcproto import RpcClient
from bastion.session import BastionSession
from bastion.store.approvals import ApprovalStore
from tui.app import MenuApp
from tui.approvals import ApprovalsScreen, ConfirmApproval, ReasonModal

COMMAND = "chmod 600 /srv/app/[bold]config[/bold] && echo done"  # operator-typed text: shown verbatim


@dataclass
class Bastion:
    daemon: Daemon
    requests: ApprovalStore
    connect: Callable[[str], RpcClient]


@pytest.fixture()
def bastion(tmp_path: Path) -> Iterator[Bastion]:
    host = " ".join(asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()[:2])
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(f"""\
listen: {{host: 127.0.0.1, port: 2222}}
host_keys: [host_key]
database: sqlite:///bastion.db
recordings_dir: rec
sandbox: {{mode: "off"}}
users:
  alice: {{groups: [ops]}}
  bob: {{groups: [reviewers]}}
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
""")
    daemon = Daemon(load_config(cfg, check_files=False))
    daemon.store.migrate()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    clients: list[tuple[socket.socket, RpcClient]] = []
    served: list[concurrent.futures.Future[None]] = []

    def connect(user: str) -> RpcClient:
        ctx = ConnectionContext(daemon, "127.0.0.1:1")
        ctx.set_identity(user, daemon.config.users[user].groups, source="local")
        session = BastionSession(ctx)
        handlers = {"hello": session._rpc_hello, "resources.list": session._rpc_resources,
                    "queue.list": session._rpc_queue, "requests.mine": session._rpc_mine,
                    "request.decide": session._rpc_decide}
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
        yield Bastion(daemon, ApprovalStore(daemon.store), connect)
    finally:
        for sock, client in clients:  # the session process goes away: its broker stops serving
            sock.shutdown(socket.SHUT_RDWR)  # (close alone does not wake the client's reader thread)
            client.close()
        concurrent.futures.wait(served, 10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        daemon.store.engine.dispose()


def held(b: Bastion, text: str = COMMAND) -> dict[str, Any]:
    """A command of alice's held for one reviewer, as the policy engine would have held it."""
    return b.requests.create(requester="alice", resource="web", session_id="20261201-000000-aaaaaaaaaaaa", text=text,
                             rule="chmod-needs-approval", reason="", approvals_needed=1,
                             approver_roles=["reviewers"], timeout=600, node=b.daemon.node)


async def until(pilot: Pilot[Any], what: Callable[[], bool], timeout: float = 10) -> None:
    """Wait on what the app shows (the RPC answers on another thread), never a fixed time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not what():
        assert loop.time() < deadline, "the screen never got there"
        await pilot.pause(0.02)


def shown(app: MenuApp, wid: str) -> str:
    return str(app.screen.query_one(wid, Static).render())


async def open_queue(app: MenuApp, pilot: Pilot[Any], rid: int) -> ApprovalsScreen:
    await until(pilot, lambda: app.reviewer)
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(app.screen, ApprovalsScreen)
                and any(r["id"] == rid for r in app.screen.pending))
    assert isinstance(app.screen, ApprovalsScreen)
    return app.screen


async def test_a_reason_typed_after_an_empty_enter_stays_in_the_dialog(bastion: Bastion) -> None:
    req = held(bastion)
    app = MenuApp(bastion.connect("bob"))
    async with app.run_test(size=(120, 30)) as pilot:
        queue = await open_queue(app, pilot, req["id"])
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ReasonModal))
        await pilot.press("enter")  # no reason yet: the dialog stays, and says why
        await until(pilot, lambda: "reason is needed" in shown(app, "#reason-note"))
        assert isinstance(app.screen, ReasonModal)
        await pilot.press(*"a bad idea, ask again")  # every key a queue shortcut: a, d, r ... and y
        assert isinstance(app.screen, ReasonModal)
        assert app.screen.query_one(Input).value == "a bad idea, ask again"
        assert bastion.requests.get(req["id"])["status"] == "pending"
        await pilot.press("escape")  # cancelled: still nothing decided
        await until(pilot, lambda: app.screen is queue)
        assert bastion.requests.get(req["id"])["status"] == "pending"
        await pilot.press("d", "enter", *"   ", "enter")  # blanks are no reason either
        assert isinstance(app.screen, ReasonModal) and "reason is needed" in shown(app, "#reason-note")
        await pilot.press(*"not now", "enter")
        await until(pilot, lambda: app.screen is queue and "denied" in shown(app, "#approvals-status"))
    r = bastion.requests.get(req["id"])
    assert r["status"] == "denied" and [(d["reviewer"], d["approve"], d["reason"]) for d in r["decisions"]] == \
        [("bob", False, "not now")]


async def test_approving_names_what_it_approves_and_takes_a_deliberate_key(bastion: Bastion) -> None:
    req = held(bastion)
    app = MenuApp(bastion.connect("bob"))
    async with app.run_test(size=(120, 30)) as pilot:
        queue = await open_queue(app, pilot, req["id"])
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmApproval))
        what = shown(app, "#confirm-what")
        for fact in (f"#{req['id']}", "alice", "web", COMMAND, "chmod-needs-approval"):
            assert fact in what  # the command verbatim: its brackets are not markup
        await pilot.press("x")  # any other key cancels, and is not a queue shortcut
        await until(pilot, lambda: app.screen is queue and "not approved" in shown(app, "#approvals-status"))
        for stray in ("a", "enter", "d"):  # not even the shortcut twice, Enter, or another shortcut
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, ConfirmApproval))
            await pilot.press(stray)
            await until(pilot, lambda: app.screen is queue)
        assert bastion.requests.get(req["id"])["status"] == "pending"
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmApproval))
        await pilot.press("y")
        await until(pilot, lambda: f"request #{req['id']}: approved" in shown(app, "#approvals-status"))
    r = bastion.requests.get(req["id"])
    assert r["status"] == "approved" and [(d["reviewer"], d["approve"]) for d in r["decisions"]] == [("bob", True)]
