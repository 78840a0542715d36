"""The auditor's workflow, through the stock OpenSSH client: a timeline per grant and per person (access request,
its approval, the ssh and psql sessions opened under each grant, in order, with replay offsets); bookmarks and
verdicts kept beside recordings (they survive a restart, show in F5, in the player and in the HTML export, and
`audit verify` still passes: the casts are untouched); F5's risk and reviewed filters; the report's unreviewed
risky sessions."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.approvals import ACCESS_RULE, ApprovalStore
from bastion.store.db import Store
from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.integration.test_approvals_e2e import wait_stderr_line
from tests.integration.test_postgres_e2e import PASSWORD, pg  # noqa: F401 (a fixture)
from tests.support.keys import free_port
from tests.support.postgres import PgServer
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
ROLE = "  breakglass: {groups: [ops], request: [secret-db, secret-pg], request_ttl: 600}\n"


@pytest.fixture(scope="module")
def audited(pg: PgServer, bastion_env: BastionEnv,  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    """``secret-db`` (ssh) and ``secret-pg`` (psql), both on request for alice (breakglass); restartable."""
    base = bastion_env
    d = tmp_path_factory.mktemp("audited")
    (d / "state").mkdir()
    (d / "db.pw").write_text(PASSWORD + "\n")
    port = free_port()
    cfg = write_config(d, port, base.keys, base.target, base.target_key, extra_roles=ROLE, extra_resources=f"""\
  secret-pg:
    kind: postgres
    description: the customers database, on request
    host: 127.0.0.1
    port: {pg.port}
    database: app
    user: app
    credential: {{password_file: {d / 'db.pw'}}}
    tls: {{mode: disable}}
""")
    log = d / "bastion.out"
    env = BastionEnv(d, cfg, port, base.keys, base.target, base.target_key, start_bastion(cfg, port, log), log)
    try:
        yield env
    finally:
        stop_bastion(env.proc)


def ssh(env: BastionEnv, user: str, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_argv(env.keys[user], env.port, user, *words, tty=False), capture_output=True,
                          text=True, timeout=60)


def granted(env: BastionEnv, resource: str, command: str) -> int:
    """alice asks for ``resource`` by running ``command`` there; bob grants it from his own ssh; the grant."""
    proc = subprocess.Popen(ssh_argv(env.keys["alice"], env.port, "alice", resource, "--", command, tty=False),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_stderr_line(proc, "waiting for approval")
    store = ApprovalStore(Store(load_config(env.config).database_url))
    rid = max(r.id for r in store.pending() if r.rule == ACCESS_RULE and r.resource == resource)
    assert ssh(env, "bob", "approve", str(rid)).returncode == 0
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return rid


def timeline(env: BastionEnv, *how: str) -> list[dict]:
    out = env.bastion("audit", "timeline", *how, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_grants_timeline_lists_it_its_approval_and_its_sessions_in_order(audited: BastionEnv) -> None:
    env = audited
    ssh_grant = granted(env, "secret-db", "echo FIRST-UNDER-GRANT")
    again = ssh(env, "alice", "secret-db", "--", "echo SECOND-UNDER-GRANT")  # within the grant: no new request
    assert again.returncode == 0 and "waiting" not in again.stderr
    pg_grant = granted(env, "secret-pg", "SELECT count(*) FROM customers")
    lines = timeline(env, "--grant", str(ssh_grant))
    actions = [(e["actor"], e["action"], e["outcome"]) for e in lines]
    assert actions[0] == ("alice", "approval.request", "pending")
    assert ("bob", "approval.decision", "approve") in actions
    starts = [e for e in lines if e["action"] == "session.start"]
    assert len(starts) == 2 and all(e["resource"] == "secret-db" for e in starts)
    assert actions.index(("bob", "approval.decision", "approve")) < lines.index(starts[0])
    assert [e["seq"] for e in lines] == sorted(e["seq"] for e in lines)
    for e in starts:  # each with where to replay it, and that place plays
        assert e["replay"] and e["replay"].startswith(e["session"])
        sid, _, at = e["replay"].partition(" --from ")
        assert env.bastion("replay", sid, "--from", at, "--speed", "100", "--idle-limit", "0").returncode == 0
    assert not any(e["resource"] == "secret-pg" for e in lines)  # another grant's
    pg_lines = timeline(env, "--grant", str(pg_grant))
    assert [e["resource"] for e in pg_lines if e["action"] == "session.start"] == ["secret-pg"]
    # alice's own timeline: both grants and all three sessions, in the order they happened
    mine = [e for e in timeline(env, "--user", "alice") if e["action"] in ("approval.request", "session.start")]
    assert [(e["action"], e["resource"]) for e in mine][-5:] == [
        ("approval.request", "secret-db"), ("session.start", "secret-db"), ("session.start", "secret-db"),
        ("approval.request", "secret-pg"), ("session.start", "secret-pg")]


def test_bookmarks_and_verdicts_are_kept_beside_the_recording(audited: BastionEnv, tmp_path: Path) -> None:
    env = audited
    with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", "-t", "web"), cols=120, rows=30) as alice:
        alice.wait_for_raw(r"[#$] \Z")
        alice.send("echo BOOKMARK-ME\r")
        alice.wait_for(r"BOOKMARK-ME")
        alice.send("rm -f /nonexistent-bastion-test\r")  # typed: blocked by the line filter
        alice.wait_for_raw(r"blocked by rule 'no-rm'")
        alice.send("for i in 1 2 3 4 5 6 7 8 9 10; do echo TICK-$i; sleep 1; done\r")  # time for b in the replay
        alice.wait_for(r"TICK-10", 30)
        alice.send("exit\r")
        alice.wait_exit(30)
    ok = ssh(env, "alice", "web", "--", "echo HARMLESS")
    assert ok.returncode == 0
    sessions = json.loads(env.bastion("sessions", "list", "--json").stdout)
    blocked = next(s for s in sessions if s["user"] == "alice" and s["mode"] == "interactive")["id"]
    harmless = next(s for s in sessions if s["command"] == "echo HARMLESS")["id"]
    report = json.loads(env.bastion("audit", "report", "--from", "1h").stdout)
    risky = {u["session"]: u["risk"] for u in report["unreviewed_risky"]}
    assert "blocked" in risky.get(blocked, []) and harmless not in risky
    assert env.bastion("audit", "bookmark", blocked, "--at", "0:00", "--note", "look at the rm").returncode == 0
    bad = env.bastion("audit", "review", blocked, "--verdict", "incident")  # an incident needs a comment
    assert bad.returncode == 2 and "comment" in bad.stderr
    assert env.bastion("audit", "review", blocked, "--verdict", "follow-up", "--comment",
                       "ask alice why").returncode == 0
    # a restart changes nothing of it
    stop_bastion(env.proc)
    env.proc = start_bastion(env.config, env.port, env.log)
    notes = json.loads(env.bastion("audit", "notes", blocked, "--json").stdout)
    assert [b["note"] for b in notes["bookmarks"]] == ["look at the rm"]
    assert notes["reviews"][0]["verdict"] == "follow-up" and "blocked" in notes["risk"]
    report = json.loads(env.bastion("audit", "report", "--from", "1h").stdout)
    assert blocked not in {u["session"] for u in report["unreviewed_risky"]}  # reviewed now
    page = tmp_path / "s.html"
    assert env.bastion("replay", blocked, "--html", str(page)).returncode == 0
    assert "look at the rm" in page.read_text()
    verify = env.bastion("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # F5: the risk filter, the verdict, the bookmark among the markers; p replays with it; b in the player keeps one
    with Terminal(ssh_argv(env.keys["eve"], env.port, "eve", tty=True), cols=170, rows=40) as eve:
        eve.wait_for(r"roles: .*auditors")
        eve.send_key("f5")
        eve.wait_for(r"\d+ session\(s\) · Enter opens")
        eve.send("/user=alice risk=blocked")
        eve.wait_for(r"▊  user=alice risk=blocked\s")  # typed into the filter box, all of it
        eve.send("\r")
        eve.wait_for(r"\d+ session\(s\) · user=alice risk=blocked")  # the status line: the list is filtered
        eve.wait_for(rf"{blocked}.*blocked\s+follow-up")
        assert harmless not in eve.screen_text()
        eve.send_key("enter")
        eve.wait_for(r"verdict: follow-up by admin:\S+: ask alice why")
        eve.wait_for(r"bookmark by admin:\S+: look at the rm")
        eve.send("p")
        eve.wait_for(r"TICK-1\b")  # the replay is ten seconds from its end: b pauses it for the note
        eve.send("b")
        eve.wait_for(r"bookmark at \d+:\d+, note:")
        eve.send("seen in the player\r")
        eve.send("q")  # playing on (or at its end): q leaves the player
        eve.wait_for(r"1 bookmark\(s\) kept")
        eve.send("v")
        eve.wait_for(r"Verdict on")
        eve.send("ok\r")
        eve.wait_for(r"verdict: ok")
    notes = json.loads(env.bastion("audit", "notes", blocked, "--json").stdout)
    assert {(b["author"], b["note"]) for b in notes["bookmarks"]} >= {("eve", "seen in the player")}
    assert notes["reviews"][0]["verdict"] == "ok" and notes["reviews"][0]["reviewer"] == "eve"
    events = Store(load_config(env.config).database_url).audit_events(400, session_id=blocked)
    kinds = {(e.actor, e.action) for e in events}
    assert ("eve", "recording.bookmark") in kinds and ("eve", "recording.review") in kinds
    assert re.search(r"admin:\S+", str([e.actor for e in events if e.action == "recording.review"]))
    assert env.bastion("audit", "verify").returncode == 0
