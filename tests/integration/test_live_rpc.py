"""The live-session and recording RPCs refuse whoever may not use them, whatever a (hostile) session process
sends: the identity is the connection's, and an unknown session gets the same answer as a forbidden one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.config import load_config
from bastion.daemon import build_services
from bastion.oversight.live import LiveSession
from bastion.rpc.server import RefusedRequest
from bastion.terminal.relay import Relay, Tee
from recorder.asciicast import CastWriter
from tests.integration.conftest import BastionEnv
from tests.support.menu import NoChannel, menu_for


async def refused(coro: Any) -> str:
    with pytest.raises(RefusedRequest) as e:
        await coro
    return e.value.code


async def test_only_reviewers_and_auditors_watch_and_only_auditors_replay(bastion_env: BastionEnv,
                                                                          tmp_path: Path) -> None:
    daemon = build_services(load_config(bastion_env.config))
    writer = CastWriter(tmp_path / "x.cast", 80, 24, title="x")
    stopped: list[str] = []
    live = LiveSession("20261129-000000-aaaaaaaaaaaa", "carol", "web", "ssh", "interactive", None, "", "n",
                       tee=Tee(writer), relay=Relay(NoChannel()), notify=stopped.append,
                       stop=lambda: stopped.append("x"))
    daemon.live.add(live)
    alice, bob, eve = (menu_for(daemon, u, term_type=None) for u in ("alice", "bob", "eve"))
    assert await refused(alice.live({})) == "forbidden"
    for who in (alice,):  # an operator: the same answer for a real session id and a made-up one
        assert await refused(who.terminate({"id": live.sid, "reason": "x"})) == "not_found"
        assert await refused(who.terminate({"id": "nope", "reason": "x"})) == "not_found"
        assert await refused(who.observe({"id": live.sid})) == "not_found"
    for who in (alice, bob):  # recordings are the auditors'
        assert await refused(who.recordings.listing({})) == "forbidden"
        assert await refused(who.recordings.play({"id": live.sid})) == "forbidden"
        assert await refused(who.recordings.detail({"id": live.sid})) == "forbidden"
    assert await refused(eve.recordings.listing({"user": ["not", "a", "string"]})) == "bad_request"
    assert await refused(eve.recordings.listing({"policy": "everything"})) == "bad_request"
    assert await refused(eve.recordings.play({"id": "no-such-session"})) == "not_found"
    assert [s["id"] for s in (await bob.live({}))["sessions"]] == [live.sid]
    assert await refused(bob.terminate({"id": live.sid, "reason": "   "})) == "bad_request"
    assert await refused(bob.terminate({"id": live.sid, "reason": "x" * 501})) == "bad_request"
    assert stopped == []
    await eve.terminate({"id": live.sid, "reason": "  audit\nfinding  "})
    assert live.terminated == ("eve", "audit finding")
    assert stopped == ["this session was terminated by eve: audit finding", "x"]
    writer.close()
    assert "session terminated by eve: audit finding" in (tmp_path / "x.cast").read_text()
    daemon.store.engine.dispose()
