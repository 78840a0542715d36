"""The interactive filter end to end (stock OpenSSH client -> bastion -> real sshd running bash): bash history
expansion is never run unjudged, a command typed with echo off is judged and recorded (and found by `bastion audit
search`), and a secret typed at a secret prompt stays out of the recording, the search index and the audit trail."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.db import Store
from bastion.terminal.cmdfilter import UNECHOED, WITHHELD
from recorder.asciicast import read_cast
from tests.integration.conftest import BastionEnv
from tests.support.review import approve
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
PROMPT = r"[#$] \Z"


@pytest.fixture()
def tmp_path() -> Iterator[Path]:  # short paths: whole commands fit in the reviewer's queue columns
    d = Path(tempfile.mkdtemp(prefix="bf", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def argv(env: BastionEnv, user: str, *extra: str) -> list[str]:
    return ssh_argv(env.keys[user], env.port, user, *extra, tty=True)


@contextmanager
def reviewer_queue(env: BastionEnv, user: str = "bob") -> Iterator[Terminal]:
    """A reviewer's TUI, on the approvals screen."""
    with Terminal(argv(env, user), cols=120, rows=30) as t:
        t.wait_for(r"roles: .*reviewers")
        t.send_key("f2")
        t.wait_for(r"Pending approval requests")
        yield t


def sessions(env: BastionEnv) -> list[dict]:
    out = env.bastion("sessions", "list", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def session_with(env: BastionEnv, text: str) -> dict:
    for s in sessions(env):
        if s["recording"] and text in Path(s["recording"]).read_text():
            return s
    raise AssertionError(f"no session recording contains {text!r}")


def search(env: BastionEnv, *args: str, wait: float = 30.0) -> list[dict]:
    """`bastion audit search --json`, retried while the daemon's indexer catches up."""
    deadline = time.monotonic() + wait
    while True:
        out = env.bastion("audit", "search", *args, "--json")
        hits = json.loads(out.stdout) if out.stdout.strip() else []
        if hits or time.monotonic() > deadline:
            return hits
        time.sleep(0.3)


def audit_texts(env: BastionEnv, sid: str) -> str:
    events = Store(load_config(env.config).database_url).audit_events(session_id=sid)
    return json.dumps([[e.action, e.outcome, e.detail] for e in events])


def markers(path: str) -> list[str]:
    return [e.data for e in read_cast(Path(path)).events if e.code == "m"]


def test_history_expansion_is_judged_not_run(bastion_env: BastionEnv, tmp_path: Path) -> None:
    """After an approved `chmod 600 f`, `!chmod:s/600/777/` (bash would run `chmod 777 f`) is refused, like `!!`,
    `!ech...` and `^old^new`: the filter cannot know what bash will make of them."""
    env = bastion_env
    f = tmp_path / "f"
    f.write_text("x")
    f.chmod(0o644)
    with Terminal(argv(env, "alice", "web"), cols=120, rows=30) as alice:
        alice.wait_for_raw(PROMPT)
        alice.send("echo HX-$((40+2))\r")
        alice.wait_for(r"^HX-42$")
        refused = r"blocked by rule 'no-rm': the engine cannot see through .*history expansion"
        for n, (line, would_print) in enumerate((("!!", ""), ("!ech:s/HX/HY/", "HY-42"), ("^HX^HZ", "HZ-42"),
                                                 ('echo "!!"', "")), start=1):
            alice.send(line + "\r")
            alice.wait_count(refused, n)
            assert not would_print or would_print not in alice.screen_text()
        alice.send("echo COUNT-$((2*3))\r")
        alice.wait_for(r"^COUNT-6$")
        assert len([ln for ln in alice.screen_text().splitlines() if ln.strip() == "HX-42"]) == 1  # never re-run
        with reviewer_queue(env) as bob:
            alice.send(f"chmod 600 {f}\r")
            alice.wait_for(r"waiting for approval .*rule chmod-needs-approval")
            bob.wait_for(rf"chmod 600 {f}")
            approve(bob)
            alice.wait_for(r"approved by bob")
        alice.send(f"stat -c MODE=%a {f}\r")
        alice.wait_for(r"MODE=600")
        alice.send("!chmod:s/600/777/\r")
        alice.wait_count(refused, 5)
        alice.send(f"stat -c AFTER=%a {f}\r")
        alice.wait_for(r"AFTER=600")
        alice.send("exit\r")
        alice.wait_exit()
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    s = session_with(env, "AFTER=600")
    blocked = [m for m in markers(s["recording"]) if m.startswith("policy: block") and "history expansion" in m]
    assert any(m.endswith(": !chmod:s/600/777/") for m in blocked) and any(m.endswith(": ^HX^HZ") for m in blocked)


def test_a_command_typed_with_echo_off_runs_and_is_recorded(bastion_env: BastionEnv, tmp_path: Path) -> None:
    """The attacker's way to hide commands: a prompt that looks like a password prompt, then `stty -echo`. The
    hidden `touch` runs, and its text is in the recording's markers, `bastion audit search` and the audit trail."""
    env = bastion_env
    word = "bxecho" + secrets.token_hex(6)
    target = tmp_path / word
    with Terminal(argv(env, "alice", "web"), cols=120, rows=30) as alice:
        alice.wait_for_raw(PROMPT)
        alice.send("PS1='Pass''word: '; stty -echo\r")  # the echoed line must not itself show the new prompt
        alice.wait_count(r"Password: ", 1)
        alice.send(f"touch {target}\r")  # typed blind: the target shows nothing of it
        alice.wait_count(r"Password: ", 2)
        assert word not in alice.screen_text()
        alice.send("rm -f " + str(target) + "\r")  # still judged
        alice.wait_for(r"blocked by rule 'no-rm'")
        alice.send("stty echo; PS1='$ '\r")
        alice.wait_for_raw(PROMPT)
        alice.send(f"ls {target} && echo EXISTS-$((40+2))\r")
        alice.wait_for(r"^EXISTS-42$")
        alice.send("exit\r")
        alice.wait_exit()
    assert target.exists()
    s = session_with(env, "EXISTS-42")
    assert any(m.startswith("policy: allow") and m.endswith(f": touch {target} {UNECHOED}")
               for m in markers(s["recording"]))
    hits = search(env, word, "--only", "commands")
    assert hits and {h["session"] for h in hits} == {s["id"]} and all(h["kind"] == "marker" for h in hits)
    assert any(f"touch {target}" in h["text"] and UNECHOED in h["text"] for h in hits)
    trail = audit_texts(env, s["id"])
    assert f"touch {target} {UNECHOED}" in trail and '"echo": "off"' in trail
    assert f"rm -f {target} {UNECHOED}" in trail  # the blocked one too


def test_a_secret_at_a_secret_prompt_is_never_recorded(bastion_env: BastionEnv, tmp_path: Path) -> None:
    """`read -s` and a real program asking for a passphrase (ssh-keygen): the answers are judged, withheld from the
    recording, the search index and the audit trail; the marker says a secret was withheld."""
    env = bastion_env
    secret = "Sw0rdfish-" + secrets.token_hex(4)
    phrase = "Pass-" + secrets.token_hex(4)
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", phrase, "-C", "", "-f", str(key)], check=True)
    with Terminal(argv(env, "alice", "web"), cols=120, rows=30) as alice:
        alice.wait_for_raw(PROMPT)
        alice.send("read -s -p 'Password: ' PW; echo; echo PWLEN=${#PW}\r")
        alice.wait_for(r"^Password:$")
        alice.send(secret + "\r")
        alice.wait_for(rf"^PWLEN={len(secret)}$")
        alice.send(f"ssh-keygen -y -f {key} | cut -c1-11\r")
        alice.wait_for(r"passphrase.*:\s*$")
        alice.send(phrase + "\r")
        alice.wait_for(r"^ssh-ed25519$")
        alice.send("echo DONE-$((6*7))\r")
        alice.wait_for(r"^DONE-42$")
        alice.send("exit\r")
        alice.wait_exit()
    s = session_with(env, "DONE-42")
    text = Path(s["recording"]).read_text()
    for word in (secret, phrase):
        assert word not in text
        assert word not in audit_texts(env, s["id"])
        assert not search(env, word, wait=0)
    assert sum(m.endswith(WITHHELD) for m in markers(s["recording"])) == 2
    assert search(env, "DONE-42")  # the recording is indexed: the secrets are absent, not unindexed
