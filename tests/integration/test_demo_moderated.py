"""The demo's moderated resource as a new user meets it, with the stock OpenSSH client: alice's session on
``demo-shell-moderated`` waits; bob joins from F4; alice works; bob leaves; alice's input pauses and her session
ends after the demo's grace period; all of it in the recording."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from recorder.asciicast import read_cast
from tests.integration.test_demo import start_demo, stop
from tests.support.keys import free_port_block
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow


def test_the_demo_moderated_shell_waits_for_bob_and_ends_without_him() -> None:
    state, port = Path(tempfile.mkdtemp(prefix="bastion-demo-", dir="/tmp")), free_port_block(4)
    proc = start_demo(state, port)
    keys = state / "keys"
    try:
        assert "demo-shell-moderated" in proc.banner  # type: ignore[attr-defined]
        with Terminal(ssh_argv(keys / "alice", port, "alice", "-t", "demo-shell-moderated"), cols=150,
                      rows=32) as alice:
            alice.wait_for_raw(r"waiting for a moderator — \d+ notified: 1 of role reviewers", 30)
            sid = re.search(r"observe (\S+)\)", alice.raw_text())
            assert sid is not None
            with Terminal(ssh_argv(keys / "bob", port, "bob", tty=True), cols=150, rows=32) as bob:
                bob.wait_for(r"roles: .*reviewers", 30)
                bob.send_key("f4")
                bob.wait_for(r"alice\s+demo-shell-moderated\s+ssh\s+interactive · moderated")
                bob.send_key("enter")
                alice.wait_for_raw(r"moderated by bob: the session opens", 30)
                alice.wait_for_raw(r"\$ $", 30)
                alice.send("echo FOUR-EYES-$((2*2))\r")
                alice.wait_for(r"FOUR-EYES-4")
                bob.wait_for(r"FOUR-EYES-4")
                bob.send("q")
                alice.wait_for_raw(r"input paused: no moderator is watching; the session ends in 30s", 30)
            alice.wait_for_raw(r"this session was closed: no moderator watched for 30s", 60)
            alice.wait_exit(30)
        listed = subprocess.run([sys.executable, "-m", "bastion.cli", "--config", str(state / "bastion.yaml"),
                                 "sessions", "list", "--json"], capture_output=True, text=True, timeout=60)
        row = next(r for r in json.loads(listed.stdout) if r["id"] == sid.group(1))
        assert row["outcome"] == "unmoderated"
        marks = [e.data for e in read_cast(Path(row["recording"])).events if e.code == "m"]
        for want in ("waiting for 1 moderator(s)", "moderator bob joined", "moderated by bob: the session opens",
                     "moderator bob left", "input paused", "session ended: no moderator for 30s"):
            assert any(m.startswith(want) for m in marks), (want, marks)
    finally:
        stop(proc)
        shutil.rmtree(state, ignore_errors=True)
