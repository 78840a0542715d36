"""`bastion demo` shows the OIDC sign-in end to end (issue 22, item 4): dave's new key through the stock OpenSSH
client opens the sign-in screen, the demo's own identity provider (the pinned oidc-provider) is completed by a
scripted browser or by the curl sequence the banner prints, run for real, and dave's menu follows. Without Node.js
the demo says why the sign-in is off and the rest works as before."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bastion.config import load_config
from bastion.demo.idp import IdpUnavailable, start_idp
from tests.support.keys import free_port_block, make_keypair
from tests.support.oidc import complete_device_flow
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow


@dataclass
class Demo:
    state: Path
    port: int
    proc: subprocess.Popen[str]
    banner: str

    @property
    def password(self) -> str:
        return (self.state / "secrets" / "dave.pw").read_text().strip()

    def resources(self) -> list[str]:
        """What the demo's config grants group ops (dave's group)."""
        cfg = load_config(self.state / "bastion.yaml")
        return sorted({r for role in cfg.roles.values() if "ops" in role.groups for r in role.resources})


def start_demo(env: dict[str, str] | None = None) -> Demo:
    """``bastion demo`` in a fresh state dir, as a user starts it; returns once the banner is out."""
    # directly under /tmp: as root, the demo's PostgreSQL runs as `postgres` and must reach the state dir
    state, port = Path(tempfile.mkdtemp(prefix="bastion-demo-oidc-", dir="/tmp")), free_port_block(4)
    proc = subprocess.Popen([sys.executable, "-m", "bastion.cli", "demo", "--port", str(port), "--state-dir",
                             str(state)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    assert proc.stdout is not None
    out, deadline = "", time.monotonic() + 45
    while "Ctrl-C stops the demo" not in out:
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"demo did not start:\n{out}")
        out += line
    return Demo(state, port, proc, out)


def stop_demo(demo: Demo) -> str:
    demo.proc.send_signal(signal.SIGINT)
    rest, _ = demo.proc.communicate(timeout=30)
    return rest


def provider_pids(state: Path) -> list[int]:
    """Processes running the provider of this state dir (its config file is on their command line)."""
    marker = str(state / "oidc" / "provider.json").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    d = start_demo()
    try:
        yield d
    finally:
        rest = stop_demo(d)
        shutil.rmtree(d.state, ignore_errors=True)
    assert "bastion demo stopped" in rest, rest
    assert provider_pids(d.state) == []  # the provider ends with the demo


def read_code(t: Terminal) -> tuple[str, str]:
    """The verification URL and user code from the sign-in screen."""
    t.wait_for(r"the code expires in \d+:\d\d", timeout=30)
    screen = t.screen_text()
    url = re.search(r"Open\s+(http://\S+)", screen)
    code = re.search(r"enter the code\s+(\S+)", screen)
    assert url and code, screen
    assert "█" in screen, screen  # the QR code
    return url.group(1), code.group(1)


def banner_curl(banner: str, code: str) -> str:
    """The banner's curl sequence, as printed, with CODE set to ``code``."""
    lines = banner.splitlines()
    start = next(i for i, line in enumerate(lines) if "No browser on this box" in line) + 1
    indent = " " * 15
    script = []
    for line in lines[start:]:
        if not line.startswith(indent):
            break
        script.append(line[len(indent):])
    assert script and script[0].startswith("CODE="), script
    script[0] = f"CODE={code}"
    return "\n".join(script) + "\n"


def signed_in_menu(t: Terminal, demo: Demo) -> None:
    t.wait_for(r"dave · roles: operators", timeout=30)
    granted = demo.resources()
    assert granted
    for r in granted:  # the menu fills in after its header: wait for each row, not a snapshot
        t.wait_for(rf"(?<![\w-]){re.escape(r)}(?![\w-])", timeout=30)


def test_dave_signs_in_with_a_browser_on_the_same_machine(demo: Demo) -> None:
    key = demo.state / "keys" / "dave"
    assert re.search(rf"ssh -i {re.escape(str(key))} -p {demo.port} .*dave@127\.0\.0\.1", demo.banner), demo.banner
    assert f"sign in as dave with password\n             {demo.password} " in demo.banner, demo.banner
    cfg = load_config(demo.state / "bastion.yaml")
    assert cfg.oidc is not None and cfg.oidc.issuer.startswith("http://127.0.0.1:")
    assert "dave" not in cfg.users  # not a local user: only the sign-in lets him in

    # no secret of the provider on its command line or in its environment; its files are 0600
    secrets = [demo.password, (demo.state / "secrets" / "oidc-client.secret").read_text().strip()]
    (pid,) = provider_pids(demo.state)
    seen = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
    assert not any(s.encode() in seen for s in secrets)
    for f in ("secrets/dave.pw", "secrets/oidc-client.secret", "oidc/provider.json", "oidc/jwks.json"):
        assert (demo.state / f).stat().st_mode & 0o777 == 0o600, f

    with Terminal(ssh_argv(key, demo.port, "dave", tty=True), cols=120, rows=50) as t:
        url, code = read_code(t)
        assert url.startswith(cfg.oidc.issuer + "/")
        errors: list[BaseException] = []

        def browser() -> None:
            try:
                complete_device_flow(url, code, "dave", demo.password)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        th = threading.Thread(target=browser, daemon=True)
        th.start()
        th.join(30)
        assert not th.is_alive() and not errors, errors
        signed_in_menu(t, demo)
        t.send("q")
        assert t.wait_exit() == 0
    # the key is now dave's: the exec form works without a sign-in
    out = subprocess.run(ssh_argv(key, demo.port, "dave", "demo-shell", "--", "echo", "dave-$((40+2))", tty=False),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "dave-42\n", out.stderr


def test_the_banners_curl_sequence_signs_in_on_a_headless_box(demo: Demo, tmp_path: Path) -> None:
    key, _ = make_keypair(tmp_path / "headless", "dave-headless")  # another new key of dave's
    with Terminal(ssh_argv(key, demo.port, "dave", tty=True), cols=120, rows=50) as t:
        _, code = read_code(t)
        out = subprocess.run(["bash", "-c", banner_curl(demo.banner, code)], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        assert out.returncode == 0 and "You are signed in to bastion demo" in out.stdout, (out.stdout, out.stderr)
        signed_in_menu(t, demo)
        t.send("q")
        assert t.wait_exit() == 0


def test_a_wrong_code_in_the_curl_sequence_signs_in_nobody(demo: Demo, tmp_path: Path) -> None:
    out = subprocess.run(["bash", "-c", banner_curl(demo.banner, "BCDF-GHJK")], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert "You are signed in" not in out.stdout and "not signed in: check CODE" in out.stdout, out.stdout


def path_without_node(bin_dir: Path) -> str:
    """A PATH with every program of this one but node (symlinks in ``bin_dir``)."""
    bin_dir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d or not Path(d).is_dir():
            continue
        for exe in Path(d).iterdir():
            link = bin_dir / exe.name
            if exe.name in ("node", "nodejs") or link.exists() or link.is_symlink():
                continue
            link.symlink_to(exe)
    return str(bin_dir)


def test_without_node_the_demo_says_oidc_is_off_and_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": path_without_node(tmp_path / "bin")}
    assert shutil.which("node", path=env["PATH"]) is None
    d = start_demo(env)
    try:
        lines = [line for line in d.banner.splitlines() if "OIDC sign-in is off" in line]
        assert lines == ["  sign-in:   OIDC sign-in is off: Node.js is not installed (scripts/setup --demo installs "
                         "it)"], d.banner
        assert "oidc:" not in (d.state / "bastion.yaml").read_text()
        assert provider_pids(d.state) == []
        out = subprocess.run(ssh_argv(d.state / "keys" / "alice", d.port, "alice", "demo-shell", "--", "echo", "hi",
                                      tty=False), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout == "hi\n", out.stderr
        out = subprocess.run(ssh_argv(d.state / "keys" / "dave", d.port, "dave", "demo-shell", "--", "id",
                                      tty=False), capture_output=True, text=True, timeout=60)
        assert out.returncode == 255 and "Permission denied" in out.stderr, out.stderr
    finally:
        stop_demo(d)
        shutil.rmtree(d.state, ignore_errors=True)


def fake_node(bin_dir: Path, script: str) -> str:
    """A PATH whose first ``node`` is ``script`` (sh)."""
    bin_dir.mkdir()
    node = bin_dir / "node"
    node.write_text("#!/bin/sh\n" + script)
    node.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.mark.parametrize(("script", "why"), [
    ('[ "$1" = --version ] && { echo v22.1.0; exit 0; }\necho "SyntaxError: boom at startup" >&2\nexit 3\n',
     r"the identity provider exited with status 3: SyntaxError: boom at startup \(see .*oidc-provider\.log\)"),
    ('echo v18.19.1\n', r"Node\.js v18\.19\.1 is too old \(oidc-provider needs >= 20\.12\)"),
])
def test_a_provider_that_cannot_start_says_why_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            script: str, why: str) -> None:
    monkeypatch.setenv("PATH", fake_node(tmp_path / "bin", script))
    with pytest.raises(IdpUnavailable) as e:
        start_idp(tmp_path / "state", tmp_path / "state" / "logs")
    assert re.fullmatch(why, str(e.value)), str(e.value)
    assert provider_pids(tmp_path / "state") == []


def test_the_provider_keeps_its_port_across_runs_and_moves_when_it_is_taken(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = start_idp(state, state / "logs")
    first.stop()
    again = start_idp(state, state / "logs")  # the same issuer: dave's account keeps its name
    again.stop()
    assert again.issuer == first.issuer and again.password == first.password
    port = int(first.issuer.rsplit(":", 1)[1])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        moved = start_idp(state, state / "logs")
        try:
            assert moved.issuer != first.issuer and moved.issuer.startswith("http://127.0.0.1:")
            assert httpx.get(moved.issuer + "/.well-known/openid-configuration", timeout=10).json()["issuer"] == \
                moved.issuer
        finally:
            moved.stop()
    assert provider_pids(state) == []
