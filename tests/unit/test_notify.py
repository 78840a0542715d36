"""Notifications without a daemon: the config's ``notify:`` (problems named by file and line), the events derived
from audit events and their JSON body, routing, the webhook signature, the Slack and email renderings, the
outbox's claim/lease/finish rules and the backoff."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.config import Config, ConfigError, load_config
from bastion.notify import outbox
from bastion.notify.events import WITHHELD, Enqueuer
from bastion.notify.formats import body_bytes, email_message, sign, slack_message, verify, webhook_request
from bastion.store.approvals import ACCESS_RULE, ApprovalStore
from bastion.store.db import Store, now
from bastion.store.models import NotifyOutbox

BASE = """\
listen: {host: 127.0.0.1, port: 2222}
host_keys: [host_key]
database: sqlite:///bastion.db
recordings_dir: rec
resources: {}
roles:
  reviewers: {groups: [reviewers], review: true}
  dbas: {groups: [dba], review: ["db-*"]}
"""


def config(tmp_path: Path, notify: str, *, check: bool = True) -> Config:
    (tmp_path / "hook.secret").write_text("s3cret-hook\n")
    (tmp_path / "slack.url").write_text("https://hooks.slack.test/services/T/B/XYZ\n")
    (tmp_path / "smtp.pw").write_text("pw\n")
    p = tmp_path / "bastion.yaml"
    p.write_text(BASE + notify)
    cfg = load_config(p, check_files=False)
    if check:  # the notify checks alone (the others want host keys and the like on disk)
        from bastion.config.notify import notify_problems
        from bastion.config.problems import problem

        problems = [problem(cfg.path, cfg.lines, loc, msg) for loc, msg in notify_problems(cfg)]
        if problems:
            raise ConfigError(problems)
    return cfg


NOTIFY = """\
notify:
  server: bastion.corp
  webhook:
    - name: hook
      url: http://127.0.0.1:9/hook
      secret_file: hook.secret
  slack:
    - name: dba-chat
      url_file: slack.url
      roles: [dbas]
      events: [request.created, command.blocked]
  email:
    - name: mail
      smtp: {host: 127.0.0.1, port: 2525, username: bastion, password_file: smtp.pw}
      sender: bastion@corp.test
      to: [oncall@corp.test]
      resources: ["web*"]
"""


# -- config ------------------------------------------------------------------------------------------------
def test_a_notify_section_loads(tmp_path: Path) -> None:
    cfg = config(tmp_path, NOTIFY)
    assert [t.name for t in cfg.notify.targets()] == ["hook", "dba-chat", "mail"]
    assert "command.blocked" not in cfg.notify.webhook[0].events  # opt-in
    assert cfg.notify.email[0].smtp.starttls  # on unless turned off


@pytest.mark.parametrize(("edit", "expected"), [
    (("url: http://127.0.0.1:9/hook", "url: http://hooks.example.com/x"),
     r"bastion.yaml:13: notify.webhook\[0\].url: .*https:// \(plain http only to a loopback address\)"),
    (("url: http://127.0.0.1:9/hook", "url: https://u:p@hooks.example.com/x"),
     r"bastion.yaml:13: notify.webhook\[0\].url: .*must not carry credentials"),
    (("      secret_file: hook.secret\n", ""), r"bastion.yaml:12: notify.webhook\[0\].secret_file: required key"),
    (("events: [request.created, command.blocked]", "events: [request.made]"),
     r"bastion.yaml:19: notify.slack\[0\].events\[0\]: Input should be"),
    (("password_file: smtp.pw}", "password_file: smtp.pw, colour: red}"),
     r"bastion.yaml:22: notify.email\[0\].smtp.colour: unknown key"),
    (("to: [oncall@corp.test]", "to: []"), r"bastion.yaml:24: notify.email\[0\].to: List should have at least 1"),
    (("url_file: slack.url", "url_file: slack.url\n      url: https://x.test/"),
     r"bastion.yaml:16: notify.slack\[0\]: .*exactly one of url and url_file"),
])
def test_schema_problems_name_file_and_line(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        config(tmp_path, NOTIFY.replace(*edit))


@pytest.mark.parametrize(("edit", "expected"), [
    (("roles: [dbas]", "roles: [dbas, nobody]"), r"bastion.yaml:18: notify.slack\[0\].roles\[1\]: no role 'nobody'"),
    (("secret_file: hook.secret", "secret_file: missing.secret"),
     r"bastion.yaml:14: notify.webhook\[0\].secret_file: cannot read .*missing.secret"),
    (("name: mail", "name: hook"), r"bastion.yaml:21: notify.email\[0\].name: target name 'hook' is used twice"),
    (("password_file: smtp.pw", "password_file: empty.pw"), r"bastion.yaml:22: .*smtp.password_file: .*empty.pw"),
])
def test_semantic_problems_name_file_and_line(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    (tmp_path / "empty.pw").write_text("\n")
    with pytest.raises(ConfigError, match=expected):
        config(tmp_path, NOTIFY.replace(*edit))


def test_a_url_file_must_hold_a_usable_url(tmp_path: Path) -> None:
    cfg_text = NOTIFY.replace("url_file: slack.url", "url_file: bad.url")
    (tmp_path / "bad.url").write_text("http://chat.example.com/hook\n")
    with pytest.raises(ConfigError, match=r"bastion.yaml:17: notify.slack\[0\].url_file: the URL in it must be "
                                          r"https://"):
        config(tmp_path, cfg_text)


def test_the_lease_must_outlive_an_attempt(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bastion.yaml:26: notify.delivery: .*lease must be longer than timeout"):
        config(tmp_path, NOTIFY + "  delivery: {timeout: 30, lease: 10}\n")


# -- events, payload, routing -------------------------------------------------------------------------------
@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'n.db'}")
    s.migrate()
    yield s
    s.engine.dispose()


def rows(store: Store) -> list[NotifyOutbox]:
    with store.tx() as s:
        return list(s.query(NotifyOutbox).order_by(NotifyOutbox.id))


def hooked(tmp_path: Path, store: Store, notify: str = NOTIFY) -> Config:
    cfg = config(tmp_path, notify)
    store.on_audit = Enqueuer(lambda: cfg, "node-1")
    return cfg


def test_a_held_command_is_enqueued_with_the_request_s_text_for_routed_targets(tmp_path: Path,
                                                                                store: Store) -> None:
    hooked(tmp_path, store)
    db = ApprovalStore(store)
    r = db.create(requester="alice", resource="web1", session_id="s1", text="chmod 600 /etc/x", rule="chmod",
                  reason="needs a reviewer", approvals_needed=2, approver_roles=["reviewers"], timeout=60,
                  node="node-1")
    store.audit("alice", "approval.request", "pending", resource="web1", session_id="s1", request_id=r.id,
                rule="chmod", text=r.text)
    got = rows(store)
    # the Slack target is for dbas only (reviewers review web1); the mail target for web*
    assert [(x.target, x.event) for x in got] == [("hook", "request.created"), ("mail", "request.created")]
    body = got[0].payload
    assert body == got[1].payload and got[0].event_id == body["id"] and len(body["id"]) == 64
    assert {k: body[k] for k in ("version", "event", "node", "user", "resource", "request_id", "request_kind",
                                 "text", "rule", "status", "approvals", "hint")} == {
        "version": 1, "event": "request.created", "node": "node-1", "user": "alice", "resource": "web1",
        "request_id": r.id, "request_kind": "command", "text": "chmod 600 /etc/x", "rule": "chmod",
        "status": "pending", "approvals": {"given": 0, "needed": 2}, "hint": f"ssh -t bastion.corp review {r.id}"}
    assert body["expires_at"].endswith("Z") and body["time"].endswith("Z")
    assert store.audit_events()[0].hash == body["id"]  # the audit event's own hash: cross-referenced


def test_decisions_grants_revocations_and_ends_become_their_events(tmp_path: Path, store: Store) -> None:
    hooked(tmp_path, store, NOTIFY.replace("      resources: [\"web*\"]\n", ""))
    db = ApprovalStore(store)
    acc = db.create(requester="alice", resource="db-main", session_id="s1", text="open db-main", rule=ACCESS_RULE,
                    reason="", approvals_needed=1, approver_roles=[], timeout=60, node="node-1")
    db.decide(acc.id, "bob", True, "ok")
    store.audit("bob", "approval.decision", "approve", resource="db-main", request_id=acc.id)
    db.revoke(acc.id, "bob", "done")
    store.audit("bob", "access.revoke", "revoked", resource="db-main", request_id=acc.id)
    cmd = db.create(requester="alice", resource="web1", session_id="s2", text="chmod", rule="chmod", reason="",
                    approvals_needed=1, approver_roles=[], timeout=60, node="node-1")
    db.finish(cmd.id, "withdrawn", "withdrawn by the requester")
    store.audit("alice", "approval.withdrawn", "withdrawn", resource="web1", request_id=cmd.id)
    store.audit("bob", "session.terminate", "ok", resource="web1", session_id="s2", user="alice", reason="stop")
    store.audit("alice", "session.end", "exited", resource="web1")  # not a notification
    hook = [(x.event, x.payload["status"], x.payload["hint"]) for x in rows(store) if x.target == "hook"]
    assert hook == [("access.granted", "approved", None), ("access.revoked", "revoked", None),
                    ("request.withdrawn", "withdrawn", None), ("session.terminated", "terminated", None)]
    term = [x.payload for x in rows(store) if x.event == "session.terminated"][0]
    assert (term["user"], term["actor"], term["reason"]) == ("alice", "bob", "stop")


def test_blocked_commands_are_opt_in_and_never_carry_unechoed_text(tmp_path: Path, store: Store) -> None:
    hooked(tmp_path, store, NOTIFY.replace("roles: [dbas]", "resources: ['*']"))
    store.audit("alice", "command.block", "block", resource="db-1", rule="no-rm", text="rm -rf /",
                mode="interactive")
    store.audit("alice", "command.block", "block", resource="db-1", rule="no-rm", text="rm x [typed without echo]",
                mode="interactive", echo="off")
    got = rows(store)
    assert [x.target for x in got] == ["dba-chat", "dba-chat"]  # only the target that asked for blocks
    assert [x.payload["text"] for x in got] == ["rm -rf /", WITHHELD]


def test_routing_by_role_follows_who_reviews_the_resource(tmp_path: Path, store: Store) -> None:
    cfg = hooked(tmp_path, store)
    db = ApprovalStore(store)
    for res in ("db-main", "web1"):
        r = db.create(requester="alice", resource=res, session_id="s", text="x", rule="r", reason="",
                      approvals_needed=1, approver_roles=[], timeout=60, node="n")
        store.audit("alice", "approval.request", "pending", resource=res, request_id=r.id)
    assert sorted((x.target, x.payload["resource"]) for x in rows(store)) == [
        ("dba-chat", "db-main"), ("hook", "db-main"), ("hook", "web1"), ("mail", "web1")]
    assert cfg.roles["dbas"].reviews("db-main")


def test_no_targets_no_rows_and_a_broken_builder_never_costs_the_audit_event(tmp_path: Path, store: Store) -> None:
    hooked(tmp_path, store, "")
    store.audit("alice", "command.block", "block", resource="web1", text="rm")
    assert rows(store) == []
    cfg = config(tmp_path, NOTIFY)

    def broken() -> Config:
        raise_on = type("C", (), {"notify": cfg.notify, "resources": None, "roles": {}, "listen": cfg.listen})
        return raise_on  # type: ignore[return-value]

    store.on_audit = Enqueuer(broken, "n")
    store.audit("bob", "session.terminate", "ok", resource="web1", user="alice")
    assert store.audit_events()[0].action == "session.terminate" and rows(store) == []


# -- formats -----------------------------------------------------------------------------------------------
BODY: dict[str, Any] = {
    "version": 1, "id": "ab" * 32, "event": "request.created", "time": "2030-01-01T00:00:00Z", "node": "n1",
    "actor": "alice", "user": "alice", "resource": "web1", "resource_kind": "ssh", "session_id": "s",
    "request_id": 7, "request_kind": "command", "text": "chmod 600 <x> && echo ```", "rule": "chmod",
    "reason": "needs one", "status": "pending", "status_reason": "", "approvals": {"given": 0, "needed": 1},
    "approver_roles": [], "created_at": "2030-01-01T00:00:00Z", "expires_at": "2030-01-01T00:10:00Z",
    "decisions": [], "hint": "ssh -t bastion.corp review 7"}


@given(secret=st.binary(min_size=1, max_size=64), ts=st.integers(0, 2**40), body=st.binary(max_size=256),
       flip=st.integers(0, 10_000))
def test_a_signature_verifies_and_any_change_breaks_it(secret: bytes, ts: int, body: bytes, flip: int) -> None:
    sig = sign(secret, ts, body)
    assert sig.startswith("sha256=") and len(sig) == 71
    assert verify(secret, str(ts), body, sig, now=ts + 10)
    assert not verify(secret, str(ts), body, sig, now=ts + 301)  # too old: a replay
    assert not verify(secret, str(ts + 1), body, sig, now=ts)  # the timestamp is signed
    if body:
        i = flip % len(body)
        changed = body[:i] + bytes([body[i] ^ 1]) + body[i + 1:]
        assert not verify(secret, str(ts), changed, sig, now=ts)


def test_the_webhook_request_signs_the_exact_bytes_it_sends() -> None:
    data, headers = webhook_request(BODY, b"k", 1_900_000_000)
    assert json.loads(data) == BODY and data == body_bytes(BODY)
    assert headers["X-Bastion-Timestamp"] == "1900000000"
    assert verify(b"k", headers["X-Bastion-Timestamp"], data, headers["X-Bastion-Signature"], now=1_900_000_001)
    assert headers["X-Bastion-Delivery"] == BODY["id"] and headers["X-Bastion-Event"] == "request.created"


def test_slack_blocks_say_who_what_where_rule_and_age_escaped() -> None:
    from datetime import datetime

    msg = slack_message(BODY, now=datetime.fromisoformat("2030-01-01T00:01:05+00:00"))
    text = json.dumps(msg)
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in msg["blocks"][1]["fields"]}
    assert fields["*Who*"] == "alice" and fields["*Where*"] == "web1 (node n1)" and fields["*Rule*"] == "chmod"
    assert fields["*Age*"] == "1m 5s" and fields["*Approvals*"] == "0 of 1"
    assert "&lt;x&gt;" in text and "<x>" not in text  # no mrkdwn link injection
    what = msg["blocks"][2]["text"]["text"]
    assert what.startswith("*What*\n```") and what.count("```") == 2  # the text cannot close its code block
    assert "ssh -t bastion.corp review 7" in text and msg["text"] == "Approval needed: #7 alice on web1"


def test_the_mail_has_the_summary_as_subject_and_the_hint() -> None:
    msg = email_message(BODY, "bastion@corp.test", ["a@corp.test", "b@corp.test"])
    assert msg["Subject"] == "[bastion] Approval needed: #7 alice on web1" and msg["To"] == "a@corp.test, b@corp.test"
    body = msg.get_content()
    assert "    chmod 600 <x> && echo ```" in body and "To review: ssh -t bastion.corp review 7" in body


# -- outbox: claim, lease, finish, backoff ---------------------------------------------------------------------
def enqueue(store: Store, n: int, target: str = "hook") -> None:
    with store.tx() as s:
        for i in range(n):
            s.add(NotifyOutbox(event_id=f"{i:064x}", target=target, event="request.created", payload={"id": str(i)},
                               created_at=now(), status="pending", next_at=now(), attempts=0))


def test_each_row_is_claimed_by_one_of_many_concurrent_workers(store: Store) -> None:
    enqueue(store, 60)
    got: list[list[int]] = []

    def worker() -> None:
        mine: list[int] = []
        for _ in range(10):
            mine += [c.id for c in outbox.claim(Store(store.url), lease=60, limit=7)]
        got.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [i for g in got for i in g]
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 60


def test_a_lease_expires_and_only_its_holder_finishes(store: Store) -> None:
    enqueue(store, 1)
    (first,) = outbox.claim(store, lease=60)
    assert outbox.claim(store, lease=60) == []  # held
    with store.tx() as s:  # the holder died; its lease ran out
        s.query(NotifyOutbox).update({NotifyOutbox.lease_until: now() - timedelta(seconds=1)})
    (second,) = outbox.claim(store, lease=60)
    assert second.attempts == 2
    assert not outbox.delivered(store, first)  # the old holder cannot finish it any more
    assert outbox.retry(store, second, "HTTP 503", delay=3600)
    assert outbox.claim(store, lease=60) == []  # not due for an hour
    (st_,) = outbox.status(store, ["hook", "mail"])[:1]
    assert (st_.pending, st_.delivered, st_.failed, st_.last_error) == (1, 0, 0, "HTTP 503")


def test_release_gives_a_stopping_worker_s_rows_back_at_once(store: Store) -> None:
    enqueue(store, 2)
    held = outbox.claim(store, lease=600)
    outbox.release(store, [c.token for c in held])
    again = outbox.claim(store, lease=600)
    assert [c.attempts for c in again] == [1, 1]
    assert all(outbox.delivered(store, c) for c in again)
    assert [(r.target, r.pending, r.delivered) for r in outbox.status(store, ["hook"])] == [("hook", 0, 2)]
    assert outbox.prune(store, keep_days=0.01) == 0  # kept for keep_days


@given(attempt=st.integers(1, 200), base=st.floats(0.05, 100), cap=st.floats(0.05, 86400), r=st.floats(0, 1))
def test_backoff_grows_exponentially_up_to_the_cap_with_jitter(attempt: int, base: float, cap: float,
                                                               r: float) -> None:
    d = outbox.backoff(attempt, base, cap, r)
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert ceiling / 2 - 1e-9 <= d <= ceiling + 1e-9
    assert d <= outbox.backoff(attempt + 1, base, cap, r) + 1e-9  # never shorter for a later attempt (same r)
