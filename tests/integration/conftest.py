"""A bastion daemon in front of a real sshd, for the end-to-end tests (stock OpenSSH client, paramiko)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import daemon_log
from tests.support.keys import free_port, make_keypair
from tests.support.sshd import SshdTarget, start_sshd


@dataclass
class BastionEnv:
    dir: Path
    config: Path
    port: int
    keys: dict[str, Path]
    target: SshdTarget
    target_key: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def bastion(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run the bastion CLI against this config."""
        return subprocess.run([sys.executable, "-m", "bastion.cli", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=60, **kw)  # type: ignore[call-overload]


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bastion exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"bastion did not listen on {port}:\n{log.read_text()}")


def write_config(d: Path, port: int, keys: dict[str, Path], target: SshdTarget, target_key: Path,
                 extra_resources: str = "", limits: str = "", extra_policies: str = "",
                 extra_top: str = "", extra_roles: str = "") -> Path:
    cfg = d / "bastion.yaml"
    # BASTION_TEST_PROCESSES=one runs a suite with the whole daemon in one process (the default is per-connection)
    if os.environ.get("BASTION_TEST_PROCESSES") and "processes:" not in extra_top:
        extra_top += f"processes: {os.environ['BASTION_TEST_PROCESSES']}\n"
    extra_top += daemon_log.config_line(extra_top)  # BASTION_TEST_LOG_FORMAT=json: JSON logs, checked at the stop
    users = {"alice": "[ops]", "bob": "[reviewers]", "mallory": "[]", "carol": "[ops, reviewers]",
             "dave": "[reviewers]", "eve": "[auditors]"}
    cfg.write_text(f"""\
listen: {{host: 127.0.0.1, port: {port}}}
host_keys: [state/host_ed25519]
database: sqlite:///state/bastion.db
recordings_dir: state/recordings
log_dir: state/logs
{limits}{extra_top}users:
""" + "".join(f"  {u}:\n    groups: {g}\n    authorized_keys_file: {keys[u]}.pub\n" for u, g in users.items()
             if u in keys)
        + f"""\
resources:
  web:
    kind: ssh
    description: real sshd on loopback
    host: 127.0.0.1
    port: {target.port}
    user: {target.user}
    credential: {{private_key_file: {target_key}}}
    host_key: "{target.host_key_public}"
    policy: guarded
  secret-db:
    kind: ssh
    description: only for admins
    host: 127.0.0.1
    port: {target.port}
    user: {target.user}
    credential: {{private_key_file: {target_key}}}
    host_key: "{target.host_key_public}"
  web-down:
    kind: ssh
    description: nothing listens here
    host: 127.0.0.1
    port: {free_port()}
    user: {target.user}
    credential: {{private_key_file: {target_key}}}
    host_key: "{target.host_key_public}"
{extra_resources}roles:
  operators: {{groups: [ops], resources: ["web*"]}}
  admins: {{groups: [admins], resources: ["*"]}}
  reviewers: {{groups: [reviewers], review: true}}
  auditors: {{groups: [auditors], audit: true}}
{extra_roles}policies:
  guarded:
    default: allow
    rules:
      - {{name: no-rm, programs: [rm, unlink], action: block, reason: deleting files is not allowed}}
      - name: chmod-needs-approval
        programs: [chmod]
        action: require_approval
        approvers: {{roles: [reviewers], count: 1}}
        timeout: 120
      - name: chown-needs-two
        programs: [chown]
        action: require_approval
        approvers: {{roles: [reviewers], count: 2}}
{extra_policies}""")
    return cfg


_json_logs: dict[int, list[Path]] = {}  # pid -> the files a daemon with log_format: json writes (checked at its stop)


def start_bastion(cfg: Path, port: int, log: Path, timeout: float = 20) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION")}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bastion.cli", "serve", "--config", str(cfg)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    files = daemon_log.json_logs_of(cfg, log)
    if files:
        _json_logs[proc.pid] = files
    wait_port(port, proc, log, timeout)
    return proc


def stop_bastion(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s; a daemon with ``log_format: json`` must have written only JSON lines."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    daemon_log.check_json(_json_logs.pop(proc.pid, []))


@contextmanager
def own_bastion(base: BastionEnv, d: Path, **config: str) -> Iterator[BastionEnv]:
    """A daemon of its own in ``d`` (users, keys and target of ``base``), its config written with ``config``
    (write_config's keyword arguments), stopped afterwards."""
    (d / "state").mkdir(exist_ok=True)
    port = free_port()
    cfg = write_config(d, port, base.keys, base.target, base.target_key, **config)
    log = d / "bastion.out"
    env = BastionEnv(d, cfg, port, base.keys, base.target, base.target_key, start_bastion(cfg, port, log), log)
    try:
        yield env
    finally:
        stop_bastion(env.proc)


@pytest.fixture(scope="module")
def bastion_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    d = tmp_path_factory.mktemp("bastion")
    (d / "state").mkdir()
    keys = {u: make_keypair(d / f"key_{u}", u)[0] for u in ("alice", "bob", "mallory", "carol", "dave", "eve")}
    target_key, target_pub = make_keypair(d / "target_credential", "bastion-credential")
    target = start_sshd(d / "sshd", authorized_keys=[target_pub])
    try:  # a daemon that fails to start must not leave the target's sshd behind
        port = free_port()
        cfg = write_config(d, port, keys, target, target_key)
        log = d / "bastion.out"
        proc = start_bastion(cfg, port, log)
        env = BastionEnv(d, cfg, port, keys, target, target_key, proc, log)
        try:
            yield env
        finally:
            stop_bastion(proc)
    finally:
        target.stop()
