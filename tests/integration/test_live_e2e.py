"""Live sessions and the auditor's screens end to end, every party on its own stock `ssh` connection: a reviewer
sees alice's live session, observes it read-only as it happens, and terminates it with a reason alice sees; an
auditor browses recordings, sees decisions beside them and replays one inside the same ssh session."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.db import Store
from tests.integration.conftest import BastionEnv
from tests.support.procs import cmdline, status_field, wait_descendant
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
PROMPT = r"[#$] \Z"


def tui(env: BastionEnv, user: str) -> Terminal:
    return Terminal(ssh_argv(env.keys[user], env.port, user, tty=True), cols=130, rows=32)


def alice_on_web(env: BastionEnv) -> Terminal:
    t = tui(env, "alice")
    t.__enter__()
    t.wait_for(r"real sshd on loopback")
    t.send_key("enter")
    t.wait_for_raw(PROMPT)
    return t


def test_reviewer_observes_then_terminates_alices_session(bastion_env: BastionEnv) -> None:
    env = bastion_env
    alice = alice_on_web(env)
    try:
        alice.send("echo BEFORE-$((20+1))\r")
        alice.wait_for(r"BEFORE-21")
        with tui(env, "bob") as bob:
            bob.wait_for(r"roles: .*reviewers")
            bob.send_key("f4")
            bob.wait_for(r"alice\s+web\s+ssh\s+interactive")
            sid = re.search(r"(\d{8}-\d{6}-[0-9a-f]{12})\s+alice", bob.screen_text())
            assert sid is not None
            bob.send_key("enter")  # observe: the screen so far, then live
            bob.wait_for(r"BEFORE-21")
            alice.send("echo LIVE-$((40+2))\r")
            bob.wait_for(r"LIVE-42")
            bob.send("echo typed-by-bob\r")  # read-only: nothing reaches alice's shell
            bob.send("q")
            bob.wait_for(r"alice@web: stopped observing")
            assert "typed-by-bob" not in alice.screen_text()
            bob.send("t")
            bob.wait_for(r"Terminate alice@web")
            bob.send("leaked credentials in the shell history\r")
            bob.wait_for(r"terminated alice@web")
            alice.wait_for(r"terminated by bob: leaked credentials in the shell history")
            alice.wait_for(r"real sshd on loopback")  # back in the menu, with the reason in its status line
            alice.wait_for(r"web: terminated by bob: leaked credentials")
        row = json.loads(env.bastion("sessions", "list", "--json").stdout)[0]
        assert row["id"] == sid.group(1) and row["outcome"] == "terminated"
        cast = Path(row["recording"]).read_text()
        assert "observed by bob" in cast and "session terminated by bob: leaked credentials" in cast
        assert "typed-by-bob" not in cast
        events = {(e.actor, e.action): e.detail for e in Store(load_config(env.config).database_url).audit_events()
                  if e.session_id == row["id"]}
        assert events[("bob", "session.terminate")]["reason"] == "leaked credentials in the shell history"
        assert ("bob", "session.observe") in events
    finally:
        alice.__exit__(None, None, None)


def test_exec_form_is_terminated_with_the_reason_on_stderr(bastion_env: BastionEnv) -> None:
    env = bastion_env
    proc = subprocess.Popen(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--", "sleep 60", tty=False),
                            stderr=subprocess.PIPE, text=True)
    try:
        with tui(env, "eve") as eve:  # an auditor may terminate too
            eve.wait_for(r"roles: .*auditors")
            eve.send_key("f4")
            eve.wait_for(r"alice\s+web\s+ssh\s+exec\s+sleep 60")
            eve.send("t")
            eve.wait_for(r"Terminate alice@web")
            eve.send("runaway job\r")
            eve.wait_for(r"terminated alice@web")
        _, err = proc.communicate(timeout=20)
        assert "terminated by eve: runaway job" in err and proc.returncode != 0
    finally:
        proc.kill()


def test_who_may_watch(bastion_env: BastionEnv) -> None:
    env = bastion_env
    with tui(env, "alice") as alice:  # an operator: neither live sessions nor recordings
        alice.wait_for(r"real sshd on loopback")
        alice.send_key("f4")
        alice.wait_for(r"Live sessions are for reviewers and auditors")
        alice.send_key("f5")
        alice.wait_for(r"Recordings are for auditors")


def test_auditor_browses_and_replays_recordings(bastion_env: BastionEnv) -> None:
    env = bastion_env
    out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--",
                                  "echo AUDIT-ME-$((5*5))", tty=False), capture_output=True, timeout=60)
    assert out.returncode == 0
    sid = json.loads(env.bastion("sessions", "list", "--json").stdout)[0]["id"]
    with tui(env, "eve") as eve:
        eve.wait_for(r"roles: .*auditors")
        eve.send_key("f5")
        eve.wait_for(sid)
        eve.wait_for(r"\d+ session\(s\) · Enter opens")  # the list has the keys (the filter box would say so)
        eve.send("/")
        eve.wait_for(r"filter: type, Enter applies")
        eve.send("user=bob")
        eve.wait_for(r"▊  user=bob\s")  # typed into the filter box, all of it
        eve.send("\r")
        eve.wait_for(r"0 session\(s\) · user=bob")  # matches nothing of alice's
        eve.send("/user=alice resource=web")  # with the "/", in one write (a paste, a fast typist): no key lost
        eve.wait_for(r"▊  user=alice resource=web\s")
        eve.send("\r")
        eve.wait_for(r"\d+ session\(s\) · user=alice resource=web")
        eve.wait_for(sid)
        eve.send_key("enter")  # the newest: ours
        eve.wait_for(rf"recording {sid}")
        eve.wait_for(r"alice on web \(ssh, exec\)")
        eve.wait_for(r"policy: allow")  # the decision beside the recording
        eve.wait_for(r"session.start")
        eve.send("p")
        eve.wait_for(r"AUDIT-ME-25")  # played inside this ssh session
        eve.wait_for(r"end of recording")
        # the player (recorded output is input an attacker shaped) runs sandboxed: none of the daemon's files
        player = wait_descendant(env.proc.pid, lambda pid: b"recorder.player" in cmdline(pid)
                                 and not cmdline(pid)[0].endswith(b"bwrap") and b"setpriv" not in cmdline(pid)[0])
        state = env.dir / "state"
        assert (state / "bastion.db").exists() and not Path(f"/proc/{player}/root{state}").exists()
        assert status_field(player, "CapEff") == "0" * 16 and status_field(player, "NoNewPrivs") == "1"
        eve.send("x")
        eve.wait_for(rf"replay of {sid} closed")
    events = [e for e in Store(load_config(env.config).database_url).audit_events() if e.session_id == sid]
    assert any(e.actor == "eve" and e.action == "recording.replay" for e in events)
