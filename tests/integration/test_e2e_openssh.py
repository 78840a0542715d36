"""End to end: stock OpenSSH client -> bastion serve -> real sshd target."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recorder.asciicast import read_cast
from tests.integration.conftest import BastionEnv
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
PROMPT = r"[#$] \Z"


def ssh(env: BastionEnv, user: str, *extra: str, tty: bool | None = None) -> list[str]:
    return ssh_argv(env.keys[user], env.port, user, *extra, tty=tty)


def run(env: BastionEnv, user: str, *extra: str, input: bytes | None = None,
        tty: bool | None = False) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(ssh(env, user, *extra, tty=tty), input=input, capture_output=True, timeout=60)


def sessions(env: BastionEnv) -> list[dict]:
    out = env.bastion("sessions", "list", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def session_with(env: BastionEnv, text: str) -> dict:
    for s in sessions(env):
        if s["recording"] and text in Path(s["recording"]).read_text():
            return s
    raise AssertionError(f"no session recording contains {text!r}")


def test_menu_open_target_and_back(bastion_env: BastionEnv) -> None:
    env = bastion_env
    with Terminal(ssh(env, "alice", tty=True), cols=100, rows=30) as t:
        t.wait_for(r"real sshd on loopback")
        screen = t.screen_text()
        assert "web" in screen and "alice" in screen
        assert "secret-db" not in screen  # not permitted: not shown
        t.send_key("enter")
        t.wait_for_raw(PROMPT)  # the target's shell prompt: the terminal is now the target's
        t.send("echo MENU-MARK-$((6*7))\r")
        t.wait_for(r"MENU-MARK-42")
        t.send("exit\r")
        t.wait_for(r"web: exited with status 0")
        t.wait_for(r"real sshd on loopback")  # the menu is back
        t.send("q")
        assert t.wait_exit() == 0
    s = session_with(env, "MENU-MARK-42")
    assert s["user"] == "alice" and s["resource"] == "web" and s["mode"] == "interactive"
    assert s["outcome"] == "exited" and s["exit_status"] == 0 and s["duration"] > 0
    assert re.fullmatch(r"[0-9a-f]{64}", s["sha256"])
    cast = read_cast(Path(s["recording"]))
    assert cast.header["version"] == 2 and not cast.truncated and not cast.errors
    assert any(e.code == "o" and "MENU-MARK-42" in e.data for e in cast.events)
    assert any(e.code == "m" for e in cast.events)


def test_replay_and_asciinema_play(bastion_env: BastionEnv) -> None:
    env = bastion_env
    out = run(env, "alice", "web", "--", "echo REPLAY-$((40+2))")
    assert out.returncode == 0 and out.stdout == b"REPLAY-42\n"
    s = session_with(env, "REPLAY-42")
    argv = [sys.executable, "-m", "bastion.cli", "--config", str(env.config), "replay", s["id"], "--speed", "50"]
    with Terminal(argv, env={**os.environ}) as t:
        t.wait_for(r"REPLAY-42")
        assert t.wait_exit() == 0
    asciinema = str(Path(sys.executable).parent / "asciinema")
    with Terminal([asciinema, "play", "-s", "50", s["recording"]], env={**os.environ}) as t:
        t.wait_for(r"REPLAY-42")
        assert t.wait_exit() == 0


def test_exec_form_status_streams_and_stdin(bastion_env: BastionEnv) -> None:
    env = bastion_env
    out = run(env, "alice", "web", "--", "echo out; echo err >&2; exit 3")
    assert out.returncode == 3
    assert out.stdout == b"out\n" and out.stderr == b"err\n"
    out = run(env, "alice", "web", "--", "tr a-z A-Z", input=b"piped through\n")
    assert out.returncode == 0 and out.stdout == b"PIPED THROUGH\n"
    cast = read_cast(Path(session_with(env, "PIPED THROUGH")["recording"]))
    assert "".join(e.data for e in cast.events if e.code == "i") == "piped through\n"  # stdin is recorded
    out = run(env, "alice", "web", "--", "kill -TERM $$")
    assert out.returncode == 128 + 15


def test_not_permitted_and_unknown_resources(bastion_env: BastionEnv) -> None:
    env = bastion_env
    denied = run(env, "alice", "secret-db", "--", "id")
    unknown = run(env, "alice", "no-such-thing", "--", "id")
    assert denied.returncode == 1 and unknown.returncode == 1
    assert b"not permitted: secret-db" in denied.stderr
    assert b"not permitted: no-such-thing" in unknown.stderr
    nobody = run(env, "mallory", "web", "--", "id")
    assert nobody.returncode == 1 and b"not permitted: web" in nobody.stderr
    from bastion.config import load_config
    from bastion.store.db import Store

    events = Store(load_config(env.config).database_url).audit_events()
    denials = {(e.actor, e.resource) for e in events if e.action == "session.open" and e.outcome == "denied"}
    assert {("alice", "secret-db"), ("alice", "no-such-thing"), ("mallory", "web")} <= denials


def test_command_that_is_not_utf8_is_refused_with_a_reason(bastion_env: BastionEnv) -> None:
    env = bastion_env
    for command, bad in ((b"web -- \xff", b"byte 0xff at offset 7"),  # a stray byte, Latin-1, a cut sequence
                         (b"web -- echo caf\xe9", b"byte 0xe9 at offset 15"), (b"\xc3", b"byte 0xc3 at offset 0")):
        out = subprocess.run([*ssh(env, "alice", tty=False), command], capture_output=True, timeout=60)
        assert out.returncode == 1 and out.stdout == b"", out.stderr
        assert out.stderr == b"bastion: the command is not valid UTF-8 (" + bad + b"); nothing was run\n"
    from bastion.config import load_config
    from bastion.store.db import Store

    events = Store(load_config(env.config).database_url).audit_events(50)
    refused = [e.detail["text"] for e in events if e.action == "session.open" and e.outcome == "denied"
               and "not valid UTF-8" in e.detail.get("reason", "")]
    assert {"web -- \\xff", "web -- echo caf\\xe9", "\\xc3"} <= set(refused)
    assert "refused an exec request whose command is not valid UTF-8 (byte 0xff at offset 7)" in env.log.read_text()


def test_serve_prints_no_warnings_of_its_dependencies(bastion_env: BastionEnv) -> None:
    """The daemon's stderr (this test's log file; journald under systemd) has log lines, not Python warnings."""
    assert not re.search(r"[A-Za-z]+Warning:", bastion_env.log.read_text())


def test_unreachable_target_is_a_clear_error(bastion_env: BastionEnv) -> None:
    env = bastion_env
    out = run(env, "alice", "web-down", "--", "id")
    assert out.returncode == 1
    assert out.stderr.startswith(b"bastion: web-down: cannot connect to the target")
    with Terminal(ssh(env, "alice", "web-down", tty=True)) as t:
        t.wait_for(r"web-down: cannot connect to the target")
        assert t.wait_exit() == 1
    with Terminal(ssh(env, "alice", tty=True)) as t:  # from the menu: the message, and the menu stays
        t.wait_for(r"nothing listens here")
        t.send_key("down")
        t.send_key("enter")
        t.wait_for(r"web-down: cannot connect to the target")
        t.send("q")
        assert t.wait_exit() == 0


def test_neither_pty_nor_command_lists_forms(bastion_env: BastionEnv) -> None:
    out = run(bastion_env, "alice", tty=False)
    assert out.returncode == 2
    assert b"RESOURCE -- COMMAND" in out.stderr and b"ssh -t" in out.stderr


def test_direct_form_resize_and_ctrl_c(bastion_env: BastionEnv) -> None:
    env = bastion_env
    with Terminal(ssh(env, "alice", "web", tty=True), cols=100, rows=30) as t:
        t.wait_for_raw(PROMPT)
        t.send("stty size\r")
        t.wait_for(r"^30 100\s*$")
        t.resize(120, 40)
        time.sleep(0.3)
        t.send("stty size\r")
        t.wait_for(r"^40 120\s*$")
        t.send("sleep 100; echo SLEPT-FULLY\r")
        time.sleep(1)
        t.send_key("ctrl-c")
        t.send("echo AFTER-$((1+1))\r")
        t.wait_for(r"AFTER-2", timeout=10)  # long before sleep 100 would have ended
        assert "SLEPT-FULLY" not in t.screen_text().replace("echo SLEPT-FULLY", "")
        t.send("exit 4\r")
        assert t.wait_exit() == 4


def test_password_typed_with_echo_off_is_not_recorded(bastion_env: BastionEnv) -> None:
    env = bastion_env
    secret = "hunter2-Sup3rSecret"  # judged by web's policy filter too: it must not leak through markers
    with Terminal(ssh(env, "alice", "web", tty=True)) as t:
        t.wait_for_raw(PROMPT)
        t.send("read -s -p '[sudo] password for alice: ' PW; echo; echo PWLEN=${#PW}\r")
        t.wait_for(r"^\[sudo\] password for alice:$")
        t.send(secret + "\r")
        t.wait_for(r"PWLEN=19")
        t.send("echo VISIBLE-INPUT\r")
        t.wait_for(r"VISIBLE-INPUT")
        t.send("exit\r")
        assert t.wait_exit() == 0
    s = session_with(env, "PWLEN=19")
    text = Path(s["recording"]).read_text()
    assert secret not in text
    assert "hunter2" not in text
    assert "input not recorded" in text
    cast = read_cast(Path(s["recording"]))
    typed = "".join(e.data for e in cast.events if e.code == "i")
    assert "echo VISIBLE-INPUT" in typed  # echoed input is recorded


def test_target_credential_never_reaches_session_process_or_recordings(bastion_env: BastionEnv) -> None:
    env = bastion_env
    key_text = env.target_key.read_text()
    key_body = "".join(line for line in key_text.splitlines() if "PRIVATE KEY" not in line)
    argv = ssh(env, "alice", tty=True)
    argv[1:1] = ["-o", "SetEnv=LD_PRELOAD=/tmp/evil.so BASTION_RPC_FD=0", "-o", "SendEnv=LANG"]
    with Terminal(argv) as t:
        t.wait_for(r"real sshd on loopback")
        pids = [p for p in os.listdir("/proc") if p.isdigit() and _is_tui(p)]
        assert pids, "no session process found"
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            for blob in (environ, cmdline):
                assert key_body[:40].encode() not in blob
                assert str(env.target_key).encode() not in blob
            # client env requests never reach the session process
            assert b"LD_PRELOAD" not in environ and b"evil" not in environ
        t.send("q")
        t.wait_exit()
    for cast in (env.dir / "state" / "recordings").rglob("*.cast"):
        assert key_body[:40] not in cast.read_text()
    assert key_body[:40] not in env.log.read_text()


def _is_tui(pid: str) -> bool:
    try:
        return b"-m\x00tui" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
