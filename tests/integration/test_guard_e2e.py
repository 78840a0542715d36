"""bastion-guard end to end: the stock OpenSSH client -> bastion -> a real sshd whose sessions run under the guard
(``enforce: guard``). Every way of running ``rm`` that the typed-line filter cannot see (an alias, a script, awk's
system(), a git alias, a renamed copy, vim's ``:!``, a background job) is stopped at the exec and leaves the file in
place, naming the rule; ``chmod`` in a script waits for a reviewer and runs after approval; every exec is a marker in
the recording; killing the guard ends the session and everything it ran; a target without the guard runs nothing.
Harmless work stays easy: the same session runs ls, git, a script and a pipeline without a word from the bastion."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.asciicast import read_cast
from tests.integration.conftest import BastionEnv, own_bastion
from tests.support.review import approve
from tests.support.ssh_client import ssh_argv
from tests.support.sshd import start_sshd
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PROMPT = r"[#$] *$"
USER = "bastion-guarded"
POLICY = """\
  execs:
    default: allow
    rules:
      - {name: no-rm, programs: [rm, unlink, shred], action: block, reason: deleting files is not allowed}
      - name: no-escape
        programs: [systemd-run, at, batch, crontab]
        action: block
        reason: these start programs outside the session
      # python3 by name: the probes drive attacks through it (a rule naming an interpreter decides for it, in place
      # of the built-in guard-interpreter rule; test_demo covers the unnamed case)
      - {name: python-ok, programs: [python3, "python3.*"], action: allow}
      - name: chmod-needs-approval
        programs: [chmod]
        args: ["/tmp/bg*"]     # the tests' files only: the target account's own startup files chmod too
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
        timeout: 120
"""


def resources(guard: Path, target_port: int, user: str, key: Path, host_key: str) -> str:
    common = (f"    kind: ssh\n    host: 127.0.0.1\n    port: {target_port}\n    user: {user}\n"
              f"    credential: {{private_key_file: {key}}}\n    host_key: \"{host_key}\"\n    policy: execs\n")
    return (f"  web-guarded:\n{common}    enforce: guard\n    guard_path: {guard}\n"
            f"  web-noguard:\n{common}    enforce: guard\n    guard_path: /nonexistent/bastion-guard\n")


def login_user() -> str:
    """The unprivileged account the bastion logs in as on the target (as in a real deployment: the guard judges
    programs by name, which root could replace), with a clean home: created when missing."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        if os.geteuid() != 0:
            return pwd.getpwuid(os.getuid()).pw_name
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", USER], check=True,
                       capture_output=True)
    return USER


@pytest.fixture(scope="module")
def guarded(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    """A daemon with ``web-guarded`` (the guard installed as the Ansible role does: the target's python3 in its
    first line, 0755, root's) and ``web-noguard`` (a guard_path where nothing is installed)."""
    d = tmp_path_factory.mktemp("guarded")
    base = bastion_env
    # a target sshd of its own, whose authorized_keys (and the guard) the unprivileged login user can read
    sshd_dir = Path(tempfile.mkdtemp(prefix="bg-sshd-", dir="/tmp"))
    sshd_dir.chmod(0o755)
    guard = sshd_dir / "bastion-guard"
    source = (ROOT / "guard" / "agent.py").read_text()
    guard.write_text("#!/usr/bin/python3\n" + source.split("\n", 1)[1])
    guard.chmod(0o755)
    target = start_sshd(sshd_dir, authorized_keys=[Path(f"{base.target_key}.pub").read_text()])
    try:
        (sshd_dir / "authorized_keys").chmod(0o644)
        extra = resources(guard, target.port, login_user(), base.target_key, target.host_key_public)
        with own_bastion(base, d, extra_resources=extra, extra_policies=POLICY,
                         extra_roles="  guarded-ops: {groups: [ops], resources: [web-guarded, web-noguard]}\n"
                         ) as env:
            yield env
    finally:
        target.stop()
        shutil.rmtree(sshd_dir, ignore_errors=True)


@pytest.fixture()
def work() -> Iterator[Path]:
    """A directory of the target's login user, where the tests' files are made."""
    d = Path(tempfile.mkdtemp(prefix="bg", dir="/tmp"))
    user = pwd.getpwnam(login_user())
    os.chown(d, user.pw_uid, user.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def own(*paths: Path) -> None:
    user = pwd.getpwnam(login_user())
    for p in paths:
        os.chown(p, user.pw_uid, user.pw_gid)


def shell(env: BastionEnv, user: str = "alice", resource: str = "web-guarded") -> Terminal:
    return Terminal(ssh_argv(env.keys[user], env.port, user, "-t", resource), cols=160, rows=40)


def run(env: BastionEnv, command: str, resource: str = "web-guarded") -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", resource, "--", command, tty=False),
                          capture_output=True, text=True, timeout=90)


def typed(t: Terminal, line: str) -> None:
    """Type ``line`` at the prompt and wait for the next prompt (whatever the line did)."""
    before = len(t.raw_text())
    t.send(line + "\r")
    deadline = time.monotonic() + 30
    while not re.search(r"[#$] ", t.raw_text()[before + len(line):]):
        assert time.monotonic() < deadline, f"no prompt after {line!r}:\n{t.screen_text()}"
        assert not t.eof, f"the session ended after {line!r}:\n{t.screen_text()}"
        time.sleep(0.05)


# Each line runs rm on the file ``f`` in a way the typed-line filter cannot see; under the guard the rm exec is
# killed before it runs, the file stays, and the terminal names the rule.
HIDDEN_RM = [
    ("alias", "alias x=rm\nx f"),  # an alias takes effect from the next line on
    ("function", "x() { rm \"$@\"; }; x f"),
    ("script", "printf 'rm f\\n' > s.sh; bash s.sh"),
    ("awk-system", "awk 'BEGIN{system(\"rm f\")}'"),
    ("git-alias", "git -c alias.x='!rm f' x"),
    ("renamed-copy", "cp /bin/rm ./y; ./y f"),
    ("vim-bang", "vim -es -c '!rm f' -c 'q!'"),
    ("env-var", "c=rm; $c f"),
    ("find-exec", "find . -name f -exec rm {} +"),
    ("xargs", "echo f | xargs rm"),
    ("python-subprocess", "python3 -c 'import subprocess; subprocess.call([\"rm\", \"f\"])'"),
    ("symlink", "ln -s /bin/rm ./z; ./z f"),
    ("eval-base64", "eval \"$(echo cm0gZgo= | base64 -d)\""),
]


@pytest.mark.parametrize(("name", "line"), HIDDEN_RM, ids=[n for n, _ in HIDDEN_RM])
def test_rm_hidden_from_the_typed_line_is_stopped_at_the_exec(guarded: BastionEnv, work: Path, name: str,
                                                              line: str) -> None:
    f = work / "f"
    f.write_text("keep me\n")
    with shell(guarded) as t:
        t.wait_for(PROMPT, 30)
        typed(t, f"cd {work}")
        for part in line.split("\n"):
            typed(t, part)
        t.wait_for_raw(r"blocked by rule 'no-rm'")
        assert f.read_text() == "keep me\n", f"{name}: the file is gone"
        t.send("exit\r")
        t.wait_exit(30)


def test_a_background_rm_is_stopped_too(guarded: BastionEnv, work: Path) -> None:
    f = work / "f"
    f.write_text("keep me\n")
    with shell(guarded) as t:
        t.wait_for(PROMPT, 30)
        typed(t, f"cd {work}")
        typed(t, "(sleep 1; rm f) &")
        t.wait_for_raw(r"blocked by rule 'no-rm'", 30)
        assert f.exists()
        t.send("exit\r")
        t.wait_exit(30)


def test_chmod_in_a_script_waits_for_a_reviewer_and_runs_after_approval(guarded: BastionEnv, work: Path) -> None:
    f = work / "f"
    f.write_text("x\n")
    f.chmod(0o644)
    own(f)
    (work / "perm.sh").write_text(f"chmod 600 {f}\necho chmod-done\n")
    with shell(guarded) as alice:
        alice.wait_for(PROMPT, 30)
        alice.send(f"bash {work}/perm.sh\r")
        alice.wait_for_raw(r"waiting for approval \(request #\d+, rule chmod-needs-approval\)", 30)
        assert (f.stat().st_mode & 0o777) == 0o644  # held: not run
        with Terminal(ssh_argv(guarded.keys["bob"], guarded.port, "bob", tty=True), cols=160, rows=30) as bob:
            bob.wait_for(r"roles: .*reviewers", 30)
            bob.send_key("f2")
            bob.wait_for(r"alice\s+web-guarded\s+.*chmod 600", 30)
            shown = approve(bob)
            assert "bash" in shown  # the reviewer sees the parent chain
            alice.wait_for_raw(r"chmod-done", 30)
        assert (f.stat().st_mode & 0o777) == 0o600
        alice.send("exit\r")
        alice.wait_exit(30)


def test_every_exec_is_a_marker_and_searchable(guarded: BastionEnv, work: Path) -> None:
    out = run(guarded, f"cd {work} && /bin/true && /bin/echo marker-$((6*7)) && env true && ls -d . > /dev/null")
    assert out.returncode == 0 and "marker-42" in out.stdout, out.stderr
    sessions = json.loads(guarded.bastion("sessions", "list", "--json").stdout)
    rec = next(Path(s["recording"]) for s in sessions if s["command"] and "marker-$((6*7))" in s["command"])
    markers = [e.data for e in read_cast(rec).events if e.code == "m" and e.data.startswith("exec: ")]
    programs = [m.split()[1] for m in markers]
    # the session's shell, then each program the command line runs, in order (echo and cd are builtins of
    # bash, but /bin/echo is a program; env runs true)
    assert [p.rsplit("/", 1)[-1] for p in programs][-5:] == ["true", "echo", "env", "true", "ls"], markers
    assert all("[by " in m for m in markers[1:]), markers
    deadline = time.monotonic() + 60
    while True:
        hits = json.loads(guarded.bastion("audit", "search", "marker-$((6*7))", "--only", "commands",
                                          "--json").stdout or "[]")
        if hits or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert hits, "the exec markers are not searchable"


def test_exec_form_blocks_a_script_that_deletes(guarded: BastionEnv, work: Path) -> None:
    f = work / "f"
    f.write_text("keep\n")
    (work / "s.sh").write_text(f"rm {f}\necho after-rm\n")
    out = run(guarded, f"bash {work}/s.sh")
    assert f.exists()
    assert "blocked by rule 'no-rm'" in out.stderr
    assert "after-rm" in out.stdout  # the script goes on: only the rm was refused


HARMLESS = [
    ("ls", "ls -la /", "bin"),
    ("pipeline", "printf 'b\\na\\n' | sort | head -1", "a"),
    ("git", "git --version", "git version"),
    ("script", "printf 'echo from-script\\n' > /tmp/bg-ok.sh && bash /tmp/bg-ok.sh && rm_not=1 && echo ok", "ok"),
    ("awk", "awk 'BEGIN{print 6*7}'", "42"),
    ("subshell", "(cd / && pwd)", "/"),
]


@pytest.mark.parametrize(("name", "command", "expect"), HARMLESS, ids=[h[0] for h in HARMLESS])
def test_harmless_commands_run_without_a_word(guarded: BastionEnv, name: str, command: str, expect: str) -> None:
    out = run(guarded, command)
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout
    assert "bastion:" not in out.stderr


def test_killing_the_guard_ends_the_session_and_what_it_ran(guarded: BastionEnv, work: Path) -> None:
    with shell(guarded) as t:
        t.wait_for(PROMPT, 30)
        typed(t, "sleep 300 & echo bgpid=$!")
        m = re.search(r"bgpid=(\d+)", t.raw_text())
        assert m
        sleeper = int(m.group(1))
        assert Path(f"/proc/{sleeper}").exists()
        guards = subprocess.run(["pgrep", "-f", "bastion-guard --session"], capture_output=True, text=True)
        pids = [int(p) for p in guards.stdout.split()]
        mine = [p for p in pids if _descends(sleeper, p)]
        assert len(mine) == 1, (pids, sleeper)
        os.kill(mine[0], signal.SIGKILL)
        t.wait_exit(30)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{sleeper}").exists() and _state(sleeper) != "Z":
            assert time.monotonic() < deadline, "the session's background process outlived its guard"
            time.sleep(0.05)


def test_a_target_without_the_guard_runs_nothing(guarded: BastionEnv, work: Path) -> None:
    out = run(guarded, f"touch {work}/ran", resource="web-noguard")
    assert out.returncode != 0
    assert "bastion-guard did not start on the target" in out.stderr
    assert not (work / "ran").exists()


def test_the_operators_command_is_not_on_the_targets_command_line(guarded: BastionEnv) -> None:
    """The command travels in the first frame: what sshd ran (the guard, the parent of the session's shell) carries
    no word of it."""
    out = run(guarded, "cat /proc/$PPID/cmdline | tr '\\0' ' '; echo")
    assert out.returncode == 0, out.stderr
    assert "bastion-guard --session" in out.stdout and "cmdline" not in out.stdout, out.stdout


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        pid = _ppid(pid)
        if pid == ancestor:
            return True
    return False


# -- the known limits, as docs/guard.md states them ---------------------------------------------------------------

def test_a_setuid_program_runs_without_its_privilege(guarded: BastionEnv, work: Path) -> None:
    """A setuid-root copy of id reports the session's own uid under the guard (no-new-privs): nothing gains root."""
    if os.geteuid() != 0:
        pytest.skip("making a setuid-root file needs root")
    suid = work / "id-suid"
    shutil.copy2("/usr/bin/id", suid)
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    out = run(guarded, f"{suid} -u")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(pwd.getpwnam(login_user()).pw_uid)


@pytest.mark.parametrize(("label", "command", "rule"), [
    ("perl-unlink", "perl -e 'unlink \"{f}\"'", "guard-interpreter"),
    ("perl-stdin", "echo 'unlink \"{f}\"' | perl", "guard-interpreter"),
    ("node-rm", "node -e 'require(\"fs\").rmSync(\"{f}\")'", "guard-interpreter"),
    ("perl-user-lib", "echo 'unlink \"{f}\"; 1;' > {work}/E.pm; PERL5LIB={work} PERL5OPT=-ME json_pp -v",
     "guard-interpreter"),
    ("ld-preload", "LD_PRELOAD={work}/x.so /bin/true", "guard-loader"),
])
def test_code_that_acts_without_an_exec_gets_the_strictest_action(guarded: BastionEnv, work: Path, label: str,
                                                                   command: str, rule: str) -> None:
    """An interpreter no rule names, running code of the session's (a string, its input, a module path it set),
    and a loader variable the session set: what they would do happens without an exec, so they are refused (here
    the strictest action is block) with the built-in rule named."""
    f = work / "f"
    f.write_text("x\n")
    own(f, work)
    out = run(guarded, command.format(f=f, work=work))
    assert f.exists(), out.stderr
    assert f"blocked by rule '{rule}'" in out.stderr, out.stderr


@pytest.mark.parametrize(("command", "out"), [
    ("echo '{\"a\":1}' | json_pp", '"a" : 1'),     # a system perl script: /usr/bin/perl /usr/bin/json_pp
    ("perl -v | head -2", "This is perl"),
    ("node --version", "v"),
    ("bash -c 'echo shells-are-seen-through'", "shells-are-seen-through"),
])
def test_system_scripts_and_version_questions_run(guarded: BastionEnv, command: str, out: str) -> None:
    result = run(guarded, command)
    assert result.returncode == 0 and out in result.stdout, result.stderr


def test_an_allowed_interpreter_can_still_delete_without_an_exec(guarded: BastionEnv, work: Path) -> None:
    """The guard judges programs, not system calls: python3 is allowed here by a rule naming it, and os.remove is
    not an exec. What an auditor still has is the exec of python3 with its whole argv, in the recording."""
    f = work / "f"
    f.write_text("x\n")
    own(f)
    out = run(guarded, f"python3 -c 'import os; os.remove(\"{f}\")'")
    assert out.returncode == 0, out.stderr
    assert not f.exists()
    sessions = json.loads(guarded.bastion("sessions", "list", "--json").stdout)
    rec = next(Path(s["recording"]) for s in sessions if s["command"] and "os.remove" in s["command"])
    assert any(e.code == "m" and e.data.startswith("exec: ") and "os.remove" in e.data
               for e in read_cast(rec).events if "python3" in e.data)


def test_a_nohup_background_job_is_still_in_the_tree_and_ends_with_the_session(guarded: BastionEnv,
                                                                                 work: Path) -> None:
    out = run(guarded, f"cd {work} && nohup sleep 300 > /dev/null 2>&1 & echo pid=$!")
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split("pid=")[1].split()[0])
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
        assert time.monotonic() < deadline, "a guarded session left a process running after it ended"
        time.sleep(0.05)


# -- transfers and -J under the guard ------------------------------------------------------------------------------

def test_scp_and_rsync_exec_forms_run_under_the_guard(guarded: BastionEnv, work: Path, tmp_path: Path) -> None:
    """scp -O and rsync run their remote side as a command: on a guarded resource that command is the guard's, and
    the bytes pass through its frames unchanged."""
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(300_000))
    opts = ["-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o",
            "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"]
    key = str(guarded.keys["alice"])
    out = subprocess.run(["scp", "-O", *opts, "-P", str(guarded.port), "-i", key, str(src),
                          f"alice+web-guarded@127.0.0.1:{work}/up.bin"], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert (work / "up.bin").read_bytes() == src.read_bytes()
    if shutil.which("rsync"):
        ssh = " ".join(["ssh", *opts, "-p", str(guarded.port), "-i", key])
        out = subprocess.run(["rsync", "-a", "-e", ssh, str(src), f"alice+web-guarded@127.0.0.1:{work}/rs.bin"],
                             capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        assert (work / "rs.bin").read_bytes() == src.read_bytes()


def test_an_ssh_j_session_runs_under_the_guard(guarded: BastionEnv, work: Path, tmp_path: Path) -> None:
    """ssh -J is served by the bastion itself like alice+web-guarded: its script's rm is stopped at the exec."""
    ca = guarded.bastion("ca")
    assert ca.returncode == 0, ca.stderr
    (tmp_path / "known_hosts").write_text(ca.stdout)
    cfg = tmp_path / "ssh_config"
    common = "  IdentitiesOnly yes\n  IdentityAgent none\n  LogLevel ERROR\n  BatchMode yes\n"
    cfg.write_text(f"Host bastion\n  HostName 127.0.0.1\n  Port {guarded.port}\n  User alice\n"
                   f"  IdentityFile {guarded.keys['alice']}\n  StrictHostKeyChecking no\n"
                   f"  UserKnownHostsFile /dev/null\n{common}"
                   f"Host web-guarded\n  User deploy\n  IdentityFile {guarded.keys['alice']}\n"
                   f"  StrictHostKeyChecking yes\n  UserKnownHostsFile {tmp_path / 'known_hosts'}\n{common}")
    f = work / "f"
    f.write_text("keep\n")
    (work / "s.sh").write_text(f"rm {f}\necho via-j-done\n")
    out = subprocess.run(["ssh", "-F", str(cfg), "-J", "bastion", "web-guarded", f"bash {work}/s.sh"],
                         capture_output=True, text=True, timeout=90)
    assert "via-j-done" in out.stdout, out.stderr
    assert "blocked by rule 'no-rm'" in out.stderr and f.exists()
