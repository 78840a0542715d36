"""The Ansible role, applied to this machine (connection local) into a prefix, with the systemd steps off (no
systemd as PID 1 here): it installs the built wheel into a virtualenv, writes the config (validated by
`bastion check-config` before it lands), the secret files 0600, the unit and, with metrics on, the Prometheus alert
rules and Grafana dashboard; a second run changes nothing; the deployed daemon serves a real `ssh` login and its
metrics endpoint answers (/healthz, /metrics with the token the role wrote). `ansible-lint` passes on the role and
playbook. Building the wheel and two runs of the playbook take minutes on a loaded machine: generous timeouts."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion
from tests.support.keys import free_port
from tests.support.ssh_client import ssh_argv

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.timeout(600)
def test_ansible_lint_is_clean() -> None:
    out = subprocess.run([str(BIN / "ansible-lint"), "--offline", "ansible/"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.timeout(1800)
def test_role_deploys_a_working_bastion(bastion_env: BastionEnv, tmp_path: Path) -> None:
    env = bastion_env
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("bastion-*.whl"))
    prefix = tmp_path / "root"
    port, metrics_port = free_port(), free_port()
    secret = f"{prefix}/etc/bastion/secrets/web_ed25519"
    token = "role-metrics-token"
    variables = {
        "bastion_prefix": str(prefix), "bastion_package": str(wheel), "bastion_manage_user": False,
        "bastion_manage_systemd": False, "bastion_listen_host": "127.0.0.1", "bastion_listen_port": port,
        "bastion_users": {"alice": {"groups": ["ops"],
                                    "authorized_keys": [Path(f"{env.keys['alice']}.pub").read_text().strip()]}},
        "bastion_resources": {"web": {"kind": "ssh", "host": "127.0.0.1", "port": env.target.port,
                                      "user": env.target.user, "credential": {"private_key_file": secret},
                                      "host_key": env.target.host_key_public, "policy": "guarded"}},
        "bastion_roles": {"operators": {"groups": ["ops"], "resources": ["web"]}},
        "bastion_policies": {"guarded": {"default": "allow", "rules": [
            {"name": "no-rm", "programs": ["rm"], "action": "block"}]}},
        "bastion_secret_files": [{"dest": "secrets/web_ed25519", "content": env.target_key.read_text()},
                                 {"dest": "secrets/metrics-token", "content": token + "\n"}],
        "bastion_metrics": {"listen": f"127.0.0.1:{metrics_port}",
                            "token_file": f"{prefix}/etc/bastion/secrets/metrics-token"},
    }
    first = apply_twice(tmp_path, "bastions", variables)

    etc, venv = prefix / "etc/bastion", prefix / "opt/bastion/venv"
    assert stat.S_IMODE(Path(secret).stat().st_mode) == 0o600
    assert stat.S_IMODE((etc / "bastion.yaml").stat().st_mode) == 0o640
    assert env.target_key.read_text() not in first.stdout  # no_log: the secret is not in ansible's output
    unit = (prefix / "etc/systemd/system/bastion.service").read_text()
    assert f"ExecStart={venv}/bin/bastion serve --config {etc}/bastion.yaml" in unit
    assert f"ReadWritePaths={prefix}/var/lib/bastion {prefix}/var/log/bastion" in unit
    assert "WatchdogSec=30s" in unit and "RuntimeDirectory=bastion" in unit
    monitoring = prefix / "usr/share/bastion/monitoring"  # metrics on: the rules and the dashboard, as shipped
    for name, shipped in (("bastion-alerts.yml", "prometheus/bastion-alerts.yml"),
                          ("bastion-dashboard.json", "grafana/bastion-dashboard.json")):
        assert (monitoring / name).read_bytes() == (ROOT / "ansible/roles/bastion/files" / shipped).read_bytes()
        assert stat.S_IMODE((monitoring / name).stat().st_mode) == 0o644
    if shutil.which("systemd-analyze"):
        unit_file = prefix / "etc/systemd/system/bastion.service"
        out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit_file)], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and not out.stderr.strip(), out.stderr

    # the deployed daemon (started by hand: no systemd here) lets alice in
    proc = start_bastion_from(venv, etc / "bastion.yaml", port, tmp_path / "deployed.log")
    try:
        base = f"http://127.0.0.1:{metrics_port}"
        assert wait_healthy(f"{base}/healthz", proc) == (200, "ok\n")
        assert http_get(f"{base}/metrics")[0] == 401  # the token the role wrote is needed
        status, body = http_get(f"{base}/metrics", token)
        assert status == 200 and "bastion_info{" in body and "bastion_connections_open" in body, body[:2000]
        out = subprocess.run(ssh_argv(env.keys["alice"], port, "alice", "web", "--", "echo deployed-$((6*7))",
                                      tty=False), capture_output=True, text=True, timeout=60)
        assert out.stdout == "deployed-42\n", out.stderr
        blocked = subprocess.run(ssh_argv(env.keys["alice"], port, "alice", "web", "--", "rm -f /tmp/x",
                                          tty=False), capture_output=True, text=True, timeout=60)
        assert blocked.returncode == 1 and "no-rm" in blocked.stderr
        # the wheel carries asciinema-player: the deployed command exports a playable page
        cast = next((prefix / "var/lib/bastion/recordings").rglob("*.cast"))
        page = tmp_path / "export.html"
        out = subprocess.run([str(venv / "bin/bastion"), "replay", str(cast), "--html", str(page)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "AsciinemaPlayer" in page.read_text() and "deployed-" in page.read_text()
    finally:
        stop_bastion(proc)


def apply_twice(tmp_path: Path, group: str, variables: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """site.yml applied locally, with this machine as the only host of ``group`` (the other group empty), twice:
    the first run must succeed, the second must change nothing. The first run's output."""
    groups = {"bastions": "  hosts: {}\n", "bastion_targets": "  hosts: {}\n"}
    groups[group] = ("  hosts:\n    localhost:\n      ansible_connection: local\n"
                     f"      ansible_python_interpreter: {sys.executable}\n")
    (tmp_path / "inventory.yml").write_text("".join(f"{g}:\n{hosts}" for g, hosts in groups.items()))
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    argv = [str(BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"), str(ROOT / "ansible/site.yml"),
            "-e", f"@{tmp_path / 'vars.json'}", "-e", "ansible_become=false"]
    aenv = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "PATH": f"{BIN}:{os.environ['PATH']}"}
    first = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=aenv)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    again = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=aenv)
    assert again.returncode == 0 and re.search(r"changed=0\s", again.stdout), again.stdout[-3000:]
    return first


def start_bastion_from(venv: Path, cfg: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """start_bastion, but with the deployed virtualenv's interpreter."""
    real = sys.executable
    try:
        sys.executable = str(venv / "bin/python")
        return start_bastion(cfg, port, log, timeout=120)  # a cold virtualenv on a loaded machine
    finally:
        sys.executable = real


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> tuple[int, str]:
    """GET ``url`` until it answers (the endpoint may open a moment after the SSH port): its answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http_get(url)
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.2)


def http_get(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (loopback)
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.timeout(1200)
def test_role_installs_bastion_guard_on_a_target(tmp_path: Path) -> None:
    """site.yml's second play (group bastion_targets): bastion-guard lands root's and 0755 with the target's own
    Python in its first line, `bastion-guard --check` passes there, and a second run changes nothing."""
    prefix = tmp_path / "target"
    first = apply_twice(tmp_path, "bastion_targets", {"bastion_prefix": str(prefix)})
    assert "Check that bastion-guard can supervise" in first.stdout
    guard = prefix / "usr/local/bin/bastion-guard"
    st = guard.stat()
    assert stat.S_IMODE(st.st_mode) == 0o755 and (st.st_uid == 0 or os.geteuid() != 0)
    text = guard.read_text()
    assert text.startswith("#!/usr/bin/python3\n") and text.count("#!") == 1
    assert text.split("\n", 1)[1] == (ROOT / "guard/agent.py").read_text().split("\n", 1)[1]
    out = subprocess.run([str(guard), "--check"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "supervision works here" in out.stdout, out.stderr
