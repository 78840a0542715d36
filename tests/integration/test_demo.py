"""`bastion demo` as the issue's "done when" describes it, with the stock OpenSSH client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.demo.run import prepare
from bastion.demo.shell_target import DemoShell, demo_shell
from bastion.sandbox import Sandbox, SandboxError
from tests.support.keys import free_port_block
from tests.support.review import approve
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def start_demo(state: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "bastion.cli", "demo", "--port", str(port), "--state-dir",
                             str(state)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    out = ""
    deadline = time.monotonic() + 30
    while "Ctrl-C stops the demo" not in out:
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"demo did not start:\n{out}")
        out += line
    proc.banner = out  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=20)
    return rest


def test_demo_exec_sessions_list_and_second_run() -> None:
    # directly under /tmp: when the tests run as root, the demo's PostgreSQL runs as `postgres` and must be able
    # to reach the state dir (pytest's own tmp dirs are private to root)
    state, port = Path(tempfile.mkdtemp(prefix="bastion-demo-", dir="/tmp")), free_port_block(4)
    proc = start_demo(state, port)
    try:
        banner = proc.banner  # type: ignore[attr-defined]
        assert "demo-db is not available" not in banner, banner
        assert f"ssh -i {state}/keys/alice -p {port}" in banner
        for name in ("alice", "bob", "carol"):
            assert (state / "keys" / name).stat().st_mode & 0o777 == 0o600
        out = subprocess.run(ssh_argv(state / "keys" / "alice", port, "alice", "demo-shell", "--", "echo", "hi",
                                      tty=False), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "hi\n"
        # carol may only ask for demo-shell: the request waits for a reviewer (she gives up at once)
        ask = subprocess.Popen(ssh_argv(state / "keys" / "carol", port, "carol", "demo-shell", "--", "echo", "hi",
                                        tty=False), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert ask.stderr is not None
            assert "access to demo-shell needs a reviewer's approval: waiting for approval" in ask.stderr.readline()
        finally:
            ask.kill()
            ask.wait()
        listed = subprocess.run([sys.executable, "-m", "bastion.cli", "--config", str(state / "bastion.yaml"),
                                 "sessions", "list", "--json"], capture_output=True, text=True, timeout=60)
        rows = json.loads(listed.stdout)
        assert rows[0]["user"] == "alice" and rows[0]["resource"] == "demo-shell"
        assert rows[0]["exit_status"] == 0
        events = [json.loads(line) for line in Path(rows[0]["recording"]).read_text().splitlines()[1:]]
        assert "hi\n" in "".join(e[2] for e in events if e[1] == "o")

        def shell(command: str, resource: str = "demo-shell") -> subprocess.CompletedProcess[str]:
            return subprocess.run(ssh_argv(state / "keys" / "alice", port, "alice", resource, "--", command,
                                           tty=False), capture_output=True, text=True, timeout=60)

        # demo-shell is sandboxed: not root, its own home, none of the state dir (no credential), not the project
        secrets = [(state / f).read_text().strip() for f in ("secrets/demo-db.pw", "keys/demo-target-credential")]
        out = shell(f"id -u; echo $HOME; cat {state}/bastion.yaml {state}/secrets/demo-db.pw "
                    f"{state}/keys/demo-target-credential {state}/bastion.db; ls {state}; ls /; ls {REPO}")
        uid, home, *top = out.stdout.split()
        assert uid != "0" if os.geteuid() == 0 else uid == str(os.getuid())
        assert home == "/home/demo"
        assert out.stderr.count("No such file or directory") == 6, out.stderr
        assert not any(s in out.stdout + out.stderr for s in secrets) and "listen:" not in out.stdout
        assert REPO.parts[1] in ("home", "tmp") or REPO.parts[1] not in top, top
        # its home and /tmp outlive a session
        assert shell("touch /tmp/kept && mkdir -p notes && echo x > notes/n").returncode == 0
        assert shell("ls /tmp/kept notes/n").stdout == "/tmp/kept\nnotes/n\n"
        # demo-shell-strict: the allow-list runs freely, deleting is blocked, anything else waits for a reviewer
        out = shell("ls -a notes", "demo-shell-strict")
        assert out.returncode == 0 and out.stdout.split() == [".", "..", "n"], out.stderr
        out = shell("rm notes/n", "demo-shell-strict")
        assert out.returncode != 0 and "blocked by rule 'no-rm'" in out.stderr, out.stderr
        ask = subprocess.Popen(ssh_argv(state / "keys" / "alice", port, "alice", "demo-shell-strict", "--",
                                        "cp notes/n notes/m", tty=False),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert ask.stderr is not None and "waiting for approval" in ask.stderr.readline()
        finally:
            ask.kill()
            ask.wait()
        assert shell("ls notes").stdout == "n\n"
        # the demo policy: rm is blocked in every spelling, the file (made in the shell's own home) stays
        victim = "/home/demo/victim"
        assert shell("touch victim").returncode == 0
        for spelling in ("rm -f {f}", "/bin/rm -f {f}", "\\rm -f {f}", "command rm -f {f}", "sudo rm -f {f}",
                         "$(echo rm) -f {f}", "r''m -f {f}"):
            out = shell(spelling.format(f=victim))
            assert out.returncode != 0 and "rule 'no-rm'" in out.stderr, (spelling, out.stderr)
            assert (state / "target" / "home" / "victim").exists()  # the sandbox's home, kept on the host
        assert shell("test -e victim").returncode == 0
        # chmod waits until bob approves in his TUI, then runs
        chmod = subprocess.Popen(ssh_argv(state / "keys" / "alice", port, "alice", "demo-shell", "--",
                                          f"chmod 600 {victim} && echo DONE", tty=False),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert chmod.stderr is not None and "waiting for approval" in chmod.stderr.readline()
        with Terminal(ssh_argv(state / "keys" / "bob", port, "bob", tty=True), cols=120) as bob:
            bob.wait_for(r"1 request awaits your review")
            bob.send_key("f2")
            bob.wait_for(r"alice\s+demo-shell\s+chmod 600")
            approve(bob)
            out, _ = chmod.communicate(timeout=30)
        assert chmod.returncode == 0 and out == "DONE\n"
        assert shell("stat -c %a victim").stdout == "600\n"
        # demo-shell runs under bastion-guard: rm that the typed line never shows is stopped where it runs
        with Terminal(ssh_argv(state / "keys" / "alice", port, "alice", "-t", "demo-shell"), cols=160) as t:
            t.wait_for(r"demo-shell:~\$ *$", 30)
            t.send("awk 'BEGIN{system(\"rm victim\")}'; echo awk-$?\r")
            t.wait_for_raw(r"blocked by rule 'no-rm'.*exec: /usr/bin/rm rm victim \[by [^]]*awk", 30)
            t.wait_for_raw(r"awk-\d+")
            # an interpreter deletes without an exec: code the guard cannot see gets the strictest action
            t.send("python3 -c 'import os; os.remove(\"victim\")'; echo py-$?\r")
            t.wait_for_raw(r"blocked by rule 'guard-interpreter'.*python3[.\d]* runs code.*"
                           r"exec: /usr/bin/python3[.\d]* python3 -c 'import os; os\.remove")
            t.wait_for_raw(r"py-\d+")
            t.send("python3 --version; echo pyv-$?\r")
            t.wait_for_raw(r"Python 3[.\d]+\s+pyv-0")
            t.send("exit\r")
            t.wait_exit(30)
        assert shell("test -e victim").returncode == 0
        # demo-db: a local PostgreSQL behind the wire proxy; ssn masked; a write that touches more than one row
        # (whatever its WHERE says) is rolled back and waits for bob
        def db(text: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(ssh_argv(state / "keys" / "alice", port, "alice", "demo-db", "--", text,
                                           tty=False), capture_output=True, text=True, timeout=60)

        out = db("SELECT ssn FROM customers")
        assert out.returncode == 0, out.stderr
        assert "*******6789" in out.stdout and "123-45" not in out.stdout
        delete = subprocess.Popen(ssh_argv(state / "keys" / "alice", port, "alice", "demo-db", "--",
                                           "DELETE FROM customers WHERE id > 0", tty=False),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert delete.stderr is not None and "waiting for approval" in delete.stderr.readline()
        assert " 4" in db("SELECT count(*) FROM customers").stdout  # untouched while it waits
        # DROP waits for bob too: denied with a reason, the table stays; then a harmless DROP approved runs
        with Terminal(ssh_argv(state / "keys" / "bob", port, "bob", tty=True), cols=120) as bob:
            bob.wait_for(r"roles: reviewers")
            bob.send_key("f2")
            bob.wait_for(r"alice\s+demo-db\s+DELETE FROM customers WHERE id > 0")
            bob.send("d")
            bob.wait_for(r"why\?")
            bob.send("one row at a time\r")
            _, err = delete.communicate(timeout=30)
            assert delete.returncode != 0 and "denied by bob: one row at a time" in err, err
            assert "touched 4 rows, limit 1; rolled back" in err
            assert " 4" in db("SELECT count(*) FROM customers").stdout
            drop = subprocess.Popen(ssh_argv(state / "keys" / "alice", port, "alice", "demo-db", "--",
                                             "DROP TABLE customers", tty=False),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert drop.stderr is not None and "waiting for approval" in drop.stderr.readline()
            bob.wait_for(r"alice\s+demo-db\s+DROP TABLE customers")
            bob.send("d")
            bob.wait_for(r"why\?")
            bob.send("not the customers table\r")
            _, err = drop.communicate(timeout=30)
            assert drop.returncode != 0 and "denied by bob: not the customers table" in err
            drop = subprocess.Popen(ssh_argv(state / "keys" / "alice", port, "alice", "demo-db", "--",
                                             "DROP TABLE IF EXISTS scratch", tty=False),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            bob.wait_for(r"alice\s+demo-db\s+DROP TABLE IF EXISTS scratch")
            approve(bob)
            _, err = drop.communicate(timeout=30)
            assert drop.returncode == 0 and "approved by bob" in err
        assert " 4" in db("SELECT count(*) FROM customers").stdout
        # one row is within the limit: no approval
        out = db("DELETE FROM customers WHERE id = 3")
        assert out.returncode == 0 and "DELETE 1" in out.stdout, out.stderr
        assert " 3" in db("SELECT count(*) FROM customers").stdout
        # and interactively, in psql: the unbounded DELETE waits; Ctrl-C withdraws it
        with Terminal(ssh_argv(state / "keys" / "alice", port, "alice", "demo-db", tty=True), cols=120) as t:
            t.wait_for(r"=>$")
            t.send("SELECT name, ssn FROM customers ORDER BY id;\r")
            t.wait_for(r"\*+6789")
            t.send("DELETE FROM customers;\r")
            t.wait_for(r"waiting for approval .*rule no-unbounded-writes")
            t.send_key("ctrl-c")
            t.wait_for(r"request withdrawn")
            t.send("SELECT count(*) FROM customers;\r")
            t.wait_for(r"^\s+3\s*$")
            t.send_key("ctrl-d")
            assert t.wait_exit() == 0
        assert "123-45" not in t.raw_text()
        # bob is a reviewer, not an operator: demo-shell is not his to open
        bob = subprocess.run(ssh_argv(state / "keys" / "bob", port, "bob", "demo-shell", "--", "id", tty=False),
                             capture_output=True, text=True, timeout=60)
        assert bob.returncode == 1 and "not permitted" in bob.stderr
    finally:
        rest = stop(proc)
    assert proc.returncode == 0, rest
    host_key = (state / "keys" / "host_ed25519").read_bytes()
    # a second run reuses the directory: same keys, same host key, the old session still listed
    proc = start_demo(state, port)
    try:
        assert (state / "keys" / "host_ed25519").read_bytes() == host_key
        out = subprocess.run(ssh_argv(state / "keys" / "alice", port, "alice", "demo-shell", "--", "echo", "again",
                                      tty=False), capture_output=True, text=True, timeout=60)
        assert out.stdout == "again\n"
        listed = subprocess.run([sys.executable, "-m", "bastion.cli", "--config", str(state / "bastion.yaml"),
                                 "sessions", "list", "--json"], capture_output=True, text=True, timeout=60)
        assert json.loads(listed.stdout)[0]["command"] == "echo again"
        out = subprocess.run(ssh_argv(state / "keys" / "alice", port, "alice", "demo-shell", "--",
                                      "ls /tmp/kept victim", tty=False), capture_output=True, text=True, timeout=60)
        assert out.stdout == "/tmp/kept\nvictim\n", out.stderr  # the shell's home and /tmp outlive the demo too
    finally:
        stop(proc)
    assert proc.returncode == 0
    shutil.rmtree(state, ignore_errors=True)


def test_demo_k8s_done_when() -> None:
    """demo-k8s: get pods lists pods, delete waits for bob, get secret -o yaml is refused naming the rule, and the
    approved exec shell is in the recording."""
    state, port = Path(tempfile.mkdtemp(prefix="bastion-demo-", dir="/tmp")), free_port_block(4)
    proc = start_demo(state, port)
    alice = state / "keys" / "alice"

    def k8s(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(ssh_argv(alice, port, "alice", "demo-k8s", "--", line, tty=False),
                              capture_output=True, text=True, timeout=60)

    try:
        assert "demo-k8s is not available" not in proc.banner, proc.banner  # type: ignore[attr-defined]
        assert "demo-k8s -- kubectl get pods" in proc.banner  # type: ignore[attr-defined]
        out = k8s("kubectl get pods")
        assert out.returncode == 0, out.stderr
        assert [line.split()[0] for line in out.stdout.splitlines()] == ["NAME", "web-1", "web-2", "web-3"]
        out = k8s("kubectl get secret db-password -o yaml")
        assert out.returncode != 0 and "blocked by rule 'no-secrets'" in out.stderr, out.stderr
        assert "password" not in out.stdout
        assert (state / "secrets" / "demo-k8s.token").stat().st_mode & 0o777 == 0o600
        delete = subprocess.Popen(ssh_argv(alice, port, "alice", "demo-k8s", "--", "kubectl delete pod web-2",
                                           tty=False), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert delete.stderr is not None and "waiting for approval" in delete.stderr.readline()
        assert "web-2" in k8s("get pods").stdout  # still there while it waits
        with Terminal(ssh_argv(state / "keys" / "bob", port, "bob", tty=True), cols=120) as bob:
            bob.wait_for(r"roles: reviewers")
            bob.send_key("f2")
            bob.wait_for(r"alice\s+demo-k8s\s+delete pods web-2")
            approve(bob)
            out_d, err = delete.communicate(timeout=30)
            assert delete.returncode == 0 and 'pod "web-2" deleted' in out_d, err
            assert "web-2" not in k8s("get pods").stdout
            with Terminal(ssh_argv(alice, port, "alice", "demo-k8s", tty=True), cols=120) as t:
                t.wait_for(r"demo-k8s>")
                t.send("exec -it web-1 -- sh\r")
                t.wait_for(r"waiting for approval")
                bob.wait_for(r"alice\s+demo-k8s\s+create pods/exec web-1")
                approve(bob)
                t.wait_for(r"^/ #")
                t.send("cat /etc/hostname\r")
                t.wait_for(r"^web-1\s*$")
                t.send("exit\r")
                t.wait_count(r"demo-k8s>", 2)
                t.send_key("ctrl-d")
                assert t.wait_exit() == 0
        listed = subprocess.run([sys.executable, "-m", "bastion.cli", "--config", str(state / "bastion.yaml"),
                                 "sessions", "list", "--json"], capture_output=True, text=True, timeout=60)
        s = next(r for r in json.loads(listed.stdout) if r["resource"] == "demo-k8s" and r["mode"] == "interactive")
        events = [json.loads(line) for line in Path(s["recording"]).read_text().splitlines()[1:]]
        shown = "".join(e[2] for e in events if e[1] == "o")
        assert "cat /etc/hostname" in shown and "\r\nweb-1\r\n" in shown
        assert any(e[1] == "m" and "pods/exec web-1" in e[2] for e in events)
        token = (state / "secrets" / "demo-k8s.token").read_text().strip()
        assert token not in Path(s["recording"]).read_text()
        assert not any(token in p.read_text(errors="replace") for p in (state / "logs").iterdir() if p.is_file())
    finally:
        rest = stop(proc)
        shutil.rmtree(state, ignore_errors=True)
    assert proc.returncode == 0, rest


def test_no_sandbox_no_demo_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: without bubblewrap, or with a sandbox that does not start, there is no demo-shell at all
    (never a shell with the demo's own rights), and the config the demo writes then names neither shell."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(SandboxError, match="bubblewrap"):
        demo_shell(tmp_path / "target")
    with pytest.raises(SandboxError, match="the sandbox does not start"):
        DemoShell(Sandbox("/bin/false"), tmp_path / "target").check()
    with pytest.raises(SandboxError):
        DemoShell(Sandbox(None), tmp_path / "target")
    cfg = load_config(prepare(tmp_path / "state", 2222, shell=False)[0])
    assert not cfg.resources and not cfg.roles["auditors"].request
    cfg = load_config(prepare(tmp_path / "state", 2222)[0])
    assert sorted(cfg.resources) == ["demo-shell", "demo-shell-moderated", "demo-shell-strict"]
    assert cfg.policies["demo-shell-strict"].default.label == "require_approval"
