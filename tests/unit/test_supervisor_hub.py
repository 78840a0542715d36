"""The supervisor's side of the hub, without forking: what one connection process publishes reaches every other and
the node process, what the node process hears from other nodes reaches every connection process, and pending
sign-ins are counted per source address across all of them (a process that dies gives its back)."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from bastion.config import load_config
from bastion.workers.hub import Peer
from bastion.workers.supervisor import Child, Supervisor
from tests.unit.test_menu_handlers import CONFIG


class Ends:
    def __init__(self, n: int) -> None:
        self.pairs = [socket.socketpair() for _ in range(n)]

    def peer(self, i: int) -> Peer:
        return Peer(self.pairs[i][0], f"p{i}")

    def got(self, i: int) -> list[dict[str, Any]]:
        far = self.pairs[i][1]
        far.setblocking(False)
        data = b""
        try:
            while chunk := far.recv(65536):
                data += chunk
        except BlockingIOError:
            pass
        return [json.loads(x) for x in data.splitlines()]


@pytest.fixture
def sup(tmp_path: Path) -> Supervisor:
    (tmp_path / "bastion.yaml").write_text(CONFIG)
    return Supervisor(load_config(tmp_path / "bastion.yaml", check_files=False))


def test_events_go_to_everyone_else(sup: Supervisor) -> None:
    ends = Ends(3)
    sup.node = Child(100, ends.peer(0), None)
    sup.children = {101: Child(101, ends.peer(1), "192.0.2.1"),
                    102: Child(102, ends.peer(2), "192.0.2.1")}
    event = {"kind": "approval", "id": 7, "node": "n/101"}
    sup.route(101, {"to": "all", "event": event})
    assert ends.got(2) == [{"event": event}] and ends.got(1) == []  # not back to the sender
    assert ends.got(0) == [{"to": "all", "event": event}]  # the node process passes it on to other nodes
    remote = {"kind": "terminate", "id": "s", "node": "n/102"}
    sup.route(100, {"to": "children", "event": remote})
    assert ends.got(1) == [{"event": remote}] and ends.got(2) == [{"event": remote}] and ends.got(0) == []
    sup.route(101, {"to": "node", "kind": "closed", "id": "s1"})
    assert ends.got(0) == [{"to": "node", "kind": "closed", "id": "s1", "from": 101}]  # the sender, for the books
    sup.route(101, {"to": "supervisor", "kind": "ready"})  # only the node process says that
    assert not sup.ready


def test_pending_sign_ins_are_counted_across_processes(sup: Supervisor) -> None:
    ends = Ends(2)
    a, b = Child(201, ends.peer(0), "192.0.2.9"), Child(202, ends.peer(1), "192.0.2.9")
    sup.children = {201: a, 202: b}
    take = {"to": "supervisor", "kind": "login.take", "ip": "192.0.2.9", "limit": 2}
    sup.route(201, take | {"ask": 1})
    sup.route(202, take | {"ask": 1})
    sup.route(202, take | {"ask": 2})
    assert [m["ok"] for m in ends.got(0)] == [True] and [m["ok"] for m in ends.got(1)] == [True, False]
    sup.route(201, {"to": "supervisor", "kind": "login.give", "ip": "192.0.2.9"})
    sup.route(201, {"to": "supervisor", "kind": "login.give", "ip": "192.0.2.9"})  # twice: counted once
    sup.route(202, take | {"ask": 3})
    assert [m["ok"] for m in ends.got(1)] == [True]
    sup.route(201, take | {"ask": 2, "limit": "2"})  # a limit that is not a number: refused
    assert [m["ok"] for m in ends.got(0)] == [False]
    assert sup.pending_logins["192.0.2.9"] == 2


def test_a_peer_survives_what_a_hostile_child_sends() -> None:
    ours, theirs = socket.socketpair()
    peer = Peer(ours, "hostile")
    theirs.sendall(b"not json\n" + b"[" * 60000 + b"]" * 60000 + b"\n" + b'{"to": "node"}\n')
    got: list[dict[str, Any]] = []
    for _ in range(50):
        got += peer.read() or []
    assert got == [{"to": "node"}]  # the malformed and the deeply nested lines are dropped, the rest goes on


def test_a_child_that_reads_nothing_never_blocks_the_supervisor() -> None:
    ours, theirs = socket.socketpair()
    peer = Peer(ours, "asleep")
    for i in range(100000):  # far more than the socket buffer: sends return at once
        peer.send({"event": {"kind": "approval", "id": i, "pad": "x" * 200}})
        if peer.stuck:
            break
    assert peer.stuck and not peer.out  # it is dropped, not waited for


def test_over_the_limit_a_connection_waits_a_moment_then_is_refused(sup: Supervisor,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[str, bool]] = []
    monkeypatch.setattr(sup, "serve", lambda conn, ip, refused: served.append((ip, refused)))
    sup.counter.total, sup.counter.per_ip["192.0.2.5"] = 2, 2
    sup.config = dataclasses.replace(sup.config, limits=sup.config.limits.model_copy(
        update={"max_connections_per_source": 2}))

    class Listener:
        def accept(self) -> tuple[socket.socket, tuple[str, int]]:
            return socket.socket(), ("192.0.2.5", 4000)

    sup.accept(Listener())  # type: ignore[arg-type]
    assert served == [] and len(sup.parked) == 1  # not refused at once: a closed one may not have said so yet
    sup.counter.total, sup.counter.per_ip["192.0.2.5"] = 1, 1  # ...and now it has
    sup.unpark()
    assert served == [("192.0.2.5", False)] and sup.parked == []
    sup.counter.total, sup.counter.per_ip["192.0.2.5"] = 2, 2
    sup.accept(Listener())  # type: ignore[arg-type]
    sup.parked = [(c, ip, 0.0) for c, ip, _ in sup.parked]  # its moment is up
    sup.unpark()
    assert served[-1] == ("192.0.2.5", True)
    for _ in range(100):  # a flood: parked up to a bound, the rest closed at once
        sup.accept(Listener())  # type: ignore[arg-type]
    assert len(sup.parked) == 64
