"""The audit trail end to end: sessions through stock ssh, then `bastion audit search` finds what only the target
printed, `bastion audit verify` catches a changed byte, an altered, deleted or reordered event, and (with signed
heads) a cut-off chain."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config
from tests.integration.conftest import BastionEnv, own_bastion
from tests.support.chromium import Chromium, find_chromium
from tests.support.keys import make_keypair
from tests.support.ssh_client import ssh_argv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def audit_env(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    """A daemon of its own (its store gets tampered with), signing chain heads with an ed25519 key."""
    d = tmp_path_factory.mktemp("audit")
    signing, _ = make_keypair(d / "audit-signing", "audit")
    with own_bastion(bastion_env, d, extra_top=f"audit: {{signing_key_file: {signing}}}\n") as env:
        yield env


def db(env: BastionEnv) -> sqlite3.Connection:
    url = load_config(env.config).database_url
    return sqlite3.connect(url[len("sqlite:///"):], isolation_level=None, timeout=30)


def exec_session(env: BastionEnv, command: str) -> str:
    """Run ``command`` on web through the bastion; the new session's id."""
    before = {s["id"] for s in json.loads(env.bastion("sessions", "list", "--json").stdout)}
    out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", command, tty=False),
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    new = [s for s in json.loads(env.bastion("sessions", "list", "--json").stdout) if s["id"] not in before]
    assert len(new) == 1
    return new[0]["id"]


def search(env: BastionEnv, *args: str, wait: float = 30.0) -> list[dict]:
    """`bastion audit search --json`, retried while the daemon's indexer catches up."""
    deadline = time.monotonic() + wait
    while True:
        out = env.bastion("audit", "search", *args, "--json")
        hits = json.loads(out.stdout) if out.stdout.strip() else []
        if hits or time.monotonic() > deadline:
            return hits
        time.sleep(0.3)


def verify(env: BastionEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return env.bastion("audit", "verify", *args)


def test_search_finds_a_word_only_the_target_printed(audit_env: BastionEnv) -> None:
    env = audit_env
    sid = exec_session(env, "printf 'first line\\n'; sleep 1; echo ZQX-$((6*7))-END; printf 'last\\n'")
    hits = search(env, "zqx-42-end")  # case-insensitive; the command line only had ZQX-$((6*7))-END
    assert [(h["session"], h["kind"], h["user"], h["resource"]) for h in hits] == [(sid, "screen", "alice", "web")]
    assert hits[0]["text"] == "ZQX-42-END" and 0.9 <= hits[0]["t"] < 10  # printed after the sleep
    # the judged command is found among the commands, not on screen
    cmd = search(env, "ZQX-$((6*7))", "--only", "commands")
    assert cmd and all(h["session"] == sid and h["kind"] == "marker" for h in cmd)
    assert not search(env, "ZQX-$((6*7))", "--only", "screen", wait=0)
    # filters
    assert not search(env, "ZQX-42-END", "--user", "bob", wait=0)
    assert not search(env, "ZQX-42-END", "--resource", "web-down", wait=0)
    assert search(env, "ZQX-42-END", "--since", "1h", wait=0)
    assert not search(env, "ZQX-42-END", "--since", "2999-01-01", wait=0)
    # the table form points at the replay
    out = env.bastion("audit", "search", "ZQX-42-END")
    assert out.returncode == 0 and sid in out.stdout and "bastion replay SESSION --from AT" in out.stderr
    assert env.bastion("audit", "search", "no-such-word-anywhere").returncode == 1
    # rebuildable: wipe the index, rebuild it, same answer
    with db(env) as c:
        c.execute("DELETE FROM recording_text")
    assert not search(env, "ZQX-42-END", wait=0)
    out = env.bastion("audit", "reindex")
    assert out.returncode == 0, out.stderr
    assert [h["session"] for h in search(env, "ZQX-42-END", wait=0)] == [sid]


def test_replay_from_a_search_hit(audit_env: BastionEnv) -> None:
    env = audit_env
    sid = exec_session(env, "echo BEFORE-MARK; sleep 2; echo AFTER-MARK")
    out = env.bastion("replay", sid, "--from", "0:01", "--speed", "64")
    assert out.returncode == 0, out.stderr
    assert "BEFORE-MARK" in out.stdout and "AFTER-MARK" in out.stdout  # painted at 1 s, then played on
    out = env.bastion("replay", sid, "--to", "1")
    assert "BEFORE-MARK" in out.stdout and "AFTER-MARK" not in out.stdout
    assert env.bastion("replay", sid, "--from", "x").returncode == 2


def test_html_export_of_a_session_plays_offline(audit_env: BastionEnv) -> None:
    env = audit_env
    sid = exec_session(env, "echo HTML-$((3*3))-EXPORT")
    out_file = env.dir / f"{sid}.html"
    out = env.bastion("replay", sid, "--html", str(out_file))
    assert out.returncode == 0, out.stderr
    binary = find_chromium()
    assert binary is not None, "chromium is needed (scripts/setup --test installs it)"
    browser = Chromium(binary)
    try:
        browser.open(out_file.as_uri())
        assert browser.wait_for('document.body && document.body.dataset.state === "loading" && '
                                'document.querySelector("table.info").innerText')
        info = browser.eval('document.querySelector("table.info").innerText')
        assert sid in info and "alice" in info and "web" in info
        browser.eval("window.bastionPlayer.play()")
        text = 'document.querySelector(".ap-term-text") ? document.querySelector(".ap-term-text").innerText : ""'
        assert "HTML-9-EXPORT" in browser.wait_for(f'({text}).includes("HTML-9-EXPORT") && {text}')
        assert set(browser.requests) == {out_file.as_uri()}
    finally:
        browser.close()


def test_report_as_json_and_csv(audit_env: BastionEnv) -> None:
    env = audit_env
    sid = exec_session(env, "echo for-the-report")
    blocked = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", "rm -f /tmp/nothing",
                                      tty=False), capture_output=True, timeout=60)
    assert blocked.returncode == 1
    out = env.bastion("audit", "report", "--from", "1h")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert sid in [s["id"] for s in rep["sessions"]]
    assert any(b["rule"] == "no-rm" and b["text"] == "rm -f /tmp/nothing" for b in rep["blocked"])
    csv_file = env.dir / "report.csv"
    out = env.bastion("audit", "report", "--from", "1h", "--format", "csv", "--out", str(csv_file))
    assert out.returncode == 0 and "sessions" in out.stderr
    text = csv_file.read_text()
    assert text.startswith("record,time,user,resource,session,") and f"session,{rep['sessions'][0]['started_at']}" \
        in text and "blocked," in text
    assert env.bastion("audit", "report", "--from", "2026-01-02", "--to", "2026-01-01").returncode == 2


def test_verify_names_a_changed_byte(audit_env: BastionEnv) -> None:
    env = audit_env
    sid = exec_session(env, "echo tamper-target-$((2+2))")
    ok = verify(env)
    assert ok.returncode == 0 and ok.stdout.strip().splitlines()[-1].startswith("OK"), ok.stdout
    path = Path(json.loads(env.bastion("sessions", "list", "--json").stdout)[0]["recording"])
    original = path.read_bytes()
    i = original.index(b"tamper-target-4") + len(b"tamper-target-")
    try:
        path.write_bytes(original[:i] + b"5" + original[i + 1:])  # one byte, still valid asciicast
        bad = verify(env)
        assert bad.returncode == 1
        problems = [ln for ln in bad.stdout.splitlines() if ln.startswith("MODIFIED")]
        assert len(problems) == 1 and sid in problems[0] and str(path) in problems[0], bad.stdout
        path.unlink()
        gone = verify(env)
        assert gone.returncode == 1 and any(ln.startswith("MISSING") and sid in ln for ln in gone.stdout.splitlines())
    finally:
        path.write_bytes(original)
    assert verify(env).returncode == 0


def test_verify_names_altered_deleted_and_reordered_events(audit_env: BastionEnv) -> None:
    env = audit_env
    exec_session(env, "true")
    exec_session(env, "true")  # enough events of its own, whatever ran before
    with db(env) as c:
        rows = c.execute("SELECT id, seq, actor, prev_hash, hash FROM audit_events ORDER BY seq").fetchall()
        assert len(rows) >= 4 and [r[1] for r in rows] == list(range(1, len(rows) + 1))
        rid, seq, actor = rows[1][0], rows[1][1], rows[1][2]
        c.execute("UPDATE audit_events SET actor = 'nobody' WHERE id = ?", (rid,))
        out = verify(env, "--no-files")
        c.execute("UPDATE audit_events SET actor = ? WHERE id = ?", (actor, rid))
        assert out.returncode == 1 and f"ALTERED    audit: event #{seq}" in out.stdout, out.stdout
        # reordered: two events swap places
        a, b = rows[1], rows[2]
        c.execute("UPDATE audit_events SET seq = -1 WHERE id = ?", (a[0],))
        c.execute("UPDATE audit_events SET seq = ? WHERE id = ?", (a[1], b[0]))
        c.execute("UPDATE audit_events SET seq = ? WHERE id = ?", (b[1], a[0]))
        out = verify(env, "--no-files")
        c.execute("UPDATE audit_events SET seq = -1 WHERE id = ?", (a[0],))
        c.execute("UPDATE audit_events SET seq = ? WHERE id = ?", (b[1], b[0]))
        c.execute("UPDATE audit_events SET seq = ? WHERE id = ?", (a[1], a[0]))
        assert out.returncode == 1 and "REORDERED  audit" in out.stdout, out.stdout
        # deleted: the gap is named
        full = c.execute("SELECT * FROM audit_events WHERE id = ?", (b[0],)).fetchone()
        c.execute("DELETE FROM audit_events WHERE id = ?", (b[0],))
        out = verify(env, "--no-files")
        c.execute(f"INSERT INTO audit_events VALUES ({', '.join('?' * len(full))})", full)
        assert out.returncode == 1 and f"MISSING    audit: position {b[1]}" in out.stdout, out.stdout
    assert verify(env).returncode == 0


def test_signed_heads_catch_a_cut_chain(audit_env: BastionEnv) -> None:
    env = audit_env
    exec_session(env, "echo last-one")
    pub = f"{env.dir / 'audit-signing'}.pub"
    deadline = time.monotonic() + 10
    while "matches" not in (out := verify(env, "--public-key", pub)).stdout and time.monotonic() < deadline:
        time.sleep(0.2)  # the daemon signs right after the session's end is recorded
    assert out.returncode == 0 and "recordings: head #" in out.stdout, out.stdout
    with db(env) as c:
        last = c.execute("SELECT * FROM recordings ORDER BY seq DESC LIMIT 1").fetchone()
        cols = [r[1] for r in c.execute("PRAGMA table_info(recordings)")]
        row = dict(zip(cols, last, strict=True))
        head = c.execute("SELECT seq, head FROM chain_heads WHERE name = 'recordings'").fetchone()
        # a careful intruder: drops the newest recording and winds the head back to match
        c.execute("DELETE FROM recordings WHERE id = ?", (row["id"],))
        c.execute("UPDATE chain_heads SET seq = ?, head = ? WHERE name = 'recordings'", (row["seq"] - 1,
                                                                                         row["prev_chain"]))
        quiet = verify(env)
        loud = verify(env, "--public-key", pub)
        c.execute(f"INSERT INTO recordings ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", last)
        c.execute("UPDATE chain_heads SET seq = ?, head = ? WHERE name = 'recordings'", head)
    assert quiet.returncode == 0  # the chains alone cannot see a consistent cut...
    assert loud.returncode == 1 and "TRUNCATED  recordings" in loud.stdout, loud.stdout  # ...the signature can
    other, _ = make_keypair(env.dir / "other-key")
    wrong = verify(env, "--public-key", f"{other}.pub")
    assert wrong.returncode == 1 and "no head signed by" in wrong.stdout
    assert verify(env, "--public-key", pub).returncode == 0
