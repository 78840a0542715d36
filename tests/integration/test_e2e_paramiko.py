"""The front door also serves paramiko (what Ansible and many scripts use), not only OpenSSH."""

from __future__ import annotations

import time

import paramiko
import pytest

from tests.integration.conftest import BastionEnv

pytestmark = pytest.mark.slow


def client(env: BastionEnv) -> paramiko.SSHClient:
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - test host on loopback
    c.connect("127.0.0.1", env.port, username="alice", key_filename=str(env.keys["alice"]),
              allow_agent=False, look_for_keys=False, timeout=10)
    return c


def read_until(chan: paramiko.Channel, needle: bytes, timeout: float = 15) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not seen in {buf!r}")
        if chan.recv_ready():
            buf += chan.recv(65536)
        else:
            time.sleep(0.05)
    return buf


def test_paramiko_exec_form(bastion_env: BastionEnv) -> None:
    with client(bastion_env) as c:
        _, stdout, stderr = c.exec_command("web -- echo from-paramiko; echo e >&2; exit 5")
        assert stdout.read() == b"from-paramiko\n"
        assert stderr.read() == b"e\n"
        assert stdout.channel.recv_exit_status() == 5


def test_paramiko_direct_interactive_form(bastion_env: BastionEnv) -> None:
    with client(bastion_env) as c:
        chan = c.get_transport().open_session()
        chan.get_pty("xterm", 90, 20)
        chan.exec_command("web")
        chan.send(b"stty size; echo PARA-$((2+3))\r")
        out = read_until(chan, b"PARA-5\r\n")
        assert b"20 90" in out
        chan.send(b"exit 0\r")
        assert chan.recv_exit_status() == 0
