"""Moderated sessions end to end, every party on its own stock ``ssh`` connection (and so its own connection
process): alice's session on a moderated resource waits for a moderator, opens when bob observes it (from F4 or
``ssh -t bastion observe SID``), pauses her input when he leaves, and ends after the grace period; all of it in the
recording, the store and the audit log. The operator is never her own moderator."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.db import Store
from recorder.asciicast import CastError, read_cast
from tests.integration.conftest import BastionEnv, own_bastion
from tests.support.receivers import HookReceiver
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
PROMPT = r"[#$] \Z"
GRACE = 4
SECRET = b"moderation-hook-secret"


@pytest.fixture(scope="module")
def hook() -> Iterator[HookReceiver]:
    receiver = HookReceiver(SECRET)
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def moderated(bastion_env: BastionEnv, hook: HookReceiver,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    """``web-moderated``: the test target, needing one moderator of role reviewers; a short grace period; a webhook
    for the reviewers (told when a session needs a moderator) and one for the auditors (not told)."""
    base = bastion_env
    d = tmp_path_factory.mktemp("moderated")
    (d / "hook.secret").write_text(SECRET.decode() + "\n")
    notify = f"""\
notify:
  server: bastion.test
  webhook:
    - {{name: reviewers-hook, url: "{hook.url}/hook", secret_file: hook.secret, roles: [reviewers],
       events: [moderation.needed]}}
    - {{name: auditors-hook, url: "{hook.url}/hook", secret_file: hook.secret, roles: [auditors],
       events: [moderation.needed]}}
  delivery: {{poll: 0.2, backoff: 0.2, max_backoff: 1, timeout: 2, lease: 5}}
"""
    text = base.config.read_text()
    web = re.search(r"^  web:\n(?:    .*\n)+", text, re.M)
    assert web is not None
    extra = web.group().replace("  web:\n", "  web-moderated:\n", 1) + (
        "    moderators: {roles: [reviewers], count: 1}\n"
        f"    moderator_grace: {GRACE}\n"
        "    moderator_wait: 120\n")
    with own_bastion(base, d, extra_resources=extra, extra_top=notify) as env:
        yield env


def session_id(t: Terminal) -> str:
    m = re.search(r"observe (\S+)\)", t.raw_text())
    assert m is not None, t.screen_text()
    return m.group(1)


def open_moderated(env: BastionEnv, user: str = "alice") -> Terminal:
    t = Terminal(ssh_argv(env.keys[user], env.port, user, "-t", "web-moderated"), cols=140, rows=30)
    t.__enter__()
    t.wait_for_raw(r"waiting for a moderator — 1 notified: 1 of role reviewers must observe this session")
    return t


def observe(env: BastionEnv, user: str, sid: str) -> Terminal:
    t = Terminal(ssh_argv(env.keys[user], env.port, user, "-t", "observe", sid), cols=140, rows=30)
    t.__enter__()
    return t


def store(env: BastionEnv) -> Store:
    return Store(load_config(env.config).database_url)


def wait_marker(env: BastionEnv, sid: str, text: str, timeout: float = 30) -> None:
    """Until the session's recording (flushed per event) has a marker starting with ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = store(env).session(sid)
        try:  # a recording being written may end in half a line
            events = read_cast(Path(rec.recording)).events if rec is not None and rec.recording else []
        except (OSError, ValueError, CastError):
            events = []
        if any(e.code == "m" and e.data.startswith(text) for e in events):
            return
        time.sleep(0.1)
    raise AssertionError(f"no marker {text!r} in session {sid}")


def not_opened_after_observed_by(env: BastionEnv, t: Terminal, sid: str, observer: str) -> None:
    """The carrying process heard of ``observer``'s observation (its marker), and counted no moderator: a join is
    published right after the observation, so a margin after the marker is many times what counting takes."""
    wait_marker(env, sid, f"observed by {observer}")
    time.sleep(0.5)
    assert "the session opens" not in t.raw_text()
    rec = store(env).session(sid)
    assert rec is not None and rec.recording is not None
    assert not any(e.code == "m" and e.data.startswith(f"moderator {observer}")
                   for e in read_cast(Path(rec.recording)).events)


def outcome(env: BastionEnv, sid: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = store(env).session(sid)
        if row is not None and row.outcome != "active":
            return row.outcome
        time.sleep(0.2)
    raise AssertionError(f"session {sid} still active")


def test_waits_opens_pauses_and_ends_without_its_moderator(moderated: BastionEnv, hook: HookReceiver) -> None:
    env = moderated
    alice = open_moderated(env)
    try:
        sid = session_id(alice)
        # the reviewers' webhook (only it: the auditors cannot moderate here) hears that a session needs them
        deadline = time.monotonic() + 30
        while not any(h["session_id"] == sid for h in hook.hooks):
            assert time.monotonic() < deadline, (hook.hooks, hook.refused)
            time.sleep(0.1)
        told = [h for h in hook.hooks if h["session_id"] == sid]
        assert len(told) == 1 and not hook.refused
        assert told[0]["event"] == "moderation.needed" and told[0]["user"] == "alice"
        assert told[0]["resource"] == "web-moderated" and told[0]["hint"] == f"ssh -t bastion.test observe {sid}"
        alice.send("echo typed-while-waiting\r")  # nobody watches: dropped, never run later
        with Terminal(ssh_argv(env.keys["bob"], env.port, "bob", tty=True), cols=140, rows=32) as bob:
            bob.wait_for(r"roles: .*reviewers")
            bob.send_key("f4")
            bob.wait_for(r"alice\s+web-moderated")
            bob.send_key("enter")  # observe from F4: bob is a moderator
            alice.wait_for_raw(r"moderated by bob: the session opens")
            alice.wait_for_raw(PROMPT)
            alice.send("echo WATCHED-$((40+2))\r")
            alice.wait_for(r"WATCHED-42")
            bob.wait_for(r"WATCHED-42")
            bob.send("q")  # the moderator leaves
            alice.wait_for_raw(rf"input paused: no moderator is watching; the session ends in {GRACE}s")
            alice.send("echo UNWATCHED-$((50+5))\r")
            alice.wait_for_raw(r"what you type is dropped")
            alice.wait_for_raw(rf"this session was closed: no moderator watched for {GRACE}s")
            alice.wait_exit(30)
        assert "UNWATCHED-55" not in alice.raw_text() and "typed-while-waiting" not in alice.raw_text()
    finally:
        alice.__exit__(None, None, None)
    assert outcome(env, sid) == "unmoderated"
    rec = store(env).session(sid)
    assert rec is not None and rec.recording is not None
    cast = read_cast(Path(rec.recording))
    marks = [e.data for e in cast.events if e.code == "m"]
    order = ["waiting for 1 moderator(s) of role reviewers", "moderator bob joined",
             "moderated by bob: the session opens", "moderator bob left", "input paused: 0 of 1 moderator(s) watching",
             f"session ended: no moderator for {GRACE}s"]
    at = [next(i for i, m in enumerate(marks) if m.startswith(want)) for want in order]
    assert at == sorted(at), marks
    typed = "".join(e.data for e in cast.events if e.code in ("i", "o"))
    assert "WATCHED-42" in typed and "UNWATCHED-55" not in typed and "typed-while-waiting" not in typed
    actions = [(e.actor, e.action, e.outcome) for e in store(env).audit_events(300, session_id=sid)]
    assert ("bob", "session.moderate", "joined") in actions and ("bob", "session.moderate", "left") in actions
    report = json.loads(env.bastion("audit", "report", "--from", "1h", "--format", "json").stdout)
    row = next(x for x in report["sessions"] if x["id"] == sid)
    assert row["moderated_by"] == ["bob"] and row["outcome"] == "unmoderated"


def test_input_resumes_when_a_moderator_comes_back(moderated: BastionEnv) -> None:
    env = moderated
    alice = open_moderated(env)
    try:
        sid = session_id(alice)
        with observe(env, "bob", sid) as bob:
            alice.wait_for_raw(r"moderated by bob")
            alice.wait_for_raw(PROMPT)
            bob.send("q")
            bob.wait_exit(30)
        alice.wait_for_raw(r"input paused")
        with observe(env, "dave", sid) as dave:  # another reviewer, within the grace period
            alice.wait_for_raw(r"input resumed: moderated by dave")
            alice.send("echo BACK-$((60+6))\r")
            alice.wait_for(r"BACK-66")
            dave.wait_for(r"BACK-66")
            alice.send("exit\r")
            alice.wait_exit(30)
    finally:
        alice.__exit__(None, None, None)
    assert outcome(env, sid) == "exited"


def test_the_operator_is_never_her_own_moderator_and_may_withdraw(moderated: BastionEnv) -> None:
    """carol operates and reviews: observing her own waiting session does not open it; Ctrl-C withdraws it."""
    env = moderated
    carol = open_moderated(env, "carol")
    try:
        sid = session_id(carol)
        with observe(env, "carol", sid) as own:
            own.wait_for_raw(r"waiting for a moderator")  # she sees it, read-only
            not_opened_after_observed_by(env, carol, sid, "carol")
            own.send("q")
        carol.send("\x03")
        carol.wait_exit(30)
        assert "withdrawn" in carol.raw_text()
    finally:
        carol.__exit__(None, None, None)
    assert outcome(env, sid) == "unmoderated"


def test_exec_form_needs_a_terminal_and_then_waits_for_its_moderator(moderated: BastionEnv) -> None:
    """Without a terminal there is no screen to watch (stdin, file transfers): refused. With one (ssh -t), the
    command waits for its moderator, then runs."""
    env = moderated
    bare = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web-moderated", "--", "echo RAN",
                                   tty=False), capture_output=True, text=True, timeout=60)
    assert bare.returncode == 1 and "web-moderated is moderated: it opens only with a terminal" in bare.stderr
    assert "RAN" not in bare.stdout
    with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", "-t", "web-moderated", "--", "echo RAN-$((1+1))"),
                  cols=140, rows=30) as alice:
        alice.wait_for_raw(r"waiting for a moderator")
        with observe(env, "bob", session_id(alice)):
            alice.wait_for_raw(r"moderated by bob")
            alice.wait_for_raw(r"RAN-2")
            assert alice.wait_exit(30) == 0


def test_an_observer_who_may_not_moderate_does_not_open_it(moderated: BastionEnv) -> None:
    """eve audits: she may watch, but the resource wants a reviewer."""
    env = moderated
    alice = open_moderated(env)
    try:
        sid = session_id(alice)
        with observe(env, "eve", sid) as eve:
            eve.wait_for_raw(r"waiting for a moderator")
            not_opened_after_observed_by(env, alice, sid, "eve")
        with observe(env, "bob", sid):
            alice.wait_for_raw(r"moderated by bob")
            alice.send("exit\r")
            alice.wait_exit(30)
    finally:
        alice.__exit__(None, None, None)
