"""Every list the menu asks for fits in one RPC frame, however much the daemon holds: the reviewer's queue (pending
requests whole, the rest counted), F4's live sessions, one recording's markers; and what is left out is counted in
the reply, never silently dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.context import ConnectionContext
from bastion.oversight.live import LiveSession
from bastion.rpc.budget import fit
from bastion.rpc.proto import MAX_FRAME, encode
from bastion.services import Services
from bastion.terminal.relay import Relay, Tee
from recorder.asciicast import CastWriter
from tests.support.menu import NoChannel, menu_for
from tests.unit.test_menu_handlers import FakeRequest, config, services  # noqa: F401  (fixtures)

HUGE = "rm -rf /srv/" + "é" * 3000  # 6 bytes a character once escaped... or 2 in UTF-8: either way, large


def frame(reply: dict[str, Any]) -> int:
    return len(encode({"id": 1, "result": reply}))


def test_fit_keeps_order_and_counts_the_rest() -> None:
    items = [{"n": i, "text": "x" * 1000} for i in range(200)]
    shown, more = fit(items, 0.25)
    assert shown == items[:len(shown)] and more == 200 - len(shown) and 0 < len(shown) < 200
    assert fit([], 0.5) == ([], 0)
    one, more = fit([{"text": "y" * MAX_FRAME}], 0.1)  # one item is always shown (it may be refused as a whole)
    assert len(one) == 1 and more == 0


async def test_the_queue_fits_and_counts_what_waits_behind(services: Services) -> None:  # noqa: F811
    pending = [FakeRequest(id=i, requester="alice", resource="web", text=HUGE, rule="r", status="pending",
                           decisions=[], approvals_needed=1) for i in range(300)]

    async def queue(ctx: ConnectionContext) -> tuple[list[FakeRequest], list[FakeRequest]]:
        return pending, pending[:50]

    services.approvals.queue = queue  # type: ignore[method-assign]
    reply = await menu_for(services, "bob").table()["queue.list"]({})
    assert frame(reply) < MAX_FRAME
    assert reply["more_pending"] == 300 - len(reply["pending"]) > 0
    assert all(r["text"] == HUGE for r in reply["pending"])  # shown whole: a reviewer approves what it reads
    assert [r["id"] for r in reply["pending"]] == list(range(len(reply["pending"])))  # the oldest first


async def test_live_sessions_fit(services: Services, tmp_path: Path) -> None:  # noqa: F811
    writer = CastWriter(tmp_path / "x.cast", 80, 24, title="x")
    for i in range(400):
        services.live.add(LiveSession(f"2026{i:08d}-aaaa", "alice", "web", "ssh", "exec", HUGE, "192.0.2.1:1", "n",
                                      tee=Tee(writer), relay=Relay(NoChannel()), notify=lambda t: None,
                                      stop=lambda: None))
    reply = await menu_for(services, "bob").table()["sessions.live"]({})
    assert frame(reply) < MAX_FRAME and reply["more"] == 400 - len(reply["sessions"]) > 0
    writer.close()


async def test_a_recordings_detail_fits_and_counts_its_markers(services: Services, tmp_path: Path) -> None:  # noqa: F811
    from bastion.store.db import Store

    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.migrate()
    services.store = store
    services.approvals.db.recent = lambda **kw: []  # type: ignore[attr-defined]  # no approvals in this session
    path = tmp_path / "s.cast"
    writer = CastWriter(path, 80, 24, title="s")
    for i in range(3000):
        writer.marker(f"policy: allow: {HUGE[:400]} {i}")
    store.start_session("20261201-000000-aaaaaaaaaaaa", user="alice", resource="web", kind="ssh", mode="exec",
                        command="x", client_addr="", node="n", recording_path=path)  # active: its file is read here
    reply = await menu_for(services, "eve").table()["recording.detail"]({"id": "20261201-000000-aaaaaaaaaaaa"})
    assert frame(reply) < MAX_FRAME
    assert reply["more"]["markers"] == 3000 - len(reply["markers"]) > 0
    writer.close()
    store.engine.dispose()
