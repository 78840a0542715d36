"""`bastion audit search` finds a mid-word substring of what was on screen, and a word of a program fed to
`python3 -` on the standard input of the exec form, through the stock ssh client, on a SQLite store and on a
PostgreSQL one (issue 23, item 5)."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port
from tests.support.postgres import scratch_database
from tests.support.ssh_client import ssh_argv

pytestmark = pytest.mark.slow
PROGRAM = "quokka_total = 6 * 7\nprint('answer', quokka_total)\n"


def code_resource(env: BastionEnv) -> str:
    """``web-code``: the same sshd, under a policy with no rules (``guarded`` refuses code it cannot see into)."""
    t = env.target
    return f"""\
  web-code:
    kind: ssh
    host: 127.0.0.1
    port: {t.port}
    user: {t.user}
    credential: {{private_key_file: {env.target_key}}}
    host_key: "{t.host_key_public}"
    policy: code
"""


@contextmanager
def database(kind: str) -> Iterator[str]:
    """The ``database:`` URL of a new store: a SQLite file, or a new database on the machine's PostgreSQL."""
    if kind == "sqlite":
        yield "sqlite:///state/bastion.db"
        return
    with scratch_database("bastion_search") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, bastion_env: BastionEnv,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    """A daemon of its own on a store of each kind."""
    d = tmp_path_factory.mktemp(f"search-{request.param}")
    (d / "state").mkdir()
    port = free_port()
    base = bastion_env
    cfg = write_config(d, port, base.keys, base.target, base.target_key, extra_resources=code_resource(base),
                       extra_policies="  code: {default: allow, rules: []}\n")
    with database(request.param) as url:
        cfg.write_text(cfg.read_text().replace("database: sqlite:///state/bastion.db", f"database: {url}"))
        log = d / "bastion.out"
        e = BastionEnv(d, cfg, port, base.keys, base.target, base.target_key, start_bastion(cfg, port, log), log)
        try:
            yield e
        finally:
            stop_bastion(e.proc)


def run(env: BastionEnv, command: str, stdin: str = "", resource: str = "web") -> tuple[str, str]:
    """Run ``command`` on ``resource`` through the bastion (no terminal), ``stdin`` piped in: the new session's id and
    what it printed."""
    before = {s["id"] for s in json.loads(env.bastion("sessions", "list", "--json").stdout)}
    out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", resource, "--", command, tty=False),
                         input=stdin, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    new = [s["id"] for s in json.loads(env.bastion("sessions", "list", "--json").stdout) if s["id"] not in before]
    assert len(new) == 1
    return new[0], out.stdout


def search(env: BastionEnv, *args: str) -> tuple[int, list[dict]]:
    out = env.bastion("audit", "search", *args, "--json")
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else []


def wait_indexed(env: BastionEnv, sid: str, *args: str, timeout: float = 30.0) -> list[dict]:
    """The hits of a search once they name ``sid`` (the daemon indexes a recording after it closes)."""
    deadline = time.monotonic() + timeout
    while True:
        _, hits = search(env, *args)
        if any(h["session"] == sid for h in hits):
            return hits
        assert time.monotonic() < deadline, f"session {sid} never found by audit search {args}: {hits}"
        time.sleep(0.3)


def test_a_mid_word_substring_of_screen_text(env: BastionEnv) -> None:
    tag = secrets.token_hex(3)  # words of this test's own
    # the command line never holds the words the screen shows: the shell makes them
    sid, shown = run(env, f"printf \"removed '%s'\\n\" victim$((1+1))-{tag}")
    assert shown == f"removed 'victim2-{tag}'\n"
    hits = wait_indexed(env, sid, f"ictim2-{tag}")
    assert [(h["session"], h["kind"], h["text"]) for h in hits] == [(sid, "screen", f"removed 'victim2-{tag}'")]
    assert [h["session"] for h in wait_indexed(env, sid, f"EMOVED   'VICTIM2-{tag}")] == [sid]  # case, spaces
    assert search(env, f"ictim3-{tag}") == (1, [])  # a near miss: nothing
    assert search(env, f"emoved 'victim2-{tag}x") == (1, [])
    assert search(env, f"ictim2-{tag}", "--only", "commands") == (1, [])  # the judged command never had it


def test_a_word_of_a_program_fed_to_python_on_stdin(env: BastionEnv) -> None:
    tag = secrets.token_hex(3)
    program = PROGRAM.replace("quokka", f"quokka{tag}")
    sid, shown = run(env, "python3 -", stdin=program, resource="web-code")
    assert shown == "answer 42\n"
    hits = wait_indexed(env, sid, f"okka{tag}_tot")  # mid-word, in a line only the program's stdin had
    assert {(h["session"], h["kind"]) for h in hits} == {(sid, "stdin")}
    assert [h["text"] for h in hits] == [f"quokka{tag}_total = 6 * 7", f"print('answer', quokka{tag}_total)"]
    assert search(env, f"okka{tag}_tot", "--only", "screen") == (1, [])
    assert [h["session"] for h in search(env, f"okka{tag}_tot", "--only", "stdin")[1]] == [sid, sid]
    table = env.bastion("audit", "search", f"quokka{tag}_total = 6")
    assert table.returncode == 0 and sid in table.stdout and " stdin " in table.stdout
    assert search(env, f"quokka{tag}_totals") == (1, [])
