"""Red-team probes of the file-transfer gate (own tools through ``alice+web-files``): stock sftp, scp, scp -O, rsync,
ssh exec, and a raw SFTP client (paramiko channel + the bastion's own codec) for what no stock client can say.

Every probe asserts the SAFE outcome on the target's disk (the target sshd runs as the current user, so its files
are local): a delete under no-rm did not happen, nothing landed in the protected path without a reviewer (a held
request is denied by the probe and then checked), a hostile command did nothing. The honest path must stay easy.
Same policy as tests/integration/test_own_tools.py."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from bastion.config import load_config
from bastion.proxies.sftp import packets as P
from bastion.store.approvals import ApprovalStore
from bastion.store.db import Store
from tests.integration.conftest import BastionEnv, own_bastion
from tests.integration.test_own_tools import POLICY, PROTECTED, dest, opts, resources, ssh_cmd

pytestmark = pytest.mark.slow

HOME = str(Path.home())  # the target account's home (its sftp-server starts there)


@pytest.fixture(scope="module")
def env(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    d = tmp_path_factory.mktemp("probes")
    with own_bastion(bastion_env, d, extra_resources=resources(bastion_env), extra_policies=POLICY) as e:
        yield e


@pytest.fixture()
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="probes-", dir="/tmp"))
    shutil.rmtree(PROTECTED, ignore_errors=True)
    PROTECTED.mkdir()
    (PROTECTED / "secret").write_text("protected\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(PROTECTED, ignore_errors=True)


def approvals(env: BastionEnv) -> ApprovalStore:
    return ApprovalStore(Store(load_config(env.config).database_url))


def deny_all_pending(env: BastionEnv) -> int:
    a, n = approvals(env), 0
    for r in a.pending():
        if r.requester == "alice":
            try:
                a.decide(r.id, "bob", False, "probe: denied")
                n += 1
            except Exception:  # noqa: BLE001 (decided or expired meanwhile)
                pass
    return n


def run_denying(env: BastionEnv, argv: list[str], stdin: str | bytes | None = None,
                wait: float = 6.0) -> tuple[int, str, bool]:
    """Run a client; every request it gets held for is denied (after ``wait`` s without one, none is expected).
    Returns (exit status, stderr, whether anything was held)."""
    text = not isinstance(stdin, bytes)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text)
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)  # type: ignore[arg-type]
    if proc.stdin is not None:
        proc.stdin.close()
        proc.stdin = None
    held = False
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        if deny_all_pending(env):
            held = True
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate(timeout=30)
    held = deny_all_pending(env) > 0 or held
    return proc.returncode, err if isinstance(err, str) else err.decode(errors="replace"), held


def sftp_argv(env: BastionEnv, user: str = "alice") -> list[str]:
    return ["sftp", *opts(env, user), "-P", str(env.port), "-b", "-", dest(user)]


def ssh_argv(env: BastionEnv, *cmd: str, user: str = "alice", target: str = "web-files") -> list[str]:
    return ["ssh", *opts(env, user), "-p", str(env.port), f"{user}+{target}@127.0.0.1" if target else
            f"{user}@127.0.0.1", *cmd]


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, **kw)  # type: ignore[call-overload]


# ------------------------------------------------------------------------------------------------ raw SFTP client

class Raw:
    """A raw SFTP client speaking to the bastion as ``USER+web-files`` (packets from the gate's own codec)."""

    def __init__(self, env: BastionEnv, user: str = "alice") -> None:
        self.ssh = paramiko.SSHClient()
        self.ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        self.ssh.connect("127.0.0.1", port=env.port, username=f"{user}+web-files", key_filename=str(env.keys[user]),
                         allow_agent=False, look_for_keys=False, timeout=20)
        self.chan = self.ssh.get_transport().open_session()  # type: ignore[union-attr]
        self.chan.invoke_subsystem("sftp")
        self.chan.settimeout(20)
        self.framer = P.Framer()
        self.replies: list[P.Reply] = []
        self.send_raw(P.init_packet(3))
        v = self.recv()
        assert v.type == P.FXP_VERSION
        self.extensions = [n for n, _ in v.extensions]

    def send_raw(self, pkt: bytes) -> None:
        self.chan.sendall(pkt)

    def send(self, req: P.Request) -> None:
        self.send_raw(P.encode_request(req))

    def recv(self, timeout: float = 20) -> P.Reply:
        self.chan.settimeout(timeout)
        while not self.replies:
            data = self.chan.recv(65536)
            if not data:
                raise EOFError("the bastion closed the channel")
            self.replies += [P.parse_reply(p) for p in self.framer.feed(data)]
        return self.replies.pop(0)

    def call(self, req: P.Request) -> P.Reply:
        self.send(req)
        return self.recv()

    def stderr(self) -> str:
        out = b""
        while self.chan.recv_stderr_ready():
            out += self.chan.recv_stderr(65536)
        return out.decode(errors="replace")

    def closed(self, timeout: float = 10) -> bool:
        """Whether the bastion ended the session (EOF on the channel) within ``timeout``."""
        try:
            while True:
                self.recv(timeout)
        except EOFError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.ssh.close()


@pytest.fixture()
def raw(env: BastionEnv) -> Iterator[Callable[[], Raw]]:
    made: list[Raw] = []

    def make() -> Raw:
        made.append(Raw(env))
        return made[-1]
    yield make
    for r in made:
        r.close()
    deny_all_pending(env)


def req(t: int, rid: int, **kw: object) -> P.Request:
    return P.Request(t, rid, **kw)  # type: ignore[arg-type]


def ext(rid: int, name: str, **kw: object) -> P.Request:
    return P.Request(P.FXP_EXTENDED, rid, extension=name, **kw)  # type: ignore[arg-type]


W, R, C, T, A = P.FXF_WRITE, P.FXF_READ, P.FXF_CREAT, P.FXF_TRUNC, P.FXF_APPEND


# ============================================================================ 1. deleting under no-rm, every route

@pytest.mark.parametrize("batch", [
    "rm {w}//victim",
    "rm {w}/./victim",
    "rm {w}/sub/../victim",
    "rm {rel}",  # relative to the target's home
    "rm {w}/vic*",  # sftp's own glob
    "rmdir {w}/sub",
])
def test_sftp_delete_spellings_under_no_rm(env: BastionEnv, work: Path, batch: str) -> None:
    (work / "victim").write_text("still here")
    (work / "sub").mkdir()
    rel = os.path.relpath(work / "victim", HOME)
    rc, err, _ = run_denying(env, sftp_argv(env), batch.format(w=work, rel=rel) + "\n")
    assert (work / "victim").read_text() == "still here" and (work / "sub").is_dir(), err
    assert "no-rm" in err, err


def test_sftp_rename_over_an_existing_file_destroys_it(env: BastionEnv, work: Path) -> None:
    """HOLE: stock sftp's `rename` is posix-rename@openssh.com (rename(2)): it replaces the destination. Judged only
    as `mv -- A B`, so no-rm does not hold: the victim's contents are gone."""
    (work / "victim").write_text("still here")
    (work / "other").write_text("replacement")
    run_denying(env, sftp_argv(env), f"rename {work}/other {work}/victim\n")
    assert (work / "victim").read_text() == "still here"


def test_raw_legacy_rename_of_a_symlink_over_an_existing_file(env: BastionEnv, work: Path, raw: Callable[[], Raw]
                                                              ) -> None:
    """HOLE: SSH_FXP_RENAME of a non-regular source (a symlink) is rename(2) in sftp-server: destination replaced."""
    (work / "victim").write_text("still here")
    (work / "lnk").symlink_to("/nonexistent")
    r = raw()
    r.call(req(P.FXP_RENAME, 1, path=f"{work}/lnk", path2=f"{work}/victim"))
    assert not (work / "victim").is_symlink() and (work / "victim").read_text() == "still here"


def test_raw_posix_rename_directory_over_an_empty_directory(env: BastionEnv, work: Path, raw: Callable[[], Raw]
                                                            ) -> None:
    """posix-rename of a directory onto an existing empty directory removes that directory (an rmdir)."""
    (work / "keepdir").mkdir()
    (work / "keepdir" / ".marker").write_text("")
    (work / "keepdir").joinpath(".marker").unlink()  # empty, but with its own inode
    ino = (work / "keepdir").stat().st_ino
    (work / "newdir").mkdir()
    r = raw()
    r.call(ext(1, "posix-rename@openssh.com", path=f"{work}/newdir", path2=f"{work}/keepdir"))
    assert (work / "keepdir").stat().st_ino == ino


def test_raw_setstat_size_zero_is_judged_as_truncate_and_upload(env: BastionEnv, work: Path,
                                                                 raw: Callable[[], Raw]) -> None:
    """A deliberate choice, the shell's: SETSTAT size=0 is `truncate -s 0` plus an upload of 0 bytes, and this
    policy allows both (as it allows `truncate -s 0 f` or `: > f` on the exec form); a path under a transfer rule
    on uploads is held (test_truncate_under_a_protected_path_is_held). Its log line says so."""
    (work / "victim").write_text("replaced")
    r = raw()
    assert r.call(req(P.FXP_SETSTAT, 1, path=f"{work}/victim", attrs=P.Attrs.of(size=0))).code == P.FX_OK
    assert (work / "victim").read_text() == ""


def test_truncate_under_a_protected_path_is_held(env: BastionEnv, work: Path, raw: Callable[[], Raw]) -> None:
    victim = PROTECTED / "config"
    victim.write_text("still here")
    r = raw()
    r.send(req(P.FXP_SETSTAT, 1, path=str(victim), attrs=P.Attrs.of(size=0)))
    deadline = time.monotonic() + 20
    while not deny_all_pending(env) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.recv().code == P.FX_PERMISSION_DENIED
    assert victim.read_text() == "still here"


def test_sftp_put_over_an_existing_file_is_an_upload(env: BastionEnv, work: Path) -> None:
    """A deliberate choice: overwriting (OPEN with TRUNC, a plain `put`) is an upload, not a delete, as `cp` over
    a file is in the shell; uploads under a protected path are held (test_sftp_into_the_protected_path_is_held)."""
    (work / "victim").write_text("old")
    (work / "new").write_text("new")
    rc, err, held = run_denying(env, sftp_argv(env), f"put {work}/new {work}/victim\n")
    assert rc == 0 and not held, err
    assert (work / "victim").read_text() == "new"


@pytest.mark.parametrize("name", [b"victim\0junk", b"vict\xffim"])
def test_raw_remove_with_nul_or_non_utf8(env: BastionEnv, work: Path, raw: Callable[[], Raw], name: bytes) -> None:
    plain = name.split(b"\0")[0]
    victim = os.path.join(str(work).encode(), plain)
    with open(victim, "wb") as f:
        f.write(b"still here")
    r = raw()
    path = (str(work).encode() + b"/" + name).decode("utf-8", "surrogateescape")
    try:
        r.call(req(P.FXP_REMOVE, 1, path=path))
    except EOFError:
        pass
    assert os.path.exists(victim)


def test_raw_hardlink_then_remove_the_link(env: BastionEnv, work: Path, raw: Callable[[], Raw]) -> None:
    (work / "victim").write_text("still here")
    r = raw()
    r.call(ext(1, "hardlink@openssh.com", path=f"{work}/victim", path2=f"{work}/hl"))
    r.call(req(P.FXP_REMOVE, 2, path=f"{work}/hl"))
    assert (work / "victim").read_text() == "still here"


@pytest.mark.xfail(strict=True, reason="known limit of the exec form: rsync's file list travels in its own "
                   "protocol, out of the bastion's sight; a file replaced by a directory of the same name is gone. "
                   "SFTP (scp, sftp) is judged per file; README 'Your own tools' says so")
def test_rsync_without_delete_replaces_a_file_with_a_directory(env: BastionEnv, work: Path) -> None:
    """rsync -a (no --delete) deletes a destination file where the source has a directory of that name."""
    (work / "src" / "victim").mkdir(parents=True)
    (work / "src" / "victim" / "x").write_text("x")
    (work / "dst").mkdir()
    (work / "dst" / "victim").write_text("still here")
    run(["rsync", "-a", "-e", ssh_cmd(env), f"{work}/src/", f"{dest('alice')}:{work}/dst/"])
    assert (work / "dst" / "victim").is_file() and (work / "dst" / "victim").read_text() == "still here"


def test_rsync_force_replaces_a_full_directory_with_a_file(env: BastionEnv, work: Path) -> None:
    """HOLE: --force (accepted by the grammar, not a `remove`) deletes a non-empty directory replaced by a file."""
    (work / "src").mkdir()
    (work / "src" / "tree").write_text("a file now")
    (work / "dst" / "tree" / "deep").mkdir(parents=True)
    (work / "dst" / "tree" / "deep" / "keep").write_text("still here")
    run(["rsync", "-a", "--force", "-e", ssh_cmd(env), f"{work}/src/", f"{dest('alice')}:{work}/dst/"])
    assert os.path.isfile(work / "dst" / "tree" / "deep" / "keep"), "the directory tree was deleted"


# ========================================================================== 2. escaping the protected path

def landed() -> list[str]:
    return sorted(p.name for p in PROTECTED.iterdir() if p.name != "secret")


def test_symlink_loop_budget_makes_the_gate_judge_as_written(env: BastionEnv, work: Path) -> None:
    """HOLE: sftp-server's REALPATH gives up after 32 symlinks (ELOOP), the kernel follows 40; the gate then judges
    the path "as written" (lexically) and allows it, while open(2) lands in the protected directory."""
    n = 36
    lines = [f"ln -s {work}/l{i + 1} {work}/l{i}" for i in range(n - 1)] + [f"ln -s /tmp {work}/l{n - 1}"]
    (work / "payload").write_text("planted\n")
    lines.append(f"put {work}/payload {work}/l0/{PROTECTED.name}/planted")
    run_denying(env, sftp_argv(env), "\n".join(lines) + "\n")
    assert landed() == []


@pytest.mark.parametrize("target", ["/" + str(PROTECTED), str(PROTECTED)])
def test_symlink_into_the_protected_path_is_held(env: BastionEnv, work: Path, target: str) -> None:
    """A symlink pointing into the protected path is a `symlink` transfer rule match; `//tmp/...` (POSIX keeps a
    leading `//` in normpath) slips past the glob."""
    rc, err, held = run_denying(env, sftp_argv(env), f"ln -s {target} {work}/dbl\n")
    assert held or not (work / "dbl").is_symlink(), err


def test_symlink_made_in_the_session_then_used(env: BastionEnv, work: Path) -> None:
    (work / "payload").write_text("p\n")
    # a link to /tmp is harmless in itself; using it to reach the protected directory must be judged there
    batch = f"ln -s /tmp {work}/t\nput {work}/payload {work}/t/{PROTECTED.name}/via-link\n"
    rc, err, held = run_denying(env, sftp_argv(env), batch)
    assert landed() == [] and held, err


@pytest.mark.parametrize("batch", [
    "rename {w}/payload {p}/renamed",
    "mkdir {p}/newdir",
    "ln {w}/payload {p}/hardlinked-in",  # hardlink@openssh.com
])
def test_sftp_into_the_protected_path_is_held(env: BastionEnv, work: Path, batch: str) -> None:
    (work / "payload").write_text("p\n")
    rc, err, held = run_denying(env, sftp_argv(env), batch.format(w=work, p=PROTECTED) + "\n")
    assert landed() == [] and held, err
    assert "not approved (held by rule " in err, err  # the denied hold, by the rule that held it


def test_a_path_through_a_missing_directory_is_refused(env: BastionEnv, work: Path) -> None:
    """``sub`` does not exist: the target cannot resolve ``sub/..``, and what cannot be resolved is refused (the
    kernel would fail too, but the gate does not guess)."""
    (work / "payload").write_text("p\n")
    rc, err, held = run_denying(env, sftp_argv(env), f"put {work}/payload {PROTECTED}/sub/../direct\n")
    assert landed() == [] and rc != 0 and "refused: the path" in err and "cannot be resolved on the target" in err, err
    assert "rule None" not in err and "refused: refused" not in err, err  # no rule made this refusal


def test_hardlink_a_protected_file_out_is_held(env: BastionEnv, work: Path) -> None:
    rc, err, held = run_denying(env, sftp_argv(env), f"ln {PROTECTED}/secret {work}/out\n")
    assert not (work / "out").exists() and held, err


def test_scp_legacy_recursive_into_the_parent_of_the_protected_path(env: BastionEnv, work: Path) -> None:
    """HOLE: `scp -O -r DIR host:/tmp/` is judged as an upload to /tmp; DIR named own-tools-protected writes into
    the protected directory with no reviewer (the D/C lines name the files, out of the gate's sight)."""
    src = work / PROTECTED.name
    src.mkdir()
    (src / "scp-planted").write_text("x\n")
    run_denying(env, ["scp", *opts(env, "alice"), "-P", str(env.port), "-O", "-r", str(src),
                      f"{dest('alice')}:/tmp/"])
    assert landed() == []


def test_rsync_into_the_parent_of_the_protected_path(env: BastionEnv, work: Path) -> None:
    """HOLE: the same with rsync -a: judged as an upload into /tmp."""
    src = work / PROTECTED.name
    src.mkdir()
    (src / "rsync-planted").write_text("x\n")
    run_denying(env, ["rsync", "-a", "-e", ssh_cmd(env), str(src), f"{dest('alice')}:/tmp/"])
    assert landed() == []


def test_scp_in_sftp_mode_recursive_into_the_parent_is_held(env: BastionEnv, work: Path) -> None:
    src = work / PROTECTED.name
    src.mkdir()
    (src / "sftp-planted").write_text("x\n")
    rc, err, held = run_denying(env, ["scp", *opts(env, "alice"), "-P", str(env.port), "-r", str(src),
                                      f"{dest('alice')}:/tmp/"])
    assert landed() == [] and held, err


def test_scp_sink_on_a_pty_is_not_judged_as_a_transfer(env: BastionEnv, work: Path) -> None:
    """HOLE: with a terminal (ssh -tt) the exec form judges `scp -t DIR` as a plain shell command (allowed by
    default), not as an upload: a text file lands in the protected directory unreviewed."""
    script = b"C0644 6 pty-planted\nhello\n\0\n"
    proc = subprocess.Popen(ssh_argv(env, "-tt", f"scp -t {PROTECTED}/"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3)
    deny_all_pending(env)
    try:
        proc.communicate(script, timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    deny_all_pending(env)
    assert landed() == []


def test_raw_open_creates_a_setuid_file_without_chmod_approval(env: BastionEnv, work: Path,
                                                               raw: Callable[[], Raw]) -> None:
    """OPEN's ATTRS (permissions 04777) are applied by sftp-server on create and never judged: a setuid,
    world-writable file without the chmod-needs-approval reviewer."""
    r = raw()
    r.send(req(P.FXP_OPEN, 1, path=f"{work}/suid", pflags=W | C | T, attrs=P.Attrs.of(permissions=0o4777)))
    deadline = time.monotonic() + 20
    held = False
    while not held and time.monotonic() < deadline:
        held = deny_all_pending(env) > 0  # the mode is a chmod: chmod-needs-approval holds it; denied here
        time.sleep(0.1)
    h = r.recv()
    assert held and h.type == P.FXP_STATUS and h.code == P.FX_PERMISSION_DENIED
    p = work / "suid"
    assert not p.exists() or not (p.stat().st_mode & (stat.S_ISUID | stat.S_ISGID))


@pytest.mark.xfail(strict=True, reason="known limit of the exec form: the modes rsync -p sets travel in its own "
                   "protocol; judged as an upload only. README 'Your own tools' says so")
def test_rsync_perms_change_an_existing_file_mode_without_approval(env: BastionEnv, work: Path) -> None:
    """rsync -a (-p) chmods existing destination files; judged only as an upload (chmod-needs-approval bypassed)."""
    (work / "src").mkdir()
    (work / "src" / "f").write_text("same\n")
    (work / "src" / "f").chmod(0o777)
    (work / "dst").mkdir()
    (work / "dst" / "f").write_text("same\n")
    (work / "dst" / "f").chmod(0o600)
    run_denying(env, ["rsync", "-a", "-e", ssh_cmd(env), f"{work}/src/", f"{dest('alice')}:{work}/dst/"])
    assert stat.S_IMODE((work / "dst" / "f").stat().st_mode) == 0o600


# ================================================================================== 3. the exec form, hostile

@pytest.mark.parametrize("cmd", [
    "rsync --server -vlogDtpre.iLsfxC --log-file={w}/pwned . {w}/d",
    "rsync --server -vlogDtpre.iLsfxC --rsync-path=touch\\ {w}/pwned . {w}/d",
    "rsync --server -vlogDtpre.iLsfxC -e touch\\ {w}/pwned . {w}/d",
    "rsync --server -vlogDtpre.iLsfxC --temp-dir={w}/pwned . {w}/d",
    "rsync --server --sender -vlogDtpre.iLsfxC --files-from={w}/list . {w}/d",
    "rsync --server -svlogDtpre.iLsfxC . {w}/d",
    "scp -t {w}/d; touch {w}/pwned",
    "scp -t {w}/d && touch {w}/pwned",
    "scp -S 'touch {w}/pwned' -t {w}/d",
    "scp -t $(touch {w}/pwned)",
    "git-upload-pack --upload-pack='touch {w}/pwned' {w}",
    "git -c core.fsmonitor='touch {w}/pwned' upload-pack {w}",
    "env scp -t {w}/d",
    "sftp-server",
    "/usr/lib/openssh/sftp-server",
    "/usr/lib/openssh/sftp-ser''ver",
    "exec /usr/lib/openssh/sftp-server",
    "rs''ync --server -vlogDtpre.iLsfxC --delete . {w}/d",
    "sc''p -t {p}/",
])
def test_hostile_exec_commands_are_refused(env: BastionEnv, work: Path, cmd: str) -> None:
    (work / "d").mkdir()
    (work / "d" / "keep").write_text("k")
    (work / "list").write_text("/etc/hostname\n")
    out = run(ssh_argv(env, cmd.format(w=work, p=PROTECTED)), input="")
    assert out.returncode != 0 and "bastion" in out.stderr, (out.returncode, out.stderr)
    assert not (work / "pwned").exists() and (work / "d" / "keep").exists() and landed() == []


@pytest.mark.parametrize("cmd", [b"", b"   ", b"\t", b"ls \xff"])
def test_empty_whitespace_and_non_utf8_commands(env: BastionEnv, cmd: bytes) -> None:
    out = subprocess.run(ssh_argv(env, cmd.decode("latin-1")) if cmd else ssh_argv(env),
                         input=b"", capture_output=True, timeout=60)
    assert out.returncode != 0, out.stderr


def test_raw_sftp_server_through_sftp_dash_s(env: BastionEnv, work: Path) -> None:
    """sftp -s /path runs the server as an exec command: must be refused (no unjudged SFTP)."""
    (work / "victim").write_text("still here")
    out = run(["sftp", *opts(env, "alice"), "-P", str(env.port), "-s", "/usr/lib/openssh/sftp-server", "-b", "-",
               dest("alice")], input=f"rm {work}/victim\n")
    assert out.returncode != 0 and (work / "victim").exists(), out.stderr


# ================================================================================== 4. the user name form

def refusal(env: BastionEnv, user_field: str, key: str = "alice") -> subprocess.CompletedProcess[str]:
    return run(["ssh", *opts(env, key), "-p", str(env.port), f"{user_field}@127.0.0.1", "ls /tmp"], input="")


@pytest.mark.parametrize("name", ["alice+", "alice+web-files+x", "alice+secret-db", "alice+no-such",
                                  "+web-files", "alice+" + "w" * 5000, "alice+web-files\u200b", "alice+WEB-FILES"])
def test_user_name_spellings_are_refused(env: BastionEnv, name: str) -> None:
    out = refusal(env, name)
    assert out.returncode != 0, out.stdout
    assert "probes-" not in out.stdout


def test_a_forbidden_resource_answers_like_an_unknown_one(env: BastionEnv) -> None:
    a, b = refusal(env, "alice+secret-db"), refusal(env, "alice+no-such-thing")
    assert a.returncode == b.returncode
    assert a.stderr.replace("secret-db", "X") == b.stderr.replace("no-such-thing", "X")


def test_mallory_with_a_target_is_refused(env: BastionEnv, work: Path) -> None:
    (work / "victim").write_text("v")
    out = run(sftp_argv(env, "mallory"), input=f"get {work}/victim {work}/stolen\n")
    assert out.returncode != 0 and not (work / "stolen").exists()


@pytest.mark.parametrize("subsystem", ["sftp", "SFTP", "sftp ", "netconf", "sftp-server"])
def test_subsystems_without_a_target_or_unknown(env: BastionEnv, subsystem: str) -> None:
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    user = "alice" if subsystem == "sftp" else "alice+web-files"
    ssh.connect("127.0.0.1", port=env.port, username=user, key_filename=str(env.keys["alice"]),
                allow_agent=False, look_for_keys=False, timeout=20)
    try:
        chan = ssh.get_transport().open_session()  # type: ignore[union-attr]
        with pytest.raises(paramiko.SSHException):
            chan.invoke_subsystem(subsystem)
    finally:
        ssh.close()


# ================================================================================== 5. protocol abuse (raw)

def test_raw_reserved_request_id_ends_the_session(env: BastionEnv, work: Path, raw: Callable[[], Raw]) -> None:
    (work / "victim").write_text("still here")
    r = raw()
    r.send(req(P.FXP_REMOVE, 0xFFFF0001, path=f"{work}/victim"))
    assert r.closed() and (work / "victim").exists()


def test_raw_oversized_packet_ends_the_session(env: BastionEnv, work: Path, raw: Callable[[], Raw]) -> None:
    r = raw()
    h = r.call(req(P.FXP_OPEN, 1, path=f"{work}/big", pflags=W | C | T, attrs=P.Attrs()))
    assert h.type == P.FXP_HANDLE
    body = bytes([P.FXP_WRITE]) + (2).to_bytes(4, "big") + len(h.handle).to_bytes(4, "big") + h.handle  # type: ignore[arg-type]
    data = b"A" * (300 * 1024)
    body += (0).to_bytes(8, "big") + len(data).to_bytes(4, "big") + data
    r.send_raw(len(body).to_bytes(4, "big") + body)
    assert r.closed()
    assert (work / "big").stat().st_size == 0


def test_raw_malformed_packet_ends_the_session(env: BastionEnv, work: Path, raw: Callable[[], Raw]) -> None:
    r = raw()
    r.send_raw(b"\x00\x00\x00\x09" + bytes([P.FXP_REMOVE]) + b"\x00\x00\x00\x01" + b"\x00\x00\x00\xff")
    assert r.closed()


def test_raw_copy_data_is_refused_and_hidden(env: BastionEnv, work: Path, raw: Callable[[], Raw]) -> None:
    (work / "src").write_text("copied?")
    r = raw()
    assert "copy-data" not in r.extensions and all(
        e in {"posix-rename@openssh.com", "hardlink@openssh.com", "lsetstat@openssh.com", "statvfs@openssh.com",
              "fstatvfs@openssh.com", "fsync@openssh.com", "limits@openssh.com", "expand-path@openssh.com",
              "home-directory", "users-groups-by-id@openssh.com"} for e in r.extensions), r.extensions
    hs = r.call(req(P.FXP_OPEN, 1, path=f"{work}/src", pflags=R, attrs=P.Attrs()))
    hd = r.call(req(P.FXP_OPEN, 2, path=f"{PROTECTED}/secret", pflags=R, attrs=P.Attrs()))
    assert hs.type == hd.type == P.FXP_HANDLE
    rep = r.call(ext(3, "copy-data", ext_args=(hs.handle, 0, 0, hd.handle, 0)))
    assert rep.type == P.FXP_STATUS and rep.code != P.FX_OK
    assert (PROTECTED / "secret").read_text() == "protected\n"


def test_raw_fsetstat_and_write_on_forged_handles(env: BastionEnv, work: Path, raw: Callable[[], Raw]) -> None:
    (work / "victim").write_text("still here")
    (work / "victim").chmod(0o600)
    r = raw()
    h = r.call(req(P.FXP_OPEN, 1, path=f"{work}/victim", pflags=R, attrs=P.Attrs()))  # a download handle: "0"
    assert h.type == P.FXP_HANDLE
    for i, forged in enumerate([b"1", b"2", b"\x00\x00\x00\x01", h.handle + b"x"], start=10):
        rep = r.call(req(P.FXP_FSETSTAT, i, handle=forged, attrs=P.Attrs.of(permissions=0o4777, size=0)))
        assert rep.type == P.FXP_STATUS and rep.code != P.FX_OK
        rep = r.call(req(P.FXP_WRITE, i + 100, handle=forged, offset=0, data=b"PWNED"))
        assert rep.type == P.FXP_STATUS and rep.code != P.FX_OK
    # the real (read-only) handle: FSETSTAT mode is a chmod (held, then denied by the fixture... here: not waited)
    assert (work / "victim").read_text() == "still here" and stat.S_IMODE((work / "victim").stat().st_mode) == 0o600


def test_raw_pipelined_requests_wait_behind_a_held_one(env: BastionEnv, work: Path, raw: Callable[[], Raw]) -> None:
    r = raw()
    r.send(req(P.FXP_MKDIR, 1, path=f"{PROTECTED}/held", attrs=P.Attrs()))  # held
    r.send(req(P.FXP_MKDIR, 2, path=f"{work}/after", attrs=P.Attrs()))
    r.send(req(P.FXP_OPEN, 3, path=f"{work}/after-file", pflags=W | C | T, attrs=P.Attrs()))
    r.send(req(P.FXP_SYMLINK, 4, path=f"{work}/after-link", path2="/tmp"))
    time.sleep(3)
    early = [p.name for p in work.iterdir()]
    deny_all_pending(env)
    r.recv()
    assert early == [] and not (PROTECTED / "held").exists()


def test_raw_duplicate_request_ids_keep_the_size_rule(env: BastionEnv, work: Path, raw: Callable[[], Raw]) -> None:
    """Two OPENs with the same id must not confuse which handle is the upload (the size rule is re-judged every
    MiB, so up to 1 MiB over the limit lands by design)."""
    (work / "small").write_text("s")
    r = raw()
    r.send(req(P.FXP_OPEN, 7, path=f"{work}/big", pflags=W | C | T, attrs=P.Attrs()))
    r.send(req(P.FXP_OPEN, 7, path=f"{work}/small", pflags=R, attrs=P.Attrs()))
    h1, _h2 = r.recv(), r.recv()
    assert h1.type == P.FXP_HANDLE
    chunk = b"\0" * (250 * 1024)
    for i in range(20):  # 5 MB
        r.send(req(P.FXP_WRITE, 100 + i, handle=h1.handle, offset=i * len(chunk), data=chunk))
    for _ in range(20):
        r.recv()
    r.call(req(P.FXP_CLOSE, 200, handle=h1.handle))
    assert (work / "big").stat().st_size <= 3_000_000 + (1 << 20)


def test_raw_append_at_offset_zero_skips_the_size_rule(env: BastionEnv, work: Path, raw: Callable[[], Raw]) -> None:
    """HOLE: with APPEND, sftp-server ignores WRITE offsets; the gate sizes the file as max(offset + len), so 20
    writes at offset 0 look like 250 KiB while 5 MB land."""
    r = raw()
    h = r.call(req(P.FXP_OPEN, 1, path=f"{work}/big", pflags=W | C | A, attrs=P.Attrs()))
    assert h.type == P.FXP_HANDLE
    chunk = b"\0" * (250 * 1024)
    for i in range(20):
        r.send(req(P.FXP_WRITE, 100 + i, handle=h.handle, offset=0, data=chunk))
    for _ in range(20):
        r.recv()
    r.call(req(P.FXP_CLOSE, 200, handle=h.handle))
    assert (work / "big").stat().st_size <= 3_000_000


# ================================================================================== 6. the honest path stays easy

def test_honest_sftp_session(env: BastionEnv, work: Path) -> None:
    (work / "a.txt").write_text("alpha\n")
    rc, err, held = run_denying(env, sftp_argv(env), f"put {work}/a.txt {work}/b.txt\nget {work}/b.txt {work}/c.txt\n"
                                f"mkdir {work}/sub\nrename {work}/b.txt {work}/sub/d.txt\nls {work}\n")
    assert rc == 0 and not held, err
    assert (work / "sub" / "d.txt").read_text() == "alpha\n" and (work / "c.txt").read_text() == "alpha\n"


def test_honest_scp_recursive_both_modes(env: BastionEnv, work: Path) -> None:
    (work / "tree" / "deep").mkdir(parents=True)
    (work / "tree" / "deep" / "f").write_text("f\n")
    for i, legacy in enumerate((False, True)):
        rc, err, held = run_denying(env, ["scp", *opts(env, "alice"), "-P", str(env.port), *(["-O"] if legacy else []),
                                          "-r", f"{work}/tree", f"{dest('alice')}:{work}/copy{i}"])
        assert rc == 0 and not held, err
        assert (work / f"copy{i}" / "deep" / "f").read_text() == "f\n"


def test_honest_rsync_without_delete(env: BastionEnv, work: Path) -> None:
    (work / "tree").mkdir()
    (work / "tree" / "f").write_text("f\n")
    rc, err, held = run_denying(env, ["rsync", "-a", "-e", ssh_cmd(env), f"{work}/tree/", f"{dest('alice')}:{work}/r/"])
    assert rc == 0 and not held, err
    assert (work / "r" / "f").read_text() == "f\n"


@pytest.mark.parametrize("how", ["scp -p", "scp -O -p", "sftp put -p"])
def test_honest_preserve_times_is_not_held(env: BastionEnv, work: Path, how: str) -> None:
    """`scp -p` / `put -p` preserve times *and* the file's own mode: an FSETSTAT (mode 0644, times) judged as
    `chmod 0644` -> chmod-needs-approval. Honest use held for a reviewer."""
    src = work / "p.txt"
    src.write_text("p\n")
    os.utime(src, (1_000_000_000, 1_000_000_000))
    if how == "sftp put -p":
        argv, stdin = sftp_argv(env), f"put -p {src} {work}/p-out\n"
    else:
        argv = ["scp", *opts(env, "alice"), "-P", str(env.port), *(["-O"] if "-O" in how else []), "-p", str(src),
                f"{dest('alice')}:{work}/p-out"]
        stdin = None
    rc, err, held = run_denying(env, argv, stdin)
    assert not held and rc == 0, err
    assert (work / "p-out").stat().st_mtime == 1_000_000_000


def test_a_file_that_grows_after_it_was_opened_is_judged_as_it_is_read(env: BastionEnv, work: Path,
                                                                      raw: Callable[[], Raw]) -> None:
    """Opened small (allowed), grown past no-big-downloads' 4 MB on the target, then read past it: refused."""
    f = work / "grows"
    f.write_bytes(b"x" * 100_000)
    r = raw()
    h = r.call(req(P.FXP_OPEN, 1, path=str(f), pflags=R, attrs=P.Attrs()))
    assert h.type == P.FXP_HANDLE
    with open(f, "ab") as grow:
        grow.write(b"y" * 5_000_000)
    first = r.call(req(P.FXP_READ, 2, handle=h.handle, offset=0, length=32768))
    assert first.type == P.FXP_DATA
    late = r.call(req(P.FXP_READ, 3, handle=h.handle, offset=4_500_000, length=32768))
    assert late.type == P.FXP_STATUS and late.code == P.FX_PERMISSION_DENIED and "no-big-downloads" in late.message


def test_renaming_the_protected_directory_away_is_held(env: BastionEnv, work: Path) -> None:
    """Renaming a directory moves everything below it (its parents likewise: see test_transfer_records)."""
    rc, err, held = run_denying(env, sftp_argv(env), f"rename {PROTECTED} {work}/moved-out\n")
    assert held and (PROTECTED / "secret").is_file() and not (work / "moved-out").exists(), err


def test_forwarded_channels_per_connection_are_capped(env: BastionEnv) -> None:
    """Each -J hop is a whole SSH server in the bastion: one connection may not open them without end."""
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    ssh.connect("127.0.0.1", port=env.port, username="alice", key_filename=str(env.keys["alice"]),
                allow_agent=False, look_for_keys=False, timeout=20)
    try:
        transport = ssh.get_transport()
        assert transport is not None
        opened = [transport.open_channel("direct-tcpip", ("web-files", 22), ("127.0.0.1", 0), timeout=20)
                  for _ in range(64)]
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("web-files", 22), ("127.0.0.1", 0), timeout=20)
        opened.pop().close()
        deadline = time.monotonic() + 20
        while True:  # a closed one makes room again
            try:
                transport.open_channel("direct-tcpip", ("web-files", 22), ("127.0.0.1", 0), timeout=20).close()
                break
            except paramiko.ChannelException:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        ssh.close()
