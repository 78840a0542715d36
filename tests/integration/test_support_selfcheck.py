"""The test infrastructure itself, against a real sshd: keys, sshd, stock ssh command lines, the pty terminal."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.fixtures import SshdWithKey, sshd_target  # noqa: F401  (fixture)
from tests.support.keys import make_keypair
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
PROMPT = r"[#$] \Z"


def _argv(t: SshdWithKey, *extra: str, tty: bool | None = None) -> list[str]:
    return ssh_argv(t.client_key, t.sshd.port, t.sshd.user, *extra, tty=tty)


def test_exec_over_real_sshd(sshd_target: SshdWithKey) -> None:  # noqa: F811
    out = subprocess.run(_argv(sshd_target, "echo", "hello", tty=False), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello\n"
    assert "Accepted publickey for" in sshd_target.sshd.log_path.read_text()


def test_host_key_public_matches_what_sshd_presents(sshd_target: SshdWithKey, tmp_path: Path) -> None:  # noqa: F811
    s = sshd_target.sshd
    assert re.fullmatch(r"ssh-ed25519 AAAA[0-9A-Za-z+/=]+", s.host_key_public)
    kh = tmp_path / "known_hosts"
    kh.write_text(s.known_hosts_line + "\n")
    argv = _argv(sshd_target, "true", tty=False)
    argv[argv.index("UserKnownHostsFile=/dev/null")] = f"UserKnownHostsFile={kh}"
    argv[argv.index("StrictHostKeyChecking=no")] = "StrictHostKeyChecking=yes"
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_interactive_shell_size_resize_and_exit(sshd_target: SshdWithKey) -> None:  # noqa: F811
    argv = _argv(sshd_target, tty=True)
    argv.insert(1, "-t")  # with the -t from ssh_argv: -tt
    with Terminal(argv, cols=100, rows=30) as t:
        t.wait_for_raw(PROMPT)
        t.send("stty size\r")
        t.wait_for(r"^30 100$")
        t.resize(120, 40)
        assert (t.screen.columns, t.screen.lines) == (120, 40)
        deadline = time.monotonic() + 10
        while True:  # the window-change request races the typed command; ask until it is through
            t.send("stty size\r")
            try:
                t.wait_for(r"^40 120$", timeout=1)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        t.send("echo MARK-$((6*7))\r")
        t.wait_for(r"^MARK-42$")
        t.send("exit\r")
        assert t.wait_exit() == 0
        assert t.eof


def test_wrong_key_is_refused(sshd_target: SshdWithKey, tmp_path: Path) -> None:  # noqa: F811
    wrong, _ = make_keypair(tmp_path / "wrong", "wrong")
    out = subprocess.run(ssh_argv(wrong, sshd_target.sshd.port, sshd_target.sshd.user, "echo", "hello", tty=False),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "hello" not in out.stdout
    assert "Permission denied" in out.stderr


def test_terminal_keys_echo_and_timeout_dump() -> None:
    code = "import sys\nfor line in sys.stdin: print('GOT', line.strip(), flush=True)\n"
    with Terminal([sys.executable, "-c", code], cols=40, rows=10) as t:
        t.send("abc")
        t.send_key("backspace")
        t.send_key("enter")
        t.wait_for(r"^GOT ab$")  # the line discipline erased the c, as on a real terminal
        with pytest.raises(AssertionError, match="NEVER-SHOWN"):
            t.wait_for("NEVER-SHOWN", timeout=0.3)
        t.send_key("ctrl-d")
        assert t.wait_exit() == 0
    with Terminal([sys.executable, "-c", "import time; print('UP', flush=True); time.sleep(60)"]) as t:
        t.wait_for_raw("UP")
        t.send_key("ctrl-c")
        assert t.wait_exit() != 0
