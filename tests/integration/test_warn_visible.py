"""A ``warn`` rule is seen by the operator, through the stock clients, in every form: one line naming the rule and
its reason on the terminal (an interactive shell, psql, the kubectl prompt) or on stderr (the exec form of each kind
of resource), and the command runs; an honest command gets no such line. A refusal that no rule made (the command
cannot be parsed, a guardrail) says ``refused:`` and why, never a rule called None.

One daemon serves an ssh target (a real sshd), a PostgreSQL database (restricted psql, and an unrestricted one for
the extended protocol's ``\\bind``) and a simulated Kubernetes API server, each with a policy that warns."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.demo.kubesim import make_tls, run_in_thread
from recorder.asciicast import read_cast
from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port, make_keypair
from tests.support.kube import find_kubectl
from tests.support.postgres import start_postgres
from tests.support.ssh_client import ssh_argv
from tests.support.sshd import start_sshd
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow

TOKEN = "warn-test-cluster-token"
PASSWORD = "warn-Test-Pw-31"
REASONS = {  # rule -> its reason in the config
    "watch-uname": "uname is watched on this host",
    "watch-customers": "customer rows are personal data",
    "watch-pod-list": "listing pods is watched",
    "watch-exec": "commands in pods are watched",
}
PROMPTS = {"web-warn": r"[#$] \Z", "web-db": r"=> \Z", "web-db-open": r"=> \Z", "web-k8s": r"web-k8s> \Z"}
# how each client shows the line: psql prints the proxy's NoticeResponse, kubectl the proxy's Warning header (an exec
# stream's warning the bastion says itself: kubectl reads no header on a 101)
PREFIX = {"web-warn": "", "web-db": "NOTICE:  ", "web-db-open": "NOTICE:  ", "web-k8s": "(?:Warning: )?"}


@dataclass(frozen=True)
class Case:
    """One command in one form: ``exec`` (``ssh RES -- LINE``, stderr apart), ``exec-tty`` (the same with ``ssh -t``)
    or ``interactive`` (typed at the resource's prompt); ``output``: what shows it ran; ``rule``: the rule whose
    warning line it gets (None: an honest command, no warning line)."""

    form: str
    resource: str
    line: str
    output: str
    rule: str | None

    @property
    def id(self) -> str:
        return f"{self.form}:{self.resource}:{self.line[:28]}"


CASES = [
    Case("exec", "web-warn", "uname -s", r"^Linux$", "watch-uname"),
    Case("exec", "web-warn", "echo HONEST-$((40+2))", r"^HONEST-42$", None),
    Case("exec-tty", "web-warn", "uname -s", r"^Linux$", "watch-uname"),
    Case("interactive", "web-warn", "uname -s", r"^Linux$", "watch-uname"),
    Case("interactive", "web-warn", "echo HONEST-$((40+2))", r"^HONEST-42$", None),
    Case("exec", "web-db", "SELECT name FROM customers ORDER BY id", r"Ann", "watch-customers"),
    Case("exec", "web-db", "SELECT 40+2 AS answer", r"\b42\b", None),
    Case("interactive", "web-db", "SELECT name FROM customers ORDER BY id;", r"\bAnn\b", "watch-customers"),
    Case("interactive", "web-db", "SELECT 40+2 AS answer;", r"^\s+42$", None),
    # psql's \gdesc sends the statement with the extended protocol (Parse, Describe, Sync): judged at its Parse
    Case("interactive", "web-db-open", "SELECT name FROM customers \\gdesc", r"^\s*name\s+\|\s+text$",
         "watch-customers"),
    Case("interactive", "web-db-open", "SELECT 40+2 AS answer \\gdesc", r"^\s*answer\s+\|\s+integer$", None),
    Case("exec", "web-k8s", "kubectl get pods", r"web-1", "watch-pod-list"),
    Case("exec", "web-k8s", "kubectl get pod web-2", r"web-2", None),
    Case("exec", "web-k8s", "kubectl exec web-1 -- hostname", r"^web-1$", "watch-exec"),
    Case("exec-tty", "web-k8s", "kubectl exec web-2 -- hostname", r"^web-2$", "watch-exec"),
    Case("interactive", "web-k8s", "get pods", r"web-1\s+1/1\s+Running", "watch-pod-list"),
    Case("interactive", "web-k8s", "get pod web-2", r"web-2\s+1/1\s+Running", None),
    Case("interactive", "web-k8s", "exec web-3 -- hostname", r"^web-3$", "watch-exec"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    kubectl = find_kubectl()
    assert kubectl, "no kubectl >= 1.30 found: run scripts/setup --test"
    d = tmp_path_factory.mktemp("warn")
    (d / "state").mkdir()
    pg = start_postgres()
    tls = make_tls(d / "tls")
    sim, stop_sim = run_in_thread(token=TOKEN, cert=tls.cert, key=tls.key, client_ca=tls.ca)
    target_key, target_pub = make_keypair(d / "target_credential", "bastion-credential")
    target = start_sshd(d / "sshd", authorized_keys=[target_pub])
    try:
        pg.psql(f"CREATE USER app PASSWORD '{PASSWORD}'")
        pg.psql("CREATE DATABASE app OWNER app")
        pg.psql("CREATE TABLE customers(id int primary key, name text); INSERT INTO customers VALUES (1,'Ann'),"
                "(2,'Bob'); ALTER TABLE customers OWNER TO app", db="app")
        (d / "db.pw").write_text(PASSWORD + "\n")
        (d / "cluster-token").write_text(TOKEN + "\n")
        keys = {u: make_keypair(d / f"key_{u}", u)[0] for u in ("alice", "bob")}
        db = f"""\
    kind: postgres
    host: 127.0.0.1
    port: {pg.port}
    database: app
    user: app
    credential: {{password_file: {d / 'db.pw'}}}
    tls: {{mode: disable}}
    policy: db-warn
"""
        port = free_port()
        cfg = write_config(d, port, keys, target, target_key, extra_top=f"kubectl: {kubectl}\n", extra_resources=f"""\
  web-warn:
    kind: ssh
    host: 127.0.0.1
    port: {target.port}
    user: {target.user}
    credential: {{private_key_file: {target_key}}}
    host_key: "{target.host_key_public}"
    policy: shell-warn
  web-db:
{db}    restrict: true
  web-db-open:
{db}  web-k8s:
    kind: kubernetes
    server: https://127.0.0.1:{sim.port}
    ca_file: {tls.ca}
    credential: {{token_file: {d / 'cluster-token'}}}
    namespace: default
    policy: k8s-warn
""", extra_policies=f"""\
  shell-warn:
    default: allow
    rules:
      - {{name: watch-uname, programs: [uname], action: warn, reason: {REASONS['watch-uname']}}}
      - {{name: no-rm, programs: [rm], action: block, reason: deleting files is not allowed}}
  db-warn:
    default: allow
    rules:
      - {{name: watch-customers, tables: [customers], action: warn, reason: {REASONS['watch-customers']}}}
  k8s-warn:
    default: allow
    rules:
      - {{name: watch-pod-list, api_resources: [pods], verbs: [list], action: warn,
         reason: {REASONS['watch-pod-list']}}}
      - {{name: watch-exec, api_resources: [pods/exec], action: warn, reason: {REASONS['watch-exec']}}}
""")
        log = d / "bastion.out"
        proc = start_bastion(cfg, port, log)
        try:
            yield BastionEnv(d, cfg, port, keys, target, target_key, proc, log)
        finally:
            stop_bastion(proc)
    finally:
        target.stop()
        stop_sim()
        pg.stop()


def warning_line(case: Case) -> str:
    """The line the operator must see: the channel's own prefix (psql's NOTICE, kubectl's Warning), the rule, its
    reason."""
    assert case.rule is not None
    return PREFIX[case.resource] + re.escape(f"bastion: warning (rule '{case.rule}'): {REASONS[case.rule]}")


def run_exec(env: BastionEnv, case: Case) -> tuple[str, str]:
    """(stdout, stderr) of ``ssh RES -- LINE``."""
    out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", case.resource, "--", case.line, tty=False),
                         capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, (out.stdout, out.stderr)
    return out.stdout, out.stderr


def run_on_terminal(env: BastionEnv, case: Case) -> str:
    """The screen after the line ran: typed at the resource's prompt (``interactive``), or given to ``ssh -t RES --
    LINE`` (``exec-tty``: stdout and stderr both reach the terminal)."""
    if case.form == "exec-tty":
        with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", case.resource, "--", case.line, tty=True),
                      cols=160, rows=40) as t:
            assert t.wait_exit(timeout=60) == 0, t.screen_text()
            return t.screen_text()
    with Terminal(ssh_argv(env.keys["alice"], env.port, "alice", case.resource, tty=True), cols=160, rows=40) as t:
        t.wait_for_raw(PROMPTS[case.resource], timeout=30)
        t.send(case.line + "\r")
        t.wait_for(case.output, timeout=30)
        t.wait_for_raw(PROMPTS[case.resource], timeout=30)  # everything of this command is on the screen
        screen = t.screen_text()
        t.send("exit\r" if case.resource in ("web-warn", "web-k8s") else "\x04")
        t.wait_exit(timeout=30)
    return screen


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_warning_is_seen_and_the_command_runs(env: BastionEnv, case: Case) -> None:
    if case.form != "exec":
        screen = run_on_terminal(env, case)
        assert re.search(case.output, screen, re.M), screen
        if case.rule is None:
            assert "bastion: warning" not in screen, screen
            return
        assert re.search(rf"^{warning_line(case)}$", screen, re.M), screen
        # said once, before the command's output
        assert len(re.findall(warning_line(case), screen)) == 1, screen
        lines = screen.splitlines()
        said = next(i for i, ln in enumerate(lines) if re.search(warning_line(case), ln))
        assert any(re.search(case.output, ln) for ln in lines[said + 1:]), screen  # then the command ran
        return
    stdout, stderr = run_exec(env, case)
    assert re.search(case.output, stdout, re.M), (stdout, stderr)
    if case.rule is None:
        assert "bastion: warning" not in stdout + stderr, (stdout, stderr)
        return
    assert re.search(rf"^{warning_line(case)}$", stderr, re.M), (stdout, stderr)
    assert "bastion: warning" not in stdout, stdout  # a script reading stdout gets the command's output only


def test_the_warning_stays_in_the_recording(env: BastionEnv) -> None:
    """The marker and the audit event of a warned line are still written (the warning is said on top of them)."""
    run_exec(env, Case("exec", "web-warn", "uname -m", r".", "watch-uname"))
    out = env.bastion("sessions", "list", "--json")
    assert out.returncode == 0, out.stderr
    casts = [Path(s["recording"]) for s in json.loads(out.stdout) if s["recording"]]
    markers = [e.data for p in casts if p.exists() for e in read_cast(p).events if e.code == "m"]
    assert any(m.startswith("policy: warn by rule 'watch-uname'") for m in markers), markers


REFUSALS = [
    ("web-warn", 'echo "unterminated', "bastion: refused: the command cannot be parsed (unterminated double quote)"),
    ("web-warn", "echo $((", "bastion: refused: the command cannot be parsed"),
    ("web-db", "SELECT ((", "ERROR:  bastion: refused: the SQL cannot be parsed"),
    ("web-k8s", "kubectl get secrets", "bastion: refused: secret values would reach the operator"),
]


@pytest.mark.parametrize(("resource", "line", "said"), REFUSALS, ids=[f"{r}:{c}" for r, c, _ in REFUSALS])
def test_a_refusal_without_a_rule_says_refused_not_rule_none(env: BastionEnv, resource: str, line: str,
                                                             said: str) -> None:
    out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", resource, "--", line, tty=False),
                         capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert said in out.stderr, out.stderr
    assert "None" not in out.stderr and "blocked by" not in out.stderr, out.stderr
