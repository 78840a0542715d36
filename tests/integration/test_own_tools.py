"""Operators' own tools through the bastion (issue 20), end to end with the stock clients against a real sshd: the
target goes in the user name (``alice+web-files@bastion``), and scp (SFTP and ``-O``), sftp, rsync and git work
unmodified, judged by the same policy as the other forms, recorded as transfer logs, held for reviewers.

Every file operation is checked on the target's disk: a refused one must not have happened, an allowed one must
have happened exactly."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.store.approvals import ApprovalStore
from bastion.store.db import Store
from tests.integration.conftest import BastionEnv, own_bastion
from tests.support.keys import free_port
from tests.support.procs import stop_ssh_client
from tests.support.review import approve
from tests.support.ssh_client import ssh_argv
from tests.support.sshd import SshdTarget, start_sshd
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow

POLICY = """\
  files:
    default: allow
    rules:
      - {name: no-rm, programs: [rm, unlink, shred, rmdir], action: block, reason: deleting files is not allowed}
      - name: chmod-needs-approval
        programs: [chmod, chown, chgrp]
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
        timeout: 120
        reason: permission changes need a reviewer's approval
      - name: protected-needs-approval
        transfer: [upload, rename, symlink, mkdir]
        paths: ["{protected}/**"]
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
        timeout: 120
        reason: writing into the protected directory needs a reviewer
      - name: no-big-uploads
        transfer: [upload]
        max_bytes: 3000000
        action: block
        reason: uploads over 3 MB are not allowed
      - name: no-big-downloads
        transfer: [download]
        max_bytes: 4000000
        action: block
        reason: downloads over 4 MB are not allowed
"""
# the protected directory: its own per test process (two test runs on one machine must not share it)
PROTECTED = Path(f"/tmp/own-tools-protected-{os.getpid()}")
POLICY = POLICY.replace("{protected}", str(PROTECTED))
ECHO_PORT = free_port()  # a service on the target's loopback that web-files lets ssh -L reach


def resources(env: BastionEnv, target: SshdTarget | None = None) -> str:
    t = target or env.target
    return f"""\
  web-files:
    kind: ssh
    description: real sshd, transfer policy
    host: 127.0.0.1
    port: {t.port}
    user: {t.user}
    credential: {{private_key_file: {env.target_key}}}
    host_key: "{t.host_key_public}"
    policy: files
    transfers: {{archive: true, max_archive_bytes: 1000000}}
    forwarding: [{ECHO_PORT}]
"""


@pytest.fixture(scope="module")
def env(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    d = tmp_path_factory.mktemp("owntools")
    # web-files' own sshd: the same credential, and local forwarding on (for the resource's forwarding ports)
    target = start_sshd(d / "sshd", authorized_keys=[Path(f"{bastion_env.target_key}.pub").read_text().strip()],
                        forwarding=True)
    try:
        with own_bastion(bastion_env, d, extra_resources=resources(bastion_env, target), extra_policies=POLICY) as e:
            yield e
    finally:
        target.stop()


@pytest.fixture()
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="owntools-", dir="/tmp"))
    PROTECTED.mkdir(exist_ok=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(PROTECTED, ignore_errors=True)


def opts(env: BastionEnv, user: str) -> list[str]:
    return ["-F", "/dev/null", "-i", str(env.keys[user]), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes"]


def dest(user: str, resource: str = "web-files") -> str:
    return f"{user}+{resource}@127.0.0.1"


def scp(env: BastionEnv, *args: str, user: str = "alice", legacy: bool = False,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["scp", *opts(env, user), "-P", str(env.port), *(["-O"] if legacy else []), *args],
                          capture_output=True, text=True, timeout=timeout)


def sftp(env: BastionEnv, batch: str, user: str = "alice", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sftp", *opts(env, user), "-P", str(env.port), "-b", "-", dest(user)], input=batch,
                          capture_output=True, text=True, timeout=timeout)


def sftp_bg(env: BastionEnv, work: Path, batch: str, user: str = "alice") -> subprocess.Popen[str]:
    """sftp running ``batch`` in the background (to be decided by a reviewer meanwhile)."""
    f = work / f"batch-{time.monotonic_ns()}"
    f.write_text(batch)
    return subprocess.Popen(["sftp", *opts(env, user), "-P", str(env.port), "-b", str(f), dest(user)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ssh_cmd(env: BastionEnv, user: str = "alice") -> str:
    return " ".join(["ssh", *opts(env, user), "-p", str(env.port)])


def transfer_log(env: BastionEnv, mode: str) -> list[dict[str, object]]:
    """The newest closed transfer session's log lines (mode: sftp or exec)."""
    store = Store(load_config(env.config).database_url)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = [s for s in store.sessions(limit=20) if s.mode == mode and s.recording and s.sha256]
        if rows:
            path = Path(rows[0].recording)
            assert path.suffix == ".jsonl", path
            lines = [json.loads(x) for x in path.read_text().splitlines()]
            assert lines[0]["kind"] == "transfer" and lines[-1].get("end") is True
            return lines[1:]
        time.sleep(0.2)
    raise AssertionError(f"no closed {mode} session")


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------- scp / sftp

def test_scp_up_and_down_in_sftp_mode_recorded_with_hashes(env: BastionEnv, work: Path) -> None:
    src = work / "up.bin"
    src.write_bytes(os.urandom(300_000))
    out = scp(env, str(src), f"{dest('alice')}:{work}/landed.bin")
    assert out.returncode == 0, out.stderr
    assert (work / "landed.bin").read_bytes() == src.read_bytes()
    ops = transfer_log(env, "sftp")
    up = [o for o in ops if o.get("op") == "upload" and o.get("path") == f"{work}/landed.bin"]
    assert up and up[-1]["size"] == 300_000 and up[-1]["sha256"] == sha(src) and up[-1]["result"] == "ok"
    back = work / "back.bin"
    out = scp(env, f"{dest('alice')}:{work}/landed.bin", str(back))
    assert out.returncode == 0, out.stderr
    assert back.read_bytes() == src.read_bytes()
    ops = transfer_log(env, "sftp")
    down = [o for o in ops if o.get("op") == "download" and o.get("path") == f"{work}/landed.bin"]
    assert down and down[-1]["sha256"] == sha(src)


def test_scp_legacy_protocol_through_the_exec_form(env: BastionEnv, work: Path) -> None:
    src = work / "legacy.txt"
    src.write_text("legacy scp\n" * 1000)
    out = scp(env, str(src), f"{dest('alice')}:{work}/legacy-landed.txt", legacy=True)
    assert out.returncode == 0, out.stderr
    assert (work / "legacy-landed.txt").read_text() == src.read_text()
    out = scp(env, f"{dest('alice')}:{work}/legacy-landed.txt", str(work / "legacy-back.txt"), legacy=True)
    assert out.returncode == 0, out.stderr
    assert (work / "legacy-back.txt").read_text() == src.read_text()
    ops = transfer_log(env, "exec")
    assert any(o.get("op") == "download" and o.get("path") == f"{work}/legacy-landed.txt" for o in ops), ops


def test_sftp_put_get_rename_mkdir_and_listing(env: BastionEnv, work: Path) -> None:
    src = work / "a.txt"
    src.write_text("alpha\n")
    out = sftp(env, f"put {src} {work}/b.txt\nget {work}/b.txt {work}/c.txt\nrename {work}/b.txt {work}/d.txt\n"
                    f"mkdir {work}/sub\nls {work}\n")
    assert out.returncode == 0, out.stderr
    assert (work / "d.txt").read_text() == "alpha\n" and not (work / "b.txt").exists()
    assert (work / "c.txt").read_text() == "alpha\n" and (work / "sub").is_dir()
    assert "d.txt" in out.stdout
    ops = transfer_log(env, "sftp")
    assert [o["op"] for o in ops if "op" in o] == ["upload", "download", "rename", "mkdir"], ops
    assert all(o.get("result") == "ok" for o in ops if "op" in o)


@pytest.mark.parametrize("batch", [
    "rm {f}",
    "rm {w}/../{wn}/victim",  # a path with .. is resolved on the target, not read as written
    "rm {w}/link-to-dir/victim",  # through a symlink to the directory
])
def test_sftp_remove_is_a_delete_under_no_rm(env: BastionEnv, work: Path, batch: str) -> None:
    victim = work / "victim"
    victim.write_text("still here")
    (work / "link-to-dir").symlink_to(work)
    out = sftp(env, batch.format(f=victim, w=work, wn=work.name))
    assert out.returncode != 0
    assert victim.read_text() == "still here"
    assert "blocked by rule 'no-rm'" in out.stderr and "deleting files is not allowed" in out.stderr, out.stderr
    ops = transfer_log(env, "sftp")
    assert any(o.get("op") == "remove" and o.get("path") == str(victim) and o.get("decision") == "blocked"
               for o in ops), ops


def test_rmdir_and_a_rename_over_a_file_are_judged_too(env: BastionEnv, work: Path) -> None:
    (work / "emptydir").mkdir()
    out = sftp(env, f"rmdir {work}/emptydir\n")
    assert out.returncode != 0 and (work / "emptydir").is_dir()
    assert "rule 'no-rm'" in out.stderr


def test_upload_into_a_protected_path_waits_for_a_reviewer(env: BastionEnv, work: Path) -> None:
    src = work / "conf"
    src.write_text("setting = 1\n")
    target = PROTECTED / "app.conf"
    proc = sftp_bg(env, work, f"put {src} {target}\n")
    approvals = ApprovalStore(Store(load_config(env.config).database_url))
    rid = None
    deadline = time.monotonic() + 20
    while rid is None and time.monotonic() < deadline:
        rid = next((r.id for r in approvals.pending() if r.requester == "alice" and str(target) in r.text), None)
        time.sleep(0.1)
    assert rid is not None, "the upload was not held"
    time.sleep(0.5)
    assert not target.exists()  # held: nothing landed yet
    approvals.decide(rid, "bob", True, "")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert target.read_text() == "setting = 1\n"
    assert "waiting for approval" in err


def test_upload_into_a_protected_path_denied_never_lands(env: BastionEnv, work: Path) -> None:
    src = work / "conf"
    src.write_text("setting = 2\n")
    target = PROTECTED / "denied.conf"
    proc = sftp_bg(env, work, f"put {src} {target}\n")
    approvals = ApprovalStore(Store(load_config(env.config).database_url))
    rid = None
    deadline = time.monotonic() + 20
    while rid is None and time.monotonic() < deadline:
        rid = next((r.id for r in approvals.pending() if r.requester == "alice" and str(target) in r.text), None)
        time.sleep(0.1)
    assert rid is not None
    approvals.decide(rid, "bob", False, "not today")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert not target.exists()


def test_a_symlink_into_the_protected_path_does_not_escape_the_rule(env: BastionEnv, work: Path) -> None:
    (work / "sneaky").symlink_to(PROTECTED)
    src = work / "x"
    src.write_text("x\n")
    proc = sftp_bg(env, work, f"put {src} {work}/sneaky/planted\n")
    approvals = ApprovalStore(Store(load_config(env.config).database_url))
    deadline = time.monotonic() + 20
    held = None
    while held is None and time.monotonic() < deadline:
        held = next((r for r in approvals.pending() if r.requester == "alice" and "planted" in r.text), None)
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    assert held is not None and str(PROTECTED / "planted") in held.text
    assert not (PROTECTED / "planted").exists()


def test_an_upload_over_max_bytes_is_refused(env: BastionEnv, work: Path) -> None:
    src = work / "big"
    src.write_bytes(b"\0" * 5_000_000)
    out = scp(env, str(src), f"{dest('alice')}:{work}/big-landed")
    assert out.returncode != 0
    assert "no-big-uploads" in out.stderr
    landed = work / "big-landed"
    assert not landed.exists() or landed.stat().st_size < 5_000_000


def test_archived_contents_are_retrievable_and_tamper_evident(env: BastionEnv, work: Path) -> None:
    src = work / "kept.bin"
    src.write_bytes(os.urandom(200_000))
    big = work / "too-big.bin"
    big.write_bytes(os.urandom(1_500_000))
    out = sftp(env, f"put {src} {work}/kept-landed.bin\nput {big} {work}/big-landed.bin\n")
    assert out.returncode == 0, out.stderr
    ops = {o["path"]: o for o in transfer_log(env, "sftp") if o.get("op") == "upload"}
    kept, over = ops[f"{work}/kept-landed.bin"], ops[f"{work}/big-landed.bin"]
    assert kept["archived"] is True and kept["sha256"] == sha(src)
    assert over["archived"] is False and "max_archive_bytes" in over["archive_note"] and over["sha256"] == sha(big)
    got = env.bastion("audit", "archive", sha(src), "--out", str(work / "from-archive"))
    assert got.returncode == 0, got.stderr
    assert (work / "from-archive").read_bytes() == src.read_bytes()
    assert env.bastion("audit", "verify").returncode == 0
    stored = env.dir / "state" / "recordings" / "archive" / sha(src)[:2] / sha(src)
    original = stored.read_bytes()
    try:
        stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        checked = env.bastion("audit", "verify")
        assert checked.returncode != 0 and "archived contents" in checked.stdout + checked.stderr
        assert env.bastion("audit", "archive", sha(src)).returncode != 0  # modified bytes are not handed over
    finally:
        stored.write_bytes(original)


def test_audit_search_finds_transfers_by_name_and_hash(env: BastionEnv, work: Path) -> None:
    src = work / "findme-unique-name.txt"
    src.write_text("find me\n")
    out = scp(env, str(src), f"{dest('alice')}:{work}/findme-unique-name.txt")
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 30
    hits = ""
    while time.monotonic() < deadline:
        hits = env.bastion("audit", "search", "findme-unique-name").stdout
        if "findme-unique-name" in hits and sha(src) in env.bastion("audit", "search", sha(src)).stdout:
            return
        time.sleep(0.5)
    raise AssertionError(f"not found: {hits}")


def test_a_download_over_max_bytes_is_refused_at_open(env: BastionEnv, work: Path) -> None:
    big = work / "big-on-target.bin"
    big.write_bytes(os.urandom(4_500_000))
    out = scp(env, f"{dest('alice')}:{big}", str(work / "got.bin"))
    assert out.returncode != 0 and "no-big-downloads" in out.stderr, out.stderr
    assert not (work / "got.bin").exists() or (work / "got.bin").stat().st_size < 4_500_000
    grows = work / "grows.bin"
    grows.write_bytes(os.urandom(100_000))
    ok = scp(env, f"{dest('alice')}:{grows}", str(work / "small.bin"))
    assert ok.returncode == 0 and (work / "small.bin").read_bytes() == grows.read_bytes(), ok.stderr


# ---------------------------------------------------------------------------------------------------- rsync / git

def test_rsync_up_and_down(env: BastionEnv, work: Path) -> None:
    src = work / "tree"
    (src / "deep").mkdir(parents=True)
    (src / "one").write_text("1\n")
    (src / "deep" / "two").write_text("2\n")
    out = subprocess.run(["rsync", "-a", "-e", ssh_cmd(env), f"{src}/", f"{dest('alice')}:{work}/copied/"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (work / "copied" / "deep" / "two").read_text() == "2\n"
    out = subprocess.run(["rsync", "-a", "-e", ssh_cmd(env), f"{dest('alice')}:{work}/copied/", f"{work}/back/"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (work / "back" / "one").read_text() == "1\n"


def test_rsync_delete_is_a_delete(env: BastionEnv, work: Path) -> None:
    (work / "src").mkdir()
    (work / "dst").mkdir()
    (work / "dst" / "keep-me").write_text("k")
    out = subprocess.run(["rsync", "-a", "--delete", "-e", ssh_cmd(env), f"{work}/src/",
                          f"{dest('alice')}:{work}/dst/"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "no-rm" in out.stderr
    assert (work / "dst" / "keep-me").exists()


def test_git_clone_through_the_bastion(env: BastionEnv, work: Path) -> None:
    repo = work / "repo.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(repo)], check=True)
    seed = work / "seed"
    subprocess.run(["git", "init", "-q", str(seed)], check=True)
    (seed / "README").write_text("hello\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(seed)]
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-qm", "seed"], check=True)
    subprocess.run([*git, "push", "-q", str(repo), "HEAD:refs/heads/main"], check=True)
    out = subprocess.run(["git", "clone", "-q", f"{dest('alice')}:{repo}", str(work / "clone")],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "GIT_SSH_COMMAND": f"{ssh_cmd(env)}"})
    assert out.returncode == 0, out.stderr
    assert (work / "clone" / "README").read_text() == "hello\n"


# ---------------------------------------------------------------------------------------------------- the door

def test_target_in_the_user_name_obeys_the_roles(env: BastionEnv, work: Path) -> None:
    out = sftp(env, "ls /\n", user="mallory")  # mallory has no role on files
    assert out.returncode != 0
    out = scp(env, str(work), f"{dest('alice', 'secret-db')}:/tmp/x")  # a resource alice may not open
    assert out.returncode != 0


def test_exec_and_shell_with_the_target_in_the_user_name(env: BastionEnv, work: Path) -> None:
    out = subprocess.run(["ssh", *opts(env, "alice"), "-p", str(env.port), dest("alice"), f"ls {work}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    victim = work / "victim"
    victim.write_text("v")
    out = subprocess.run(["ssh", *opts(env, "alice"), "-p", str(env.port), dest("alice"), f"rm -f {victim}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no-rm" in out.stderr and victim.exists()


def test_sftp_without_a_target_is_refused(env: BastionEnv) -> None:
    out = subprocess.run(["sftp", *opts(env, "alice"), "-P", str(env.port), "-b", "-", "alice@127.0.0.1"],
                         input="ls /\n", capture_output=True, text=True, timeout=60)
    assert out.returncode != 0


# ---------------------------------------------------------------------------------------------------- ssh -J

def jump_config(env: BastionEnv, work: Path, inner_user: str = "alice") -> Path:
    """An ssh config as an operator would write it: the bastion as jump host, web-files behind it, checked
    against the bastion's host CA (``bastion ca``) with StrictHostKeyChecking=yes."""
    ca = env.bastion("ca")
    assert ca.returncode == 0 and ca.stdout.startswith("@cert-authority "), ca.stderr
    assert "web-files" in ca.stdout.split()[1].split(",")
    (work / "known_hosts").write_text(ca.stdout)
    cfg = work / "ssh_config"
    cfg.write_text(f"""\
Host bastion
  HostName 127.0.0.1
  Port {env.port}
  User alice
  IdentityFile {env.keys['alice']}
  IdentitiesOnly yes
  IdentityAgent none
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
Host web-files not-a-resource
  User deploy
  IdentityFile {env.keys[inner_user]}
  IdentitiesOnly yes
  IdentityAgent none
  StrictHostKeyChecking yes
  UserKnownHostsFile {work / 'known_hosts'}
  LogLevel ERROR
  BatchMode yes
""")
    return cfg


def test_ssh_j_is_brokered_judged_and_recorded(env: BastionEnv, work: Path) -> None:
    cfg = jump_config(env, work)
    out = subprocess.run(["ssh", "-F", str(cfg), "-J", "bastion", "web-files", f"echo via-j; ls {work}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "via-j" in out.stdout and "ssh_config" in out.stdout
    victim = work / "victim"
    victim.write_text("v")
    out = subprocess.run(["ssh", "-F", str(cfg), "-J", "bastion", "web-files", f"rm -f {victim}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no-rm" in out.stderr and victim.exists(), out.stderr
    store = Store(load_config(env.config).database_url)
    rows = [s for s in store.sessions(limit=10) if s.command == f"echo via-j; ls {work}"]
    assert rows and rows[0].resource == "web-files" and rows[0].user == "alice" and rows[0].recording


def test_scp_over_ssh_j(env: BastionEnv, work: Path) -> None:
    cfg = jump_config(env, work)
    src = work / "over-j.txt"
    src.write_text("through the jump\n")
    out = subprocess.run(["scp", "-F", str(cfg), "-J", "bastion", str(src), f"web-files:{work}/landed-j.txt"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (work / "landed-j.txt").read_text() == "through the jump\n"


def test_ssh_j_to_anything_else_is_refused_and_audited(env: BastionEnv, work: Path) -> None:
    cfg = jump_config(env, work)
    out = subprocess.run(["ssh", "-F", str(cfg), "-J", "bastion", "root@not-a-resource", "true"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    for dest in ("not-a-resource:22", f"127.0.0.1:{env.target.port}", "127.0.0.1:1", "secret-db:22"):
        out = subprocess.run(["ssh", "-F", str(cfg), "-W", dest, "bastion"], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
        assert out.returncode != 0, dest
    store = Store(load_config(env.config).database_url)
    denied = [e for e in store.audit_events(limit=50) if e.action == "forward.open" and e.outcome == "denied"]
    assert any("not-a-resource" in str(e.detail) for e in denied), denied


def test_ssh_j_inner_login_needs_the_same_users_key(env: BastionEnv, work: Path) -> None:
    cfg = jump_config(env, work, inner_user="bob")  # bob's key inside alice's jump: refused
    out = subprocess.run(["ssh", "-F", str(cfg), "-J", "bastion", "web-files", "echo no"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "no" not in out.stdout.split()


def test_port_forwarding_stays_off(env: BastionEnv, work: Path) -> None:
    cfg = jump_config(env, work)
    out = subprocess.run(["ssh", "-F", str(cfg), "-o", "ExitOnForwardFailure=yes", "-N", "-R", "0:127.0.0.1:1",
                          "bastion"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode != 0


def test_audit_report_counts_bytes_up_and_down(env: BastionEnv, work: Path) -> None:
    before = json.loads(env.bastion("audit", "report", "--format", "json").stdout or "{}").get("transfers", [])
    was = next((t for t in before if t["user"] == "alice" and t["resource"] == "web-files"), None)
    src = work / "counted.bin"
    src.write_bytes(os.urandom(123_456))
    assert scp(env, str(src), f"{dest('alice')}:{work}/counted.bin").returncode == 0
    assert scp(env, f"{dest('alice')}:{work}/counted.bin", str(work / "counted-back.bin")).returncode == 0
    transfer_log(env, "sftp")  # closed and chained
    rep = env.bastion("audit", "report", "--format", "json")
    assert rep.returncode == 0, rep.stderr
    row = next(t for t in json.loads(rep.stdout)["transfers"] if t["user"] == "alice" and t["resource"] == "web-files")
    assert row["bytes_up"] - (was["bytes_up"] if was else 0) >= 123_456
    assert row["bytes_down"] - (was["bytes_down"] if was else 0) >= 123_456
    assert row["files_up"] - (was["files_up"] if was else 0) >= 1


def test_a_shell_over_ssh_j_is_filtered_like_the_direct_form(env: BastionEnv, work: Path) -> None:
    cfg = jump_config(env, work)
    victim = work / "victim"
    victim.write_text("v")
    with Terminal(["ssh", "-F", str(cfg), "-t", "-J", "bastion", "web-files"], cols=100, rows=30) as t:
        t.wait_for_raw(r"[#$] \Z")
        t.send("echo inside-$((6*7))\r")
        t.wait_for(r"inside-42")
        t.send(f"rm -f {victim}\r")
        t.wait_for(r"no-rm")
        t.send("exit\r")
        t.wait_exit()
    assert victim.exists()


def test_a_held_upload_is_approved_in_the_reviewers_queue(env: BastionEnv, work: Path) -> None:
    src = work / "reviewed.conf"
    src.write_text("reviewed = yes\n")
    target = PROTECTED / "reviewed.conf"
    with Terminal(ssh_argv(env.keys["bob"], env.port, "bob", tty=True), cols=140, rows=30) as bob:
        bob.wait_for(r"roles: .*reviewers")
        bob.send_key("f2")
        bob.wait_for(r"Pending approval requests")
        proc = sftp_bg(env, work, f"put {src} {target}\n")
        bob.wait_for(rf"alice\s+web-files\s+upload {target}", timeout=20)  # live, without a keypress
        assert not target.exists()
        shown = approve(bob)
        assert f"upload {target}" in shown and "requester: alice" in shown
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert target.read_text() == "reviewed = yes\n" and "approved by bob" in err


def test_port_forwarding_reaches_only_the_listed_ports_and_is_audited(env: BastionEnv, work: Path) -> None:
    server = socket.create_server(("127.0.0.1", ECHO_PORT))
    served = threading.Thread(target=lambda: _echo_once(server), daemon=True)
    served.start()
    listed, unlisted = free_port(), free_port()
    proc = subprocess.Popen(["ssh", *opts(env, "alice"), "-p", str(env.port), "-N",
                             "-L", f"{listed}:localhost:{ECHO_PORT}", "-L", f"{unlisted}:localhost:{env.port}",
                             dest("alice")], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                c = socket.create_connection(("127.0.0.1", listed), timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline, "ssh -L did not listen"
                time.sleep(0.2)
        with c:
            c.sendall(b"ping through the target\n")
            assert c.recv(100) == b"ping through the target\n"
        with socket.create_connection(("127.0.0.1", unlisted), timeout=10) as d:
            d.settimeout(10)
            assert d.recv(100) == b""  # the bastion refused the channel: ssh closes the local socket
    finally:
        stop_ssh_client(proc)
        server.close()
    store = Store(load_config(env.config).database_url)
    deadline = time.monotonic() + 10
    while True:
        events = [e for e in store.audit_events(limit=100) if e.action.startswith("forward.")]
        closed = [e for e in events if e.action == "forward.close" and (e.detail or {}).get("port") == ECHO_PORT]
        if closed:
            break
        assert time.monotonic() < deadline, events
        time.sleep(0.2)
    assert closed[0].detail["bytes_up"] == 24 and closed[0].detail["bytes_down"] == 24
    assert any(e.action == "forward.open" and e.outcome == "denied" and str(env.port) in str(e.detail)
               for e in events)


def _echo_once(server: socket.socket) -> None:
    conn, _ = server.accept()
    with conn:
        data = conn.recv(100)
        conn.sendall(data)
