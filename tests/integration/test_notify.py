"""Notifications end to end, through the stock OpenSSH client, to real receivers on loopback: a webhook receiver
that checks the HMAC signature and the JSON schema, a Slack-compatible endpoint, an SMTP server that requires
STARTTLS and a login; and durability: a receiver down for 30 s while two nodes share a PostgreSQL store and one of
them restarts gets every event, each exactly once."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bastion.demo.devcerts import make_server_cert
from bastion.store.db import Store
from bastion.store.models import NotifyOutbox
from tests.integration.conftest import BastionEnv, own_bastion, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port
from tests.support.postgres import scratch_database
from tests.support.procs import stop_ssh_client
from tests.support.receivers import HookReceiver, MailReceiver
from tests.support.review import approve
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
SECRET = b"hook-secret-" + secrets.token_hex(8).encode()
FAST = "  delivery: {poll: 0.2, backoff: 0.2, max_backoff: 1, timeout: 2, lease: 5}\n"
DOWN = 30.0  # seconds the receiver is away in the durability test


def notify_config(d: Path, hook: HookReceiver, mail: MailReceiver | None = None, ca: Path | None = None,
                  delivery: str = FAST) -> str:
    (d / "hook.secret").write_text(SECRET.decode() + "\n")
    (d / "slack.url").write_text(f"{hook.url}/slack\n")
    (d / "smtp.pw").write_text("mail-pw\n")
    out = f"""\
notify:
  server: bastion.test
  webhook:
    - name: hook
      url: {hook.url}/hook
      secret_file: hook.secret
      events: [request.created, request.decided, request.expired, request.withdrawn, request.cancelled,
               access.granted, access.revoked, session.terminated, command.blocked]
"""
    if mail is not None:
        out += f"""\
  slack:
    - name: chat
      url_file: slack.url
      roles: [reviewers]
      events: [request.created, request.decided]
  email:
    - name: mail
      smtp: {{host: 127.0.0.1, port: {mail.port}, username: bastion, password_file: smtp.pw, ca_file: {ca}}}
      sender: bastion@corp.test
      to: [oncall@corp.test]
      events: [request.created]
"""
    return out + delivery


def run(env: BastionEnv, user: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_argv(env.keys[user], env.port, user, "web", "--", command, tty=False),
                          capture_output=True, text=True, timeout=60)


def held(env: BastionEnv, command: str) -> subprocess.Popen[str]:
    """alice's command, held for a reviewer: returned once the bastion says it waits."""
    proc = subprocess.Popen(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", command, tty=False),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "waiting for approval" in line, line
    return proc


def withdraw(proc: subprocess.Popen[str]) -> None:
    """The operator gives up (the ssh client goes away): the request is withdrawn."""
    stop_ssh_client(proc)  # repeated: a held command's client may sit in poll() past one signal


@pytest.fixture()
def receivers(tmp_path: Path) -> Iterator[tuple[HookReceiver, MailReceiver, Path]]:
    cert = make_server_cert(tmp_path / "tls")
    hook, mail = HookReceiver(SECRET), MailReceiver(cert.cert, cert.key, "bastion", "mail-pw")
    hook.start()
    mail.start()
    try:
        yield hook, mail, cert.ca
    finally:
        hook.stop()
        mail.stop()


def test_webhook_slack_and_mail_hear_of_blocks_requests_and_decisions(
        bastion_env: BastionEnv, tmp_path: Path, receivers: tuple[HookReceiver, MailReceiver, Path]) -> None:
    hook, mail, ca = receivers
    with own_bastion(bastion_env, tmp_path, extra_top=notify_config(tmp_path, hook, mail, ca)) as env:
        blocked = run(env, "alice", "rm -f /tmp/nothing-here")
        assert blocked.returncode != 0 and "no-rm" in blocked.stderr
        hook.wait(lambda h: bool(h.events("command.blocked")), why="no command.blocked")
        (b,) = hook.events("command.blocked")
        assert (b["user"], b["resource"], b["rule"], b["text"]) == ("alice", "web", "no-rm", "rm -f /tmp/nothing-here")

        with Terminal(ssh_argv(env.keys["bob"], env.port, "bob", tty=True), cols=120, rows=30) as bob:
            bob.wait_for(r"roles: .*reviewers")
            bob.send_key("f2")
            bob.wait_for(r"Pending approval requests")
            proc = held(env, "chmod 600 /nonexistent-notify")
            hook.wait(lambda h: bool(h.events("request.created")), why="no request.created")
            (c,) = hook.events("request.created")
            rid = c["request_id"]
            assert (c["user"], c["resource"], c["resource_kind"], c["text"], c["rule"], c["status"]) == (
                "alice", "web", "ssh", "chmod 600 /nonexistent-notify", "chmod-needs-approval", "pending")
            assert c["approvals"] == {"given": 0, "needed": 1} and c["hint"] == f"ssh -t bastion.test review {rid}"
            assert c["expires_at"] > c["time"] and c["node"] and c["_delivery"] == c["id"]
            bob.wait_for(r"chmod 600 /nonexistent-notify")
            approve(bob)
            _, err = proc.communicate(timeout=30)
            assert "approved" in err
        hook.wait(lambda h: bool(h.events("request.decided")), why="no request.decided")
        (d,) = hook.events("request.decided")
        assert (d["request_id"], d["status"], d["actor"], d["approvals"]) == (rid, "approved", "bob",
                                                                              {"given": 1, "needed": 1})
        assert [x["reviewer"] for x in d["decisions"]] == ["bob"] and d["hint"] is None

        withdraw(held(env, "chmod 700 /nonexistent-notify"))
        hook.wait(lambda h: bool(h.events("request.withdrawn")), why="no request.withdrawn")
        assert hook.events("request.withdrawn")[0]["text"] == "chmod 700 /nonexistent-notify"

        # Slack: reviewers' requests and decisions only (3: created, decided, created)
        hook.wait(lambda h: len(h.slack) == 3, why="Slack got other than 3 messages")
        first = hook.slack[0]
        assert first["text"] == f"Approval needed: #{rid} alice on web"
        facts = json.dumps(first["blocks"])
        assert "*Who*\\nalice" in facts and "*Rule*\\nchmod-needs-approval" in facts and "*Age*" in facts
        assert SECRET.decode() not in json.dumps(hook.slack) and "/slack" not in json.dumps(hook.slack)
        # the mail: request.created only, over STARTTLS after a login
        mail.wait(2)
        rcpt, msg = mail.mails[0]
        assert rcpt == ["oncall@corp.test"] and msg["Subject"] == f"[bastion] Approval needed: #{rid} alice on web"
        assert f"To review: ssh -t bastion.test review {rid}" in msg.get_payload()
        # each event once, none refused; and the admin's view agrees
        assert hook.refused == []
        assert len({h["id"] for h in hook.hooks}) == len(hook.hooks) == 5
        status = {r["target"]: r for r in json.loads(env.bastion("notify", "status", "--json").stdout)}
        assert {t: (r["pending"], r["delivered"], r["failed"]) for t, r in status.items()} == {
            "hook": (0, 5, 0), "chat": (0, 3, 0), "mail": (0, 2, 0)}
        test = env.bastion("notify", "test", "hook")
        assert test.returncode == 0 and "hook: delivered" in test.stdout
        assert hook.hooks[-1]["event"] == "request.created" and hook.hooks[-1]["resource"] == "(test)"


def test_notify_status_shows_what_waits_and_why(bastion_env: BastionEnv, tmp_path: Path) -> None:
    hook = HookReceiver(SECRET)  # never started: nothing listens there
    with own_bastion(bastion_env, tmp_path, extra_top=notify_config(tmp_path, hook)) as env:
        assert run(env, "alice", "rm -f /tmp/x").returncode != 0
        deadline = time.monotonic() + 20
        while "ConnectError" not in (out := env.bastion("notify", "status").stdout):
            assert time.monotonic() < deadline, out
            time.sleep(0.2)
        row = [ln for ln in out.splitlines() if ln.startswith("hook ")][0]
        assert row.split()[1:4] == ["1", "0", "0"], out  # pending 1, delivered 0, failed 0
        test = env.bastion("notify", "test", "hook")
        assert test.returncode == 1 and "hook: not delivered: ConnectError" in test.stderr
        assert "Traceback" not in env.log.read_text()
        assert "notify hook: command.blocked" in env.log.read_text()  # one line per failed attempt


@pytest.fixture()
def pg_url() -> Iterator[str]:
    with scratch_database("bastion_notify") as url:
        yield url


def start_node(base: BastionEnv, d: Path, name: str, pg_url: str, hook: HookReceiver) -> BastionEnv:
    (d / "state").mkdir(parents=True, exist_ok=True)
    port = free_port()
    delivery = "  delivery: {poll: 0.3, backoff: 0.5, max_backoff: 2, timeout: 1, lease: 3}\n"
    cfg = write_config(d, port, base.keys, base.target, base.target_key,
                       extra_top=f"cluster: {{node_name: node-{name}, heartbeat_seconds: 0.5}}\n"
                                 + notify_config(d, hook, delivery=delivery))
    cfg.write_text(cfg.read_text().replace("database: sqlite:///state/bastion.db", f"database: {pg_url}"))
    return BastionEnv(d, cfg, port, base.keys, base.target, base.target_key, start_bastion(cfg, port, d / "out.log"),
                      d / "out.log")


def outbox(store: Store) -> list[NotifyOutbox]:
    with store.tx() as s:
        return list(s.scalars(select(NotifyOutbox).order_by(NotifyOutbox.id)))


def test_a_receiver_down_30s_gets_every_event_once_from_two_nodes_across_a_restart(
        bastion_env: BastionEnv, tmp_path: Path, pg_url: str) -> None:
    hook = HookReceiver(SECRET)  # down from the start
    nodes = {n: start_node(bastion_env, tmp_path / n, n, pg_url, hook) for n in ("A", "B")}
    store = Store(pg_url)
    try:
        down = time.monotonic()
        for n, env in nodes.items():
            for i in range(3):
                assert run(env, "alice", f"rm -f /tmp/{n}-{i}").returncode != 0
        withdraw(held(nodes["A"], "chmod 600 /nonexistent-A"))
        expected = 6 + 2  # six blocks, a request created and withdrawn
        deadline = time.monotonic() + 30
        while not (len(rows := outbox(store)) == expected and all(r.attempts >= 2 for r in rows)):
            assert time.monotonic() < deadline, [(r.event, r.attempts) for r in rows]  # retried while down
            time.sleep(0.2)
        assert {r.last_error.split(":")[0] for r in rows if r.last_error} == {"ConnectError"}

        a = nodes["A"]  # a restart in between: what A held is given back; both nodes keep trying
        stop_bastion(a.proc)
        nodes["A"] = BastionEnv(a.dir, a.config, a.port, a.keys, a.target, a.target_key,
                                start_bastion(a.config, a.port, a.log), a.log)
        while time.monotonic() - down < DOWN:  # the receiver stays away 30 s; nothing is given up meanwhile
            assert all(r.status == "pending" for r in outbox(store))
            time.sleep(0.5)
        hook.start()
        hook.wait(lambda h: len(h.hooks) >= expected, timeout=30, why="not every event arrived")
        deadline = time.monotonic() + 10
        while True:
            rows = outbox(store)
            if all(r.status == "delivered" for r in rows):
                break
            assert time.monotonic() < deadline, [(r.event, r.status) for r in rows]
            time.sleep(0.1)
        assert Counter(h["id"] for h in hook.hooks) == Counter({r.event_id: 1 for r in rows})  # each exactly once
        assert Counter(h["event"] for h in hook.hooks) == {"command.blocked": 6, "request.created": 1,
                                                          "request.withdrawn": 1}
        assert {h["node"] for h in hook.events("command.blocked")} == {"node-A", "node-B"}
        assert hook.refused == [] and max(r.attempts for r in rows) >= 3
    finally:
        hook.stop()
        for env in nodes.values():
            stop_bastion(env.proc)
        store.engine.dispose()
