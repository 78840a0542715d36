"""The menu's RPC handlers with a Services of fakes: no daemon, no socket, no database. What a hostile session process
may ask is refused by role, by shape and before sign-in, and what is allowed reaches the services with the
connection's identity (never the request's)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.config import Config, load_config
from bastion.context import ConnectionContext
from bastion.oversight.live import LiveRegistry
from bastion.rpc.server import RefusedRequest
from bastion.sandbox import make_sandbox
from bastion.services import Services
from bastion.store.approvals import DecisionRefused
from bastion.store.rows import SessionRecord
from tests.support.menu import menu_for as menu

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
CONFIG = f"""\
listen: {{host: 127.0.0.1, port: 2022}}
host_keys: [host_key]
database: sqlite:///bastion.db
recordings_dir: rec
sandbox: {{mode: "off"}}
users:
  alice: {{groups: [ops]}}
  bob: {{groups: [reviewers]}}
  eve: {{groups: [auditors]}}
resources:
  web: {{kind: ssh, description: web server, host: 127.0.0.1, user: deploy,
        credential: {{private_key_file: cred}}, host_key: "{HOST_KEY}"}}
  db: {{kind: ssh, description: database host, host: 127.0.0.1, user: deploy,
       credential: {{private_key_file: cred}}, host_key: "{HOST_KEY}"}}
roles:
  operators: {{groups: [ops], resources: [web], request: [db], request_ttl: 600}}
  reviewers: {{groups: [reviewers], review: true}}
  auditors: {{groups: [auditors], audit: true}}
"""


class FakeStore:
    """Answers like the store; remembers what it was asked."""

    shared = False  # one node: no other node's sessions to list

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.audited: list[tuple[str, str, str]] = []

    def sessions(self, limit: int, **filters: Any) -> list[SessionRecord]:
        self.asked.append(("sessions", filters))
        started = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
        return [SessionRecord(id="s1", user="alice", resource="web", kind="ssh", mode="exec", command="id",
                              client_addr="x", node="n", started_at=started, ended_at=started + timedelta(seconds=1.5),
                              outcome="exited", exit_status=0, message="", recording="/r/s1.cast", sha256=None)]

    def session(self, sid: str) -> SessionRecord | None:
        return None

    def session_notes(self, sids: list[str]) -> dict[str, dict[str, Any]]:
        return {sid: {"risk": ["blocked"], "verdict": ""} for sid in sids}

    def audit(self, actor: str, action: str, outcome: str, **detail: Any) -> None:
        self.audited.append((actor, action, outcome))


class FakeApprovalDb:
    def __init__(self) -> None:
        self.grants: dict[tuple[str, str], dict[str, Any]] = {}

    def access_granted(self, user: str, resource: str, ttl: float) -> SimpleNamespace | None:
        """Like the store's grant, of which the handlers read only when it ends."""
        grant = self.grants.get((user, resource))
        return None if grant is None else SimpleNamespace(until=grant["until"])


class FakeRequest:
    """A request as the handlers see it: they only send it on, as JSON."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def as_dict(self) -> dict[str, Any]:
        return dict(self.fields)


class FakeApprovals:
    """The approval service's surface the handlers use."""

    def __init__(self) -> None:
        self.db = FakeApprovalDb()
        self.calls: list[tuple[str, str, Any]] = []
        self.listeners: set[Any] = set()

    async def queue(self, ctx: ConnectionContext) -> tuple[list[FakeRequest], list[FakeRequest]]:
        self.calls.append(("queue", ctx.username, None))
        return [], []

    async def mine(self, ctx: ConnectionContext) -> list[FakeRequest]:
        self.calls.append(("mine", ctx.username, None))
        return []

    async def decide(self, ctx: ConnectionContext, rid: int, approve: bool, reason: str) -> FakeRequest:
        self.calls.append(("decide", ctx.username, (rid, approve, reason)))
        if rid == 13:
            raise DecisionRefused("you cannot decide your own request")
        return FakeRequest(id=rid, status="approved" if approve else "denied")

    async def revoke(self, ctx: ConnectionContext, rid: int, reason: str) -> FakeRequest:
        self.calls.append(("revoke", ctx.username, (rid, reason)))
        return FakeRequest(id=rid)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "bastion.yaml").write_text(CONFIG)
    return load_config(tmp_path / "bastion.yaml", check_files=False)


@pytest.fixture
def services(config: Config) -> Services:
    return Services(config=config, store=FakeStore(), storage=None, approvals=FakeApprovals(),
                    live=LiveRegistry(), login=None, sandbox=make_sandbox("off", None), auditing=None,
                    node="test-node", spawn=lambda aw: None)


async def refused(coro: Any) -> str:
    with pytest.raises(RefusedRequest) as e:
        await coro
    return e.value.code


async def test_hello_is_the_connections_identity(services: Services) -> None:
    hello = await menu(services, "bob").table()["hello"]({"user": "alice"})  # the request's "user" is ignored
    assert hello["user"] == "bob" and hello["review"] is True and hello["audit"] is False
    assert hello["roles"] == ["reviewers"] and hello["server"] == "-p 2022 bastion"


async def test_resources_list_open_and_requestable_with_the_grant_state(services: Services) -> None:
    alice = menu(services, "alice").table()
    got = {r["name"]: r for r in (await alice["resources.list"]({}))["resources"]}
    assert got["web"]["access"] == "open" and got["db"]["access"] == "request" and got["db"]["ttl"] == 600
    services.approvals.db.grants[("alice", "db")] = {"until": 1_900_000_000}
    got = {r["name"]: r for r in (await alice["resources.list"]({}))["resources"]}
    assert got["db"]["access"] == "granted" and got["db"]["until"] == 1_900_000_000
    assert (await menu(services, "eve").table()["resources.list"]({}))["resources"] == []


async def test_reviewer_methods_are_for_reviewers(services: Services) -> None:
    alice, bob = menu(services, "alice").table(), menu(services, "bob").table()
    assert await refused(alice["queue.list"]({})) == "forbidden"
    assert await refused(alice["request.revoke"]({"id": "1", "reason": "x"})) == "forbidden"
    await bob["queue.list"]({})
    await bob["request.revoke"]({"id": "4", "reason": "done"})
    calls: list[Any] = services.approvals.calls
    assert calls == [("queue", "bob", None), ("revoke", "bob", (4, "done"))]


@pytest.mark.parametrize("params, code", [
    ({"id": "x1", "decision": "approve"}, "bad_request"),
    ({"id": 5, "decision": "approve"}, "bad_request"),
    ({"id": "1" * 13, "decision": "approve"}, "bad_request"),
    ({"id": "5", "decision": "yes"}, "bad_request"),
    ({"id": "13", "decision": "approve"}, "refused"),  # the service's refusal reaches the menu as such
])
async def test_decisions_are_checked_for_shape(services: Services, params: dict[str, Any], code: str) -> None:
    assert await refused(menu(services, "bob").table()["request.decide"](params)) == code


async def test_a_decision_reaches_the_service_as_the_connections_user(services: Services) -> None:
    out = await menu(services, "bob").table()["request.decide"]({"id": "7", "decision": "deny", "reason": "no"})
    assert out == {"id": 7, "status": "denied"}
    assert services.approvals.calls == [("decide", "bob", (7, False, "no"))]


async def test_recordings_are_for_auditors_and_filters_are_checked(services: Services) -> None:
    store: FakeStore = services.store
    for user in ("alice", "bob"):
        assert await refused(menu(services, user).table()["recordings.list"]({})) == "forbidden"
    eve = menu(services, "eve").table()
    assert await refused(eve["recordings.list"]({"user": ["a"]})) == "bad_request"
    assert await refused(eve["recordings.list"]({"since": "yesterday-ish"})) == "bad_request"
    assert await refused(eve["recordings.list"]({"policy": "everything"})) == "bad_request"
    assert store.asked == []
    rows = (await eve["recordings.list"]({"user": "alice", "since": "7d"}))["sessions"]
    assert [r["id"] for r in rows] == ["s1"] and rows[0]["recorded"] is True and "client_addr" not in rows[0]
    (what, filters), = store.asked
    assert what == "sessions" and filters["user"] == "alice" and filters["since"] is not None
    assert rows[0]["risk"] == ["blocked"] and rows[0]["verdict"] == ""  # an auditor sees what to look at
    assert await refused(eve["recordings.list"]({"risk": "spicy"})) == "bad_request"
    assert await refused(eve["recordings.list"]({"reviewed": "maybe"})) == "bad_request"
    await eve["recordings.list"]({"risk": "any", "reviewed": "no"})
    assert store.asked[-1][1]["risk"] == "any" and store.asked[-1][1]["reviewed"] is False
    assert await refused(eve["recording.detail"]({"id": "nope"})) == "not_found"
    assert await refused(eve["recording.bookmark"]({"id": "nope", "t": 1, "note": "x"})) == "not_found"
    assert await refused(eve["timeline"]({"grant": "7"})) == "bad_request"
    assert await refused(menu(services, "alice").table()["timeline"]({"user": "bob"})) == "forbidden"


async def test_before_sign_in_only_the_login_methods_answer(services: Services) -> None:
    table = menu(services, None, pending=True).table()
    for method in ("hello", "resources.list", "resource.open", "queue.list", "recordings.list", "sessions.live"):
        if method == "hello":
            continue
        assert await refused(table[method]({})) == "login_required"
    assert (await table["hello"]({}))["login_required"] is True
    assert await refused(table["login.start"]({})) == "refused"  # no OIDC in this config


async def test_live_sessions_are_for_reviewers_and_auditors(services: Services) -> None:
    assert await refused(menu(services, "alice").table()["sessions.live"]({})) == "forbidden"
    assert (await menu(services, "bob").table()["sessions.live"]({})) == {"sessions": [], "more": 0}
    eve = menu(services, "eve").table()
    assert await refused(eve["session.terminate"]({"id": "s", "reason": " "})) == "bad_request"
    # the reason is written on the operator's terminal: an escape sequence never reaches it
    assert await refused(eve["session.terminate"]({"id": "s", "reason": "bye\x1b[2J"})) == "bad_request"
    assert await refused(eve["session.terminate"]({"id": "s", "reason": "audit"})) == "not_found"
    assert await refused(eve["session.observe"]({"id": "s"})) == "not_found"


async def test_the_menus_log_lines_are_escaped_and_capped(services: Services,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    table = menu(services, "alice").table()
    assert await refused(table["log"]({"level": "EVIL", "message": "x"})) == "bad_level"
    with caplog.at_level(logging.INFO, logger="bastion.rpc.menu"):
        await table["log"]({"level": "INFO", "message": "a\x1b[2Jb\nforged line"})
        for _ in range(300):
            await table["log"]({"level": "INFO", "message": "flood"})
    texts = [r.getMessage() for r in caplog.records]
    assert texts[0] == "tui[alice@192.0.2.7:40000]: a\\x1b[2Jb\n    | forged line"
    assert sum("flood" in t for t in texts) == 199 and any("dropping the rest" in t for t in texts)
