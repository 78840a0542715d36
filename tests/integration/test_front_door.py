"""The front door's hardening: forwarding refused, host key persistent, pinned target host keys enforced."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.support.keys import free_port, make_keypair
from tests.support.ssh_client import ssh_argv
from tests.support.terminal import Terminal

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
    from bastion.config import load_config
    from bastion.store.db import Store

    deadline = time.monotonic() + 10
    while True:
        failed = {e.actor for e in Store(load_config(env.config).database_url).audit_events()
                  if e.action == "login" and e.outcome == "failed"}
        if {"alice", "root", "nobody"} <= failed or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {"alice", "root", "nobody"} <= failed


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
    assert log.read_text().count("creating new host key") == 1


def test_connection_limit_per_source(tmp_path: Path, bastion_env: BastionEnv) -> None:
    env = bastion_env
    (tmp_path / "state").mkdir()
    port = free_port()
    cfg = write_config(tmp_path, port, env.keys, env.target, env.target_key,
                       limits="limits: {max_connections_per_source: 2}\n")
    proc = start_bastion(cfg, port, tmp_path / "out.log")
    held = [Terminal(ssh_argv(env.keys["alice"], port, "alice", tty=True)) for _ in range(2)]
    try:
        for t in held:
            t.wait_for("real sshd on loopback")
        out = subprocess.run(ssh_argv(env.keys["alice"], port, "alice", "web", "--", "echo", "third", tty=False),
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 255 and "too many connections" in out.stderr.lower()
        held[0].send("q")
        held[0].wait_exit()
        deadline = time.monotonic() + 10
        while True:  # the slot frees when the daemon sees the connection go
            out = subprocess.run(ssh_argv(env.keys["alice"], port, "alice", "web", "--", "echo", "fourth",
                                          tty=False), capture_output=True, text=True, timeout=30)
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert out.stdout == "fourth\n"
    finally:
        for t in held:
            t.close()
        stop_bastion(proc)
