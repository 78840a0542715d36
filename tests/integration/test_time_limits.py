"""Time limits through the stock OpenSSH client: a connection with a terminal that gets no input is warned, then
closed (the menu, and an interactive session, which ends as `idle`); typing puts it off; an exec session is never
idle-closed but ends at the maximum session duration (`expired`), warned first."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.db import Store
from tests.integration.conftest import BastionEnv, own_bastion
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
IDLE, MAX = 6, 8  # seconds: the warnings come 1.5 s and 2 s before (a quarter of each)


@pytest.fixture(scope="module")
def limits_env(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    t = bastion_env.target
    long = (f"  web-long:\n    kind: ssh\n    description: looser limits\n    host: 127.0.0.1\n    port: {t.port}\n"
            f"    user: {t.user}\n    credential: {{private_key_file: {bastion_env.target_key}}}\n"
            f"    host_key: \"{t.host_key_public}\"\n    idle_timeout: 60\n    max_session_duration: 60\n")
    with own_bastion(bastion_env, tmp_path_factory.mktemp("limits"), extra_resources=long,
                     limits=f"limits: {{idle_timeout: {IDLE}, max_session_duration: {MAX}}}\n") as env:
        yield env


def store(env: BastionEnv) -> Store:
    return Store(load_config(env.config).database_url)


def test_an_idle_menu_is_warned_then_closed_and_typing_puts_it_off(limits_env: BastionEnv) -> None:
    env = limits_env
    with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", tty=True), cols=120, rows=30) as t:
        t.wait_for(r"real sshd on loopback")
        time.sleep(IDLE - 3)
        t.send_key("down")  # input: the clock starts again
        time.sleep(4)  # past the first deadline, but not past the one the key set
        assert not t.eof, "closed although the operator typed"
        t.wait_for(r"no input for a while: this connection closes in", timeout=IDLE)  # the TUI's notification
        t.wait_for(r"bastion: no input for 6 s: connection closed", timeout=IDLE)
        t.wait_exit()
    events = [e for e in store(env).audit_events() if e.action == "connection.idle" and e.actor == "alice"]
    assert events and events[-1].outcome == "closed" and events[-1].detail["reason"] == "no input for 6 s"


def test_an_idle_interactive_session_ends_as_idle(limits_env: BastionEnv) -> None:
    env = limits_env
    with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", "web", tty=True), cols=100, rows=30) as t:
        t.wait_for_raw(r"[#$] \Z")
        t.send("echo BEFORE-IDLE\r")
        t.wait_for(r"^BEFORE-IDLE")
        t.wait_for(r"bastion: no input for a while: this connection closes in", timeout=IDLE)
        t.wait_for(r"bastion: this session was closed: no input for 6 s", timeout=IDLE)
        t.wait_exit()
    rows = [s for s in store(env).sessions() if s.user == "alice" and s.mode == "interactive"]
    s = rows[0]
    assert s.outcome == "idle" and s.message == "closed by the bastion: no input for 6 s"
    cast = Path(s.recording).read_text()
    assert "BEFORE-IDLE" in cast and "session closed by the bastion: no input for 6 s" in cast
    assert "connection closes in" in cast  # the warning is on the operator's screen, so in the recording


def test_an_exec_session_is_not_idle_closed_but_ends_at_the_maximum_duration(limits_env: BastionEnv) -> None:
    env = limits_env
    started = time.monotonic()
    out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web", "--",
                                  "echo STARTED; sleep 60; echo NEVER", tty=False),
                         capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert out.stdout == "STARTED\n"  # no input at all for longer than the idle timeout, and not closed for it
    assert took > IDLE
    assert "bastion: this session closes in 2 s: it reaches the maximum session duration (8 s)" in out.stderr
    assert "bastion: this session was closed: it reached the maximum session duration (8 s)" in out.stderr
    assert out.returncode != 0
    rows = json.loads(env.bastion("sessions", "list", "--json").stdout)
    s = next(r for r in rows if r["command"] == "echo STARTED; sleep 60; echo NEVER")
    assert s["outcome"] == "expired"
    assert s["message"] == "closed by the bastion: it reached the maximum session duration (8 s)"


def test_a_resource_sets_its_own_limits(limits_env: BastionEnv) -> None:
    env = limits_env
    out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "web-long", "--",
                                  f"sleep {MAX + 2}; echo OUTLIVED-THE-DEFAULT", tty=False),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "OUTLIVED-THE-DEFAULT\n", out.stderr
    with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", "web-long", tty=True), cols=100, rows=30) as t:
        t.wait_for_raw(r"[#$] \Z")
        time.sleep(IDLE + 2)  # idle past the daemon's limit: this resource allows a minute
        t.send("echo STILL-OPEN\r")
        t.wait_for(r"^STILL-OPEN")
        t.send("exit\r")
        t.wait_exit()
    assert "no input" not in t.raw_text()
