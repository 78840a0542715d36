"""``bastion policy backtest`` end to end: sessions through the stock OpenSSH client (exec form, an interactive
shell, SQL through the wire proxy) recorded by a daemon under a permissive config, then by a daemon under a strict
one on the same store; a backtest each way names exactly what would change, with session ids and offsets that
``bastion replay --from`` accepts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.cli.common import parse_offset
from recorder.asciicast import iter_events
from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port
from tests.support.postgres import PgServer, start_postgres
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
PASSWORD = "bt-app-Pw-9c1"
PROMPT = r"[#$] \Z"
SHELL_RM = "rm -f /tmp/bt-shell-y; echo bt-rm-done"
PERMISSIVE = """\
  bt-shell: {default: allow}
  bt-sql: {default: allow}
"""
STRICT = """\
  bt-shell:
    default: allow
    rules: [{name: no-bt-rm, programs: [rm], action: block, reason: deleting files is not allowed here}]
  bt-sql:
    default: allow
    rules: [{name: no-bt-delete, statements: [delete], action: block, reason: no deletes}]
"""


class Phases:
    """One state directory, two configs on it (``permissive.yaml``, ``strict.yaml``), the sessions of each."""

    def __init__(self, base: BastionEnv, d: Path, pg: PgServer) -> None:
        self.base, self.d = base, d
        (d / "state").mkdir()
        (d / "db.pw").write_text(PASSWORD + "\n")
        self.port = free_port()
        resources = f"""\
  web-bt:
    kind: ssh
    host: 127.0.0.1
    port: {base.target.port}
    user: {base.target.user}
    credential: {{private_key_file: {base.target_key}}}
    host_key: "{base.target.host_key_public}"
    policy: bt-shell
  web-btdb:
    kind: postgres
    host: 127.0.0.1
    port: {pg.port}
    database: app
    user: app
    credential: {{password_file: {d / 'db.pw'}}}
    tls: {{mode: disable}}
    policy: bt-sql
"""
        self.configs = {}
        for name, policies in (("permissive", PERMISSIVE), ("strict", STRICT)):
            cfg = write_config(d, self.port, base.keys, base.target, base.target_key, extra_resources=resources,
                               extra_policies=policies)
            self.configs[name] = cfg.rename(d / f"{name}.yaml")
        self.sessions: dict[str, dict[str, str]] = {}

    def cli(self, config: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bastion.cli", "--config", str(self.configs[config]), *args],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    def ssh(self, *extra: str, tty: bool | None = None) -> list[str]:
        return ssh_argv(self.base.keys["alice"], self.port, "alice", *extra, tty=tty)

    def run_exec(self, resource: str, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.ssh(resource, "--", command, tty=False), capture_output=True, text=True,
                              timeout=60)

    def closed_sessions(self, config: str, n: int) -> list[dict]:
        """The store's sessions once ``n`` of them have ended (the daemon closes a session after its client)."""
        deadline = time.monotonic() + 30
        while True:
            out = self.cli(config, "sessions", "list", "--json")
            assert out.returncode == 0, out.stderr
            rows = json.loads(out.stdout)
            if sum(r["outcome"] != "active" for r in rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def record(self, config: str) -> dict[str, str]:
        """The same work under ``config``: two exec-form commands, a shell with two lines, two SQL statements.
        Returns the new sessions by what they were (``rm`` and ``echo`` exec forms, ``shell``, ``sql-*``)."""
        before = {r["id"] for r in self.closed_sessions(config, 0)}
        proc = start_bastion(self.configs[config], self.port, self.d / f"{config}.out")
        strict = config == "strict"
        try:
            assert self.run_exec("web-bt", "echo bt-hello").returncode == 0
            out = self.run_exec("web-bt", "rm -f /tmp/bt-exec-x")
            assert (out.returncode != 0 and "no-bt-rm" in out.stderr) if strict else out.returncode == 0, out.stderr
            with Terminal(self.ssh("web-bt", tty=True), cols=120, rows=30) as t:
                t.wait_for_raw(PROMPT)
                t.send("echo bt-one\r")
                t.wait_for(r"(?m)^bt-one\s*$")
                t.send(f"{SHELL_RM}\r")
                t.wait_for("no-bt-rm" if strict else r"(?m)^bt-rm-done\s*$")
                t.send("exit\r")
                t.wait_exit()
            assert self.run_exec("web-btdb", "SELECT 1 AS bt_one").returncode == 0
            out = self.run_exec("web-btdb", "DELETE FROM t WHERE id = 99")
            assert (out.returncode != 0 and "no-bt-delete" in out.stderr) if strict else out.returncode == 0, \
                out.stderr
            rows = self.closed_sessions(config, len(before) + (4 if strict else 5))
        finally:
            stop_bastion(proc)
        new = [r for r in rows if r["id"] not in before]
        got = {"shell" if r["command"] is None else r["command"].split()[0]: r["id"] for r in new
               if r["resource"] == "web-bt"}
        got.update({"sql-" + r["command"].split()[0].lower(): r["id"] for r in new if r["resource"] == "web-btdb"})
        return got


@pytest.fixture(scope="module")
def phases(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phases]:
    pg = start_postgres()
    try:
        pg.psql(f"CREATE USER app PASSWORD '{PASSWORD}'")
        pg.psql("CREATE DATABASE app OWNER app")
        pg.psql("CREATE TABLE t(id int primary key); ALTER TABLE t OWNER TO app", db="app")
        p = Phases(bastion_env, tmp_path_factory.mktemp("backtest"), pg)
        p.sessions["permissive"] = p.record("permissive")
        p.sessions["strict"] = p.record("strict")
        yield p
    finally:
        pg.stop()


def backtest(p: Phases, running: str, against: str) -> tuple[int, dict]:
    out = p.cli(running, "policy", "backtest", "--against", str(p.configs[against]), "--since", "1d", "--json")
    assert out.returncode in (0, 1, 3), out.stderr
    return out.returncode, json.loads(out.stdout)


def marker_at(p: Phases, sid: str, t: float) -> str:
    """The marker of session ``sid`` at ``t`` seconds (the change points at a decision in the recording)."""
    path = next((p.d / "state" / "recordings").rglob(f"*{sid}*.cast"))
    return next(e.data for e in iter_events(path) if e.code == "m" and e.time == t)


def assert_replayable(p: Phases, change: dict) -> None:
    sid, at = change["session"], change["at"]
    assert change["replay"] == f"bastion replay {sid} --from {at}"
    assert change["t"] - 1 < parse_offset(at) <= change["t"]  # the screen just before the decision
    out = p.cli("permissive", "replay", sid, "--from", at, "--to", str(change["t"] + 0.01), "--speed", "1000")
    assert out.returncode == 0, out.stderr


def test_a_stricter_config_names_exactly_what_would_now_be_refused(phases: Phases) -> None:
    p = phases
    code, doc = backtest(p, "permissive", "strict")
    s = p.sessions["permissive"]
    got = sorted((c["session"], c["kind"], c["text"], c["from"], c["to"], c["rule_now"]) for c in doc["changes"])
    assert got == sorted([
        (s["rm"], "exec-form", "rm -f /tmp/bt-exec-x", "allow", "block", "no-bt-rm"),
        (s["shell"], "shell", SHELL_RM, "allow", "block", "no-bt-rm"),
        (s["sql-delete"], "sql", "DELETE FROM t WHERE id = 99", "allow", "block", "no-bt-delete"),
    ]), doc
    assert code == 1 and doc["not_judged"] == [], doc["not_judged"]
    assert {(r["from"], r["to"], r["rule_now"], r["count"]) for r in doc["by_rule"]} == {
        ("allow", "block", "no-bt-rm", 2), ("allow", "block", "no-bt-delete", 1)}
    for c in doc["changes"]:
        assert c["text"] in marker_at(p, c["session"], c["t"]) or c["kind"] == "exec-form"
        assert_replayable(p, c)
    assert doc["judged"] >= 10 and doc["groups"] == {"alice": "the running config"}


def test_a_looser_config_shows_what_would_now_be_allowed(phases: Phases) -> None:
    p = phases
    code, doc = backtest(p, "strict", "permissive")
    s = p.sessions["strict"]
    got = sorted((c["session"] or "-", c["kind"], c["text"], c["from"], c["rule_then"], c["to"])
                 for c in doc["changes"])
    assert got == sorted([
        ("-", "exec-form", "rm -f /tmp/bt-exec-x", "block", "no-bt-rm", "allow"),  # refused before it opened
        (s["shell"], "shell", SHELL_RM, "block", "no-bt-rm", "allow"),
        (s["sql-delete"], "sql", "DELETE FROM t WHERE id = 99", "block", "no-bt-delete", "allow"),
    ]), doc
    assert code == 1 and doc["not_judged"] == []


def test_filters_and_the_text_report(phases: Phases) -> None:
    """``--resource`` and ``--user`` narrow the window; the text report names the change and the rule."""
    p = phases
    out = p.cli("permissive", "policy", "backtest", "--against", str(p.configs["strict"]), "--resource", "web-btdb")
    assert out.returncode == 1, out.stderr
    assert "allow -> block" in out.stdout and "no-bt-delete" in out.stdout and "no-bt-rm" not in out.stdout
    assert p.sessions["permissive"]["sql-delete"] in out.stdout
    assert "DELETE FROM t WHERE id = 99" in out.stdout
    out = p.cli("permissive", "policy", "backtest", "--against", str(p.configs["strict"]), "--user", "bob")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("0 decisions judged again") and "0 would change, 0 could not" in out.stdout
