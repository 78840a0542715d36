"""The front door's hardening: forwarding refused, host key persistent, pinned target host keys enforced."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port, make_keypair
from tests.support.ssh_client import ssh_argv

pytestmark = pytest.mark.slow


def keyscan(port: int) -> str:
    out = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"], capture_output=True,
                         text=True, timeout=30)
    return " ".join(out.stdout.split()[1:3])


def test_local_and_remote_forwarding_refused(bastion_env: BastionEnv) -> None:
    env = bastion_env
    fwd = free_port()
    # -R is refused at once; a refused -L shows when used, which -W (a direct-tcpip channel) does
    out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "-o", "ExitOnForwardFailure=yes",
                                  "-R", f"127.0.0.1:{fwd}:127.0.0.1:22", "-N", tty=False),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "forwarding failed" in out.stderr.lower()
    out = subprocess.run(ssh_argv(env.keys["alice"], env.port, "alice", "-W", f"127.0.0.1:{env.target.port}",
                                  tty=False), capture_output=True, text=True, timeout=30, input="")
    assert out.returncode != 0 and "SSH-2.0" not in out.stdout


def test_unknown_user_and_wrong_key_refused(bastion_env: BastionEnv, tmp_path: Path) -> None:
    env = bastion_env
    other, _ = make_keypair(tmp_path / "other")
    for user, key in (("alice", other), ("root", env.keys["alice"]), ("nobody", env.keys["alice"])):
        out = subprocess.run(ssh_argv(key, env.port, user, "web", "--", "id", tty=False), capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 255 and "Permission denied" in out.stderr


def test_host_key_created_once_and_target_host_key_pinned(tmp_path: Path, bastion_env: BastionEnv) -> None:
    env = bastion_env
    (tmp_path / "state").mkdir()
    wrong_host_key = " ".join(make_keypair(tmp_path / "not_the_target", "x")[1].split()[:2])
    port = free_port()
    cfg = write_config(tmp_path, port, env.keys, env.target, env.target_key, extra_resources=f"""\
  web-impostor:
    kind: ssh
    host: 127.0.0.1
    port: {env.target.port}
    user: {env.target.user}
    credential: {{private_key_file: {env.target_key}}}
    host_key: "{wrong_host_key}"
""")
    log = tmp_path / "out.log"
    proc = start_bastion(cfg, port, log)
    try:
        first = keyscan(port)
        out = subprocess.run(ssh_argv(env.keys["alice"], port, "alice", "web-impostor", "--", "id", tty=False),
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1
        assert "host key does not match the pinned key" in out.stderr
    finally:
        stop_bastion(proc)
    proc = start_bastion(cfg, port, log)
    try:
        assert keyscan(port) == first and first.startswith("ssh-ed25519 ")
    finally:
        stop_bastion(proc)
    assert log.read_text().count("created new host key") == 1
