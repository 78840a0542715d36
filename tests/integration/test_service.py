"""Running under systemd: the unit file passes `systemd-analyze verify` and is hardened as documented; the daemon
speaks the readiness protocol (READY, RELOADING, STOPPING) and reloads its config on SIGHUP without dropping a
session, refusing a broken config as a whole."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, wait_port, write_config
from tests.support.keys import free_port
from tests.support.ssh_client import ssh_argv

pytestmark = pytest.mark.slow
UNIT = Path(__file__).resolve().parents[2] / "systemd" / "bastion.service"


def test_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (package systemd)"
    text = UNIT.read_text()
    unit = tmp_path / "bastion.service"  # the role fills in the real path; verify needs an executable there
    unit.write_text(text.replace("/opt/bastion/venv/bin/bastion", str(Path(sys.executable).parent / "bastion")))
    out = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    directives = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert directives["Type"] == "notify" and directives["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert directives["User"] == "bastion" and directives["NoNewPrivileges"] == "yes"
    assert directives["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"  # port 22 and nothing else
    assert directives["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    for key, value in (("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("ReadWritePaths", "/var/lib/bastion /var/log/bastion"), ("Restart", "on-failure"),
                       # the daemon pets the watchdog (tests/unit/test_metrics_watchdog.py); the metrics' files go
                       # to $RUNTIME_DIRECTORY/metrics-PORT, a tmpfs emptied at each stop
                       ("WatchdogSec", "30s"), ("RuntimeDirectory", "bastion"), ("RuntimeDirectoryMode", "0700")):
        assert directives[key] == value


class Notifications:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(20)
        self.seen: list[str] = []

    def wait(self, state: str) -> list[str]:
        while True:
            msg = self.sock.recv(4096).decode().splitlines()
            self.seen.append(" ".join(msg))
            if state in msg:
                return msg


def test_ready_reload_and_stop(bastion_env: BastionEnv, tmp_path: Path) -> None:
    base = bastion_env
    (tmp_path / "state").mkdir()
    port = free_port()
    cfg = write_config(tmp_path, port, base.keys, base.target, base.target_key)
    notes = Notifications(tmp_path / "notify.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION")}
    env["NOTIFY_SOCKET"] = str(tmp_path / "notify.sock")
    log = tmp_path / "out.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bastion.cli", "serve", "--config", str(cfg)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        ready = notes.wait("READY=1")
        assert any(m.startswith("STATUS=serving on 127.0.0.1:") for m in ready)
        wait_port(port, proc, log)

        def run(cmd: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(ssh_argv(base.keys["alice"], port, "alice", "web", "--", cmd, tty=False),
                                  capture_output=True, text=True, timeout=60)

        assert run("echo before-reload").stdout == "before-reload\n"
        open_session = subprocess.Popen(ssh_argv(base.keys["alice"], port, "alice", "web", "--",
                                                 "sleep 3; echo survived", tty=False),
                                        stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        # a new rule: blocks `echo` of a word from now on
        cfg.write_text(cfg.read_text().replace(
            "    rules:\n", "    rules:\n      - {name: no-shouting, programs: [echo], args: [LOUD], action: block}\n",
            1))
        proc.send_signal(signal.SIGHUP)
        reloading = notes.wait("RELOADING=1")
        assert any(m.startswith("MONOTONIC_USEC=") for m in reloading)
        notes.wait("READY=1")
        blocked = run("echo LOUD")
        assert blocked.returncode == 1 and "blocked by rule 'no-shouting'" in blocked.stderr
        # a broken config is refused as a whole; the running one stays
        good = cfg.read_text()
        cfg.write_text(good + "resources: [this is: not valid\n")
        proc.send_signal(signal.SIGHUP)
        notes.wait("RELOADING=1")
        after_bad = notes.wait("READY=1")
        assert any("last reload was refused" in m for m in after_bad)
        assert run("echo LOUD").returncode == 1 and run("echo still-served").stdout == "still-served\n"
        assert f"{cfg}:" in log.read_text() and "reload refused" in log.read_text()
        assert open_session.wait(30) == 0 and open_session.stdout and open_session.stdout.read() == "survived\n"
        proc.send_signal(signal.SIGTERM)
        notes.wait("STOPPING=1")
        assert proc.wait(20) == 0
    finally:
        stop_bastion(proc)
        notes.sock.close()


def test_host_key_rotation_clients_learn_the_next_key(bastion_env: BastionEnv, tmp_path: Path) -> None:
    base = bastion_env
    (tmp_path / "state").mkdir()
    port = free_port()
    cfg = write_config(tmp_path, port, base.keys, base.target, base.target_key)
    cfg.write_text(cfg.read_text().replace("host_keys: [state/host_ed25519]",
                                           "host_keys: [state/host_ed25519, state/host_ed25519.new]"))
    proc = start_bastion(cfg, port, tmp_path / "out.log")
    try:
        def pub(name: str) -> str:
            out = subprocess.run(["ssh-keygen", "-y", "-f", str(tmp_path / "state" / name)], capture_output=True,
                                 text=True, check=True)
            return out.stdout.split()[1]

        old, new = pub("host_ed25519"), pub("host_ed25519.new")
        kh = tmp_path / "known_hosts"
        kh.write_text(f"[127.0.0.1]:{port} ssh-ed25519 {old}\n")  # the client knows only the key in use
        argv = ["ssh", "-F", "/dev/null", "-i", str(base.keys["alice"]), "-p", str(port), "-o", "IdentitiesOnly=yes",
                "-o", "IdentityAgent=none", "-o", f"UserKnownHostsFile={kh}", "-o", "StrictHostKeyChecking=yes",
                "-o", "UpdateHostKeys=yes", "-o", "BatchMode=yes", "-T", "alice@127.0.0.1", "web", "--", "true"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        known = kh.read_text()
        assert old in known and new in known  # learned the announced next key, no prompt, no flag day
    finally:
        stop_bastion(proc)
