"""Ansible through the bastion with the target in the user name (``ansible_user=alice+web-files``), against a real
sshd, ad-hoc and with a playbook, every step checked on the target's disk and in the bastion's store.

What Ansible sends, and what the policy engine makes of it (ansible-core 2.17, ``ssh`` connection):

- Every command except the ``raw`` module's goes out as ``/bin/sh -c '<command> && sleep 0'``; a module runs as
  ``/bin/sh -c '/usr/bin/python3 && sleep 0'`` with the module on stdin (pipelining) or as
  ``/bin/sh -c '/usr/bin/python3 ~/.ansible/tmp/ansible-tmp-.../AnsiballZ_ping.py && sleep 0'`` after an SFTP upload,
  the temp directory being made with backquotes (``mkdir -p "` echo ~/.ansible/tmp `"``) and removed with
  ``rm -f -r``. A shell given code in a string, command substitution and an interpreter running a program are all
  things the engine cannot see through: every one of these lines gets the **strictest action the policy can give
  the user there**. So a module is not judged by what it does (``command: rm x`` is python code on stdin, the
  bastion never sees ``rm``), and the temp directory's ``rm -f -r`` is no different from any other module step.
- With a policy that blocks anything for that user on that resource (the realistic ``no-rm`` deny-list below),
  **no module runs at all**: not ``ping``, not ``copy``, not ``command``, whatever the settings (``pipelining``,
  ``remote_tmp``, ``keep_remote_files`` change where the module's file goes, not that Python runs it). Without
  pipelining the host is ``UNREACHABLE`` ("Failed to create temporary directory", the backquoted ``mkdir`` was
  refused); with pipelining the task fails with ``MODULE FAILURE`` and the bastion's line
  ``bastion: blocked by rule 'no-rm': the engine cannot see through sh runs a shell ...`` in ``module_stderr``.
  Nothing lands on the target; every refusal is a ``command.blocked`` audit event. Ansible does not just warn.
- The ``raw`` module sends its command as written (no ``sh -c``, no Python, ``gather_facts: false``): each line is
  judged like ``ssh alice+web-files@bastion CMD``, runs and is recorded when allowed, and ``raw: rm -f FILE`` is
  refused by ``no-rm`` by name (the task fails, the file stays).
- Modules run only where the strictest action of the policy for that user on that resource is at most ``warn``
  (here the same ``no-rm`` rule with ``action: warn``): then ``ping``, ``copy`` and ``command`` work and every
  step is a recorded session (each module run an exec session, ``copy``'s upload an SFTP session whose transfer
  log has the file's SHA-256), but that is an explicit choice in the policy: the bastion records module runs, it
  does not filter them (a ``command: rm`` in a playbook runs, with a warning).

Settings used, and why:

- ``ansible_python_interpreter=/usr/bin/python3``: interpreter discovery is itself a ``sh -c`` line (opaque) and
  may pick a shim that is not there.
- ``remote_tmp`` / ``ANSIBLE_REMOTE_TMP`` = an absolute path: Ansible finds the home with
  ``echo '~alice+web-files'`` (``~`` + its ``ansible_user``), which the target's shell prints back unchanged (the
  target's account is not called ``alice+web-files``); Ansible takes that for the home and creates a directory
  literally named ``~alice+web-files/.ansible/tmp`` in the target account's login directory. An absolute
  ``remote_tmp`` never asks. (Paths with ``~`` in module arguments have the same problem: write them absolute.)
- ``pipelining=True``: a module goes on stdin, no temp directory, no ``chmod`` and no ``rm -f -r`` per task (one
  exec session per module run instead of four); ``copy`` still uploads its source through SFTP into ``remote_tmp``
  and removes it afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.db import Store
from bastion.store.rows import SessionRecord
from tests.integration.conftest import BastionEnv, own_bastion

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent

POLICY = """\
  ansible-policy:
    default: allow
    rules:
      - {name: no-rm, programs: [rm, unlink, shred, rmdir], action: block, reason: deleting files is not allowed}
  ansible-policy-warned:
    default: allow
    rules:
      - {name: no-rm, programs: [rm, unlink, shred, rmdir], action: warn, reason: deleting files is discouraged}
"""
BLOCKED = "blocked by rule 'no-rm'"


def resources(env: BastionEnv) -> str:
    t = env.target
    return "".join(f"""\
  {name}:
    kind: ssh
    description: real sshd, {policy}
    host: 127.0.0.1
    port: {t.port}
    user: {t.user}
    credential: {{private_key_file: {env.target_key}}}
    host_key: "{t.host_key_public}"
    policy: {policy}
""" for name, policy in (("web-files", "ansible-policy"), ("web-files-warned", "ansible-policy-warned")))


@pytest.fixture(scope="module")
def env(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    d = tmp_path_factory.mktemp("ansibletarget")
    with own_bastion(bastion_env, d, extra_resources=resources(bastion_env), extra_policies=POLICY) as e:
        yield e


@pytest.fixture()
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ansible-target-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def store(env: BastionEnv) -> Store:
    return Store(load_config(env.config).database_url)


def ansible(env: BastionEnv, work: Path, tool: str, *args: str, resource: str = "web-files",
            pipelining: bool = True, remote_tmp: bool = True) -> subprocess.CompletedProcess[str]:
    """``ansible`` or ``ansible-playbook`` against ``target`` = alice+RESOURCE through the bastion."""
    inv = work / "inventory.ini"
    inv.write_text(
        f"target ansible_host=127.0.0.1 ansible_port={env.port} ansible_user=alice+{resource} "
        f"ansible_ssh_private_key_file={env.keys['alice']} ansible_python_interpreter=/usr/bin/python3 "
        "ansible_ssh_common_args='-F /dev/null -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null'\n")
    aenv = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    aenv.update({"ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(work / "no-ansible.cfg"),
                 "ANSIBLE_LOCAL_TEMP": str(work / "local-tmp"), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
                 "ANSIBLE_PIPELINING": str(pipelining), "ANSIBLE_RETRY_FILES_ENABLED": "False",
                 "PATH": f"{BIN}:{aenv['PATH']}"})
    if remote_tmp:
        aenv["ANSIBLE_REMOTE_TMP"] = str(work / "remote-tmp")
    return subprocess.run([str(BIN / tool), "-i", str(inv), *args], capture_output=True, text=True, timeout=300,
                          env=aenv, cwd=work)


def playbook(work: Path, tasks: str) -> str:
    p = work / "play.yml"
    p.write_text("- hosts: target\n  gather_facts: false\n  tasks:\n" + tasks)
    return str(p)


def new_sessions(env: BastionEnv, before: set[str], resource: str) -> list[SessionRecord]:
    """alice's sessions on ``resource`` since ``before`` (ids), oldest first, once all have closed."""
    deadline = time.monotonic() + 20
    while True:
        rows = [s for s in store(env).sessions(limit=200, user="alice", resource=resource) if s.id not in before]
        if rows and all(s.ended_at is not None and s.sha256 for s in rows) or time.monotonic() > deadline:
            return rows[::-1]
        time.sleep(0.2)


def session_ids(env: BastionEnv) -> set[str]:
    return {s.id for s in store(env).sessions(limit=1000)}


def blocked_since(env: BastionEnv, last_id: int) -> list[str]:
    return [str(e.detail.get("text")) for e in store(env).audit_events(limit=200)
            if e.id > last_id and e.action == "command.blocked" and e.actor == "alice"
            and e.resource == "web-files" and e.detail.get("rule") == "no-rm"]


def last_audit_id(env: BastionEnv) -> int:
    events = store(env).audit_events(limit=1)
    return events[0].id if events else 0


def recap_ok(out: subprocess.CompletedProcess[str]) -> bool:
    return out.returncode == 0 and "failed=0" in out.stdout and "unreachable=0" in out.stdout


# ---------------------------------------------------------------------------------------------------- blocking policy

@pytest.mark.parametrize("pipelining", [False, True])
def test_modules_are_refused_where_the_policy_blocks_anything(env: BastionEnv, work: Path, pipelining: bool) -> None:
    mark = last_audit_id(env)
    ping = ansible(env, work, "ansible", "target", "-m", "ping", pipelining=pipelining)
    assert ping.returncode != 0
    if pipelining:  # the module on stdin of `sh -c python3`: refused as a whole
        assert "MODULE FAILURE" in ping.stdout and BLOCKED in ping.stdout, ping.stdout
    else:  # the temp directory's backquoted mkdir is refused first
        assert "UNREACHABLE" in ping.stdout and "Failed to create temporary directory" in ping.stdout, ping.stdout
    (work / "src.txt").write_text("from the controller\n")
    out = ansible(env, work, "ansible-playbook", playbook(work, f"""\
    - ansible.builtin.copy: {{src: {work}/src.txt, dest: {work}/dst.txt, mode: "0644"}}
    - ansible.builtin.command: touch {work}/touched
"""), pipelining=pipelining)
    assert out.returncode != 0 and not recap_ok(out)
    assert not (work / "dst.txt").exists() and not (work / "touched").exists()
    assert not any((work / "remote-tmp").glob("ansible-tmp-*"))
    texts = blocked_since(env, mark)
    assert texts and all(t.startswith("/bin/sh -c ") for t in texts), texts
    assert any("mkdir" in t for t in texts) if not pipelining else any("/usr/bin/python3" in t for t in texts)


def test_raw_ad_hoc_and_playbook_run_judged_and_recorded(env: BastionEnv, work: Path) -> None:
    before = session_ids(env)
    cmd = "echo raw-$((6*7)); id -un"
    out = ansible(env, work, "ansible", "target", "-m", "raw", "-a", cmd)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "raw-42" in out.stdout
    rows = new_sessions(env, before, "web-files")
    assert [s.command for s in rows] == [cmd], rows  # sent as written: no sh -c, nothing else
    assert rows[0].mode == "exec" and rows[0].exit_status == 0 and rows[0].recording
    assert "raw-42" in Path(rows[0].recording).read_text()

    before = session_ids(env)
    write = f"printf 'written by ansible\\n' > {work}/raw.txt"
    out = ansible(env, work, "ansible-playbook", playbook(work, f"""\
    - ansible.builtin.raw: {write}
    - ansible.builtin.raw: cat {work}/raw.txt
      register: cat
    - ansible.builtin.assert: {{that: ["'written by ansible' in cat.stdout"]}}
"""))
    assert recap_ok(out), out.stdout + out.stderr
    assert (work / "raw.txt").read_text() == "written by ansible\n"
    rows = new_sessions(env, before, "web-files")
    assert [s.command for s in rows] == [write, f"cat {work}/raw.txt"], [s.command for s in rows]
    assert all(s.outcome == "exited" and s.exit_status == 0 and s.recording for s in rows)


def test_rm_in_a_playbook_is_refused_and_the_file_stays(env: BastionEnv, work: Path) -> None:
    victim = work / "victim"
    victim.write_text("still here\n")
    mark = last_audit_id(env)
    out = ansible(env, work, "ansible-playbook", playbook(work, f"""\
    - ansible.builtin.raw: rm -f {victim}
"""))
    assert out.returncode != 0 and "failed=1" in out.stdout
    assert "blocked by rule 'no-rm': deleting files is not allowed" in out.stdout, out.stdout
    assert victim.read_text() == "still here\n"
    assert blocked_since(env, mark) == [f"rm -f {victim}"]
    # the same rm as a module: Python on stdin, refused as such (the bastion never sees the rm)
    out = ansible(env, work, "ansible-playbook", playbook(work, f"""\
    - ansible.builtin.command: rm -f {victim}
"""))
    assert out.returncode != 0 and "failed=1" in out.stdout and BLOCKED in out.stdout, out.stdout
    assert victim.read_text() == "still here\n"


def test_home_discovery_with_the_target_in_the_user_name(env: BastionEnv, work: Path) -> None:
    """``echo ~alice+web-files`` (quoted by Ansible) names no account on the target: the shell prints it back."""
    out = subprocess.run(["ssh", "-F", "/dev/null", "-i", str(env.keys["alice"]), "-o", "IdentitiesOnly=yes",
                          "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
                          "LogLevel=ERROR", "-o", "BatchMode=yes", "-p", str(env.port), "alice+web-files@127.0.0.1",
                          "echo ~alice+web-files; echo '~alice+web-files'; echo ~"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["~alice+web-files", "~alice+web-files", str(Path.home())]
    # without an absolute remote_tmp, Ansible (where modules may run) takes that for the home: a directory
    # literally named "~alice+web-files-warned" appears in the target account's login directory
    stray = Path.home() / "~alice+web-files-warned"
    shutil.rmtree(stray, ignore_errors=True)
    try:
        ping = ansible(env, work, "ansible", "target", "-m", "ping", "-vvv", resource="web-files-warned",
                       pipelining=False, remote_tmp=False)
        assert ping.returncode == 0 and '"ping": "pong"' in ping.stdout, ping.stdout[-3000:]
        assert "echo '\"'\"'\"'\"'\"'\"'\"'\"'~alice+web-files-warned" in ping.stdout  # the discovery command
        assert (stray / ".ansible" / "tmp").is_dir()
    finally:
        shutil.rmtree(stray, ignore_errors=True)
    # with it, nothing is asked and nothing strays
    ping = ansible(env, work, "ansible", "target", "-m", "ping", "-vvv", resource="web-files-warned",
                   pipelining=False)
    assert ping.returncode == 0 and "~alice+web-files-warned" not in ping.stdout
    assert not stray.exists()


# ---------------------------------------------------------------------------------------------------- warn policy

def test_modules_run_where_the_policy_only_warns(env: BastionEnv, work: Path) -> None:
    res = "web-files-warned"
    before = session_ids(env)
    ping = ansible(env, work, "ansible", "target", "-m", "ping", resource=res)
    assert ping.returncode == 0 and '"ping": "pong"' in ping.stdout, ping.stdout + ping.stderr
    rows = new_sessions(env, before, res)
    assert [s.command for s in rows] == ["/bin/sh -c '/usr/bin/python3 && sleep 0'"]
    assert rows[0].exit_status == 0 and rows[0].recording

    before = session_ids(env)
    (work / "marker").write_text("m\n")
    cmd = ansible(env, work, "ansible", "target", "-m", "ansible.builtin.command", "-a", f"ls {work}",
                  resource=res)
    assert cmd.returncode == 0 and "marker" in cmd.stdout, cmd.stdout + cmd.stderr
    assert len(new_sessions(env, before, res)) == 1

    src = work / "src.txt"
    src.write_text("copied through the bastion\n" * 100)
    before = session_ids(env)
    out = ansible(env, work, "ansible-playbook", playbook(work, f"""\
    - ansible.builtin.ping:
    - ansible.builtin.copy: {{src: {src}, dest: {work}/dst.txt, mode: "0640"}}
    - ansible.builtin.command: sha256sum {work}/dst.txt
      register: sum
    - ansible.builtin.copy: {{content: "{{{{ sum.stdout }}}}\\n", dest: {work}/sum.txt}}
"""), resource=res)
    assert recap_ok(out), out.stdout + out.stderr
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert (work / "dst.txt").read_text() == src.read_text()
    assert (work / "dst.txt").stat().st_mode & 0o777 == 0o640
    assert (work / "sum.txt").read_text() == f"{digest}  {work}/dst.txt\n"  # the command's output, on disk
    assert not any((work / "remote-tmp").glob("ansible-tmp-*"))  # its rm -f -r ran (warned)
    rows = new_sessions(env, before, res)
    assert all(s.user == "alice" and s.resource == res and s.recording and s.sha256 for s in rows)
    modules = [s for s in rows if s.command == "/bin/sh -c '/usr/bin/python3 && sleep 0'"]
    assert len(modules) >= 4, [s.command for s in rows]  # ping, copy (stat + copy), command, copy (content)
    uploads = [s for s in rows if s.mode == "sftp"]
    assert uploads, [s.mode for s in rows]
    ops = [json.loads(x) for s in uploads for x in Path(str(s.recording)).read_text().splitlines()]
    assert any(o.get("op") == "upload" and o.get("sha256") == digest and o.get("result") == "ok" for o in ops), ops
    assert any((s.command or "").startswith("/bin/sh -c 'rm -f -r ") for s in rows)


def test_under_warn_a_modules_rm_is_not_stopped(env: BastionEnv, work: Path) -> None:
    """The trade-off of letting modules run: the bastion records them, it cannot judge what they do."""
    victim = work / "victim"
    victim.write_text("v\n")
    out = ansible(env, work, "ansible-playbook", playbook(work, f"""\
    - ansible.builtin.command: rm -f {victim}
"""), resource="web-files-warned")
    assert recap_ok(out), out.stdout + out.stderr
    assert not victim.exists()
