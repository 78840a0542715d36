"""The session sandbox (bubblewrap): what a shell escape from a session process could reach."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.sandbox import Sandbox, SandboxError, make_sandbox


@pytest.fixture()
def sandbox() -> Sandbox:
    box = make_sandbox("required", "nobody")
    assert box.active
    return box


@pytest.fixture()
def home() -> Iterator[Path]:
    """A session home as PsqlExec makes one (in the system temp dir, which the sandbox user can traverse)."""
    path = Path(tempfile.mkdtemp(prefix="bastion-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_in(box: Sandbox, home: Path, script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    box.prepare(home)
    argv = box.wrap(["/bin/sh", "-c", script], home=home, env=env or {"PATH": "/usr/bin:/bin", "HOME": str(home)})
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"LEAK": "daemon-secret"})


def test_only_its_own_home_and_usr_are_visible(sandbox: Sandbox, tmp_path: Path, home: Path) -> None:
    secret = tmp_path / "state" / "bastion.key"  # like the daemon's state dir: outside the session's home
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    out = run_in(sandbox, home,
                 f"cat {secret}; ls /etc; echo x > /usr/x; echo mine > $HOME/f && cat $HOME/f; ls /root; env")
    assert "PRIVATE KEY" not in out.stdout
    assert "mine" in out.stdout
    assert "shadow" not in out.stdout and "ssh" not in out.stdout.split()  # /etc holds only harmless files
    assert "Read-only file system" in out.stderr or "Permission denied" in out.stderr
    assert "LEAK" not in out.stdout and "daemon-secret" not in out.stdout  # exactly the env given
    assert f"HOME={home}" in out.stdout


def test_a_home_elsewhere_and_a_tmp_that_outlive_the_sandbox(sandbox: Sandbox, tmp_path: Path) -> None:
    """The demo's shell: a home bound at a fixed path and a host directory as /tmp, both kept between runs; the
    host directories they come from (inside a state dir with secrets) are not visible at all."""
    state = tmp_path / "state"
    home, tmp = state / "target" / "home", state / "target" / "tmp"
    for d in (home, tmp):
        d.mkdir(parents=True)
        sandbox.prepare(d)
    (state / "secret.pw").write_text("hunter2")

    def run(script: str) -> subprocess.CompletedProcess:
        argv = sandbox.wrap(["/bin/sh", "-c", script], home=home, home_at=Path("/home/demo"), tmp=tmp,
                            env={"PATH": "/usr/bin:/bin", "HOME": "/home/demo"})
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/")

    out = run(f"pwd; echo one > mine; echo two > /tmp/t; cat {state}/secret.pw; ls {home}; ls -d /home/*")
    assert out.stdout.split() == ["/home/demo", "/home/demo"], out.stderr
    assert out.stderr.count("No such file or directory") == 2 and "hunter2" not in out.stderr
    out = run("cat mine /tmp/t")
    assert out.stdout == "one\ntwo\n", out.stderr
    assert (home / "mine").read_text() == "one\n" and (tmp / "t").read_text() == "two\n"


def test_runs_as_the_sandbox_user_when_the_daemon_is_root(sandbox: Sandbox, tmp_path: Path, home: Path) -> None:
    out = run_in(sandbox, home, "id -u; grep NoNewPrivs /proc/self/status")
    if os.geteuid() == 0:
        assert out.stdout.split()[0] == "65534"
        assert "NoNewPrivs:\t1" in out.stdout
    else:  # an unprivileged daemon cannot switch users: the process keeps the daemon's uid
        assert out.stdout.split()[0] == str(os.getuid())


def test_no_network_and_no_other_processes(sandbox: Sandbox, tmp_path: Path, home: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        out = run_in(sandbox, home,
                     f"if bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}'; then echo CONNECTED; fi; ls /proc | "
                     "grep -c '^[0-9]'")
    finally:
        listener.close()
    assert "CONNECTED" not in out.stdout
    assert int(out.stdout.split()[-1]) <= 5  # bwrap's init, sh, ls, grep: not the host's processes


def test_an_unknown_or_root_sandbox_user_is_an_error_for_a_root_daemon() -> None:
    assert not make_sandbox("off", "nobody").active
    if os.geteuid() != 0:  # the user is only looked up when the daemon can switch to it
        assert make_sandbox("required", "no-such-user").uid is None
        return
    with pytest.raises(SandboxError, match="no-such-user"):
        make_sandbox("required", "no-such-user")
    with pytest.raises(SandboxError, match="is root"):
        make_sandbox("auto", "root")


def test_an_unprivileged_daemon_shows_the_menu_only_its_packages(tmp_path: Path, home: Path) -> None:
    """The path a daemon under the systemd unit takes (no root: bubblewrap in a user namespace): bound package
    directories are readable, with the project around them hidden. Run as nobody with the system Python, which
    nobody can reach (a pyenv Python under /root it could not)."""
    repo = Path(__file__).resolve().parents[2]
    assert all(p.stat().st_mode & 0o005 == 0o005 for p in (repo, repo / "bastion", repo / "tui")), \
        "this test runs the checkout as nobody: make it world-readable (umask 022)"
    os.chmod(home, 0o777)
    script = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(repo)!r})\n"
        "from pathlib import Path\n"
        "from bastion.sandbox import make_sandbox\n"
        "box = make_sandbox('required', 'nobody')\n"
        "assert box.uid is None, box\n"
        f"argv = box.wrap(['/bin/sh', '-c', 'id -u; ls {repo}; ls {repo}/tui | grep -c py; cat {repo}/pyproject.toml"
        f" || echo HIDDEN'], home=Path({str(home)!r}), env={{'PATH': '/usr/bin:/bin'}},"
        f" ro_paths=[Path({str(repo / 'tui')!r}), Path({str(repo / 'bastion')!r})])\n"
        "os.execv(argv[0], argv)\n")
    cmd = ["/usr/bin/python3", "-S", "-c", script]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd="/")
    lines = out.stdout.split()
    assert out.returncode == 0, out.stderr
    assert lines[0] == ("65534" if os.geteuid() == 0 else str(os.getuid()))
    assert lines[1:3] == ["bastion", "tui"] and int(lines[3]) > 3  # only the bound packages, readable
    assert "HIDDEN" in out.stdout and "[project]" not in out.stdout  # nothing else of the project
