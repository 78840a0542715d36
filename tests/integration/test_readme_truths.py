"""Small truths of the README, checked against a real session (issue 24): a shell on the real sshd through the stock
ssh client and the bastion, then the real CLI on its recording:

- `bastion replay ID --stream i` shows each typed line on its own line (Enter was a bare \\r: each line overwrote
  the one before), keys that are not text by name;
- `bastion audit search` points a screen hit at the moment its text became visible, so `replay ID --from AT`
  shows it (it pointed at the row's first write: a bare prompt, or the line before);
- `bastion audit verify` ends with a sentence ("checked 5 recordings and 53 audit events");
- the player shows its speed after `+`/`-` (and at start when not x1).
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from pathlib import Path

import pyte
import pytest

from recorder.asciicast import read_cast
from tests.integration.conftest import BastionEnv
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
PROMPT = r"[#$] \Z"
COLS, ROWS = 100, 30
BASTION = str(Path(sys.executable).with_name("bastion"))


def cli(env: BastionEnv, *args: str) -> list[str]:
    return [BASTION, "--config", str(env.config), *args]


def recording_with(env: BastionEnv, text: str) -> tuple[str, Path]:
    for s in json.loads(env.bastion("sessions", "list", "--json").stdout):
        if s["recording"] and text in Path(s["recording"]).read_text():
            return s["id"], Path(s["recording"])
    raise AssertionError(f"no recording contains {text!r}")


def hits(env: BastionEnv, sid: str, query: str, timeout: float = 30.0) -> list[dict]:
    """The screen hits of ``query`` in session ``sid``, once the daemon has indexed it."""
    deadline = time.monotonic() + timeout
    while True:
        out = env.bastion("audit", "search", query, "--only", "screen", "--json")
        found = [h for h in (json.loads(out.stdout) if out.stdout.strip() else []) if h["session"] == sid]
        if found:
            return found
        assert time.monotonic() < deadline, f"{query!r} never found in {sid}: {out.stdout} {out.stderr}"
        time.sleep(0.3)


def emulated(path: Path, upto: float, *, before: bool = False) -> str:
    """The screen the recording showed after its output events up to ``upto`` (or strictly before it)."""
    cast = read_cast(path)
    screen = pyte.Screen(cast.header["width"], cast.header["height"])
    stream = pyte.Stream(screen)
    for ev in cast.events:
        if ev.code == "o" and (ev.time < upto if before else ev.time <= upto):
            stream.feed(ev.data)
    return "\n".join(ln.rstrip() for ln in screen.display)


@pytest.fixture(scope="module")
def session(bastion_env: BastionEnv) -> tuple[str, Path, str]:
    """One shell session: a command typed in two parts (its second half echoed well after the prompt), a line
    that the target finishes after a pause, a correction with Backspace, a line abandoned with Ctrl-C, Up."""
    env, tag = bastion_env, secrets.token_hex(3)
    with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", "web", tty=True), cols=COLS, rows=ROWS) as t:
        t.wait_for_raw(PROMPT)
        t.send("echo first-")
        t.wait_for(r"echo first-$")
        t.send(f"{tag}\r")
        t.wait_for(rf"^first-{tag}$")
        t.send(f"printf 'waiting-{tag}...'; sleep 1; echo \" done-$((6*7))-{tag}\"\r")
        t.wait_for(rf"^waiting-{tag}\.\.\. done-42-{tag}$")
        t.send("echo twoX")
        t.wait_for(r"echo twoX$")
        t.send_key("backspace")
        t.send(f"-{tag}\r")
        t.wait_for(rf"^two-{tag}$")
        t.send("echo abandoned")
        t.wait_for(r"echo abandoned$")
        t.send_key("ctrl-c")
        t.wait_for(r"echo abandoned\^C$")
        t.wait_for_raw(PROMPT)
        t.send_key("up")
        t.wait_for(rf"echo two-{tag}$")
        t.send("\r")
        t.wait_for(rf"^two-{tag}$(?s:.*)^two-{tag}$")  # run again
        t.send("exit\r")
        t.wait_exit()
    sid, path = recording_with(env, f"done-42-{tag}")
    return sid, path, tag


def test_replay_stream_i_shows_each_typed_line_on_its_own_line(bastion_env: BastionEnv,
                                                               session: tuple[str, Path, str]) -> None:
    sid, _, tag = session
    with Terminal(cli(bastion_env, "replay", sid, "--stream", "i", "--speed", "64"), cols=COLS, rows=ROWS) as r:
        assert r.wait_exit(60) == 0, r.screen_text()
        shown = [ln for ln in r.screen_text().splitlines() if ln]
        raw = bytes(r.raw)
    assert shown == [f"echo first-{tag}", f"printf 'waiting-{tag}...'; sleep 1; echo \" done-$((6*7))-{tag}\"",
                     f"echo twoX<BS>-{tag}", "echo abandoned^C", "<Up>", "exit"], "\n".join(shown)
    assert b"\x1b[A" not in raw and b"\x7f" not in raw and b"\x03" not in raw  # never the keys themselves


@pytest.mark.parametrize("what", ["typed", "finished-later"])
def test_replay_from_a_search_hit_shows_the_hit(bastion_env: BastionEnv, session: tuple[str, Path, str],
                                                what: str) -> None:
    env = bastion_env
    sid, path, tag = session
    query = f"first-{tag}" if what == "typed" else f"done-42-{tag}"
    found = hits(env, sid, query)
    table = env.bastion("audit", "search", query, "--only", "screen")
    assert table.returncode == 0, table.stderr
    shown_at = [ln.split()[3] for ln in table.stdout.splitlines() if ln.startswith(sid)]
    assert len(shown_at) == len(found) >= 1
    rows = {ln.strip() for ln in emulated(path, found[-1]["t"]).splitlines()}
    if what == "typed":  # the command line (prompt first) and what echo printed
        assert [h["text"].endswith(f"echo first-{tag}") for h in found] == [True, False]
    else:
        assert [h["text"] for h in found] == [f"waiting-{tag}... done-42-{tag}"] and found[0]["text"] in rows
    for h, at in zip(found, shown_at, strict=True):
        # the moment it became visible: on screen then (one more time than the event before)
        assert emulated(path, h["t"]).count(query) == emulated(path, h["t"], before=True).count(query) + 1
        # and `replay --from AT` (as the table prints it) shows it
        with Terminal(cli(env, "replay", sid, "--from", at, "--to", at), cols=COLS, rows=ROWS) as r:
            assert r.wait_exit(60) == 0, r.screen_text()
            screen = r.screen_text()
        assert screen.count(query) == emulated(path, h["t"]).count(query), (at, screen)
        assert h["text"] in screen.splitlines()[-ROWS:] or any(h["text"] == ln.strip() for ln in screen.splitlines())


def test_audit_verify_says_what_it_checked_in_words(bastion_env: BastionEnv,
                                                    session: tuple[str, Path, str]) -> None:
    out = bastion_env.bastion("audit", "verify")
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.splitlines()[-1]
    m = re.fullmatch(r"OK: checked (\d+) (recordings?) and (\d+) (audit events?)", last)
    assert m, last
    assert (m.group(2) == "recording") == (m.group(1) == "1") and (m.group(4) == "audit event") == (m.group(3) == "1")


def test_the_player_shows_its_speed(bastion_env: BastionEnv, session: tuple[str, Path, str]) -> None:
    sid, _, _ = session
    with Terminal(cli(bastion_env, "replay", sid, "--speed", "0.5"), cols=COLS, rows=ROWS) as r:
        r.wait_for(r"^ speed x0\.5 ")  # at start: not x1
        r.send("+")
        r.wait_for(r"^ speed x1 ")
        r.send("+")
        r.wait_for(r"^ speed x2 ")
        r.send("q")
        assert r.wait_exit() == 0
