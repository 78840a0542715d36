"""The simulated API server checked on its own with real kubectl (no bastion in between), so the end-to-end tests
can trust what it reports: discovery, Table output, delete, secrets, auth, exec over WebSocket."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.demo.kubesim import KubeSim, make_tls, run_in_thread
from tests.support.kube import find_kubectl

TOKEN = "selfcheck-token"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeSim, Path, str]]:
    kubectl = find_kubectl()
    assert kubectl, "no kubectl >= 1.30 found: run scripts/setup --test"
    d = tmp_path_factory.mktemp("kubesim")
    tls = make_tls(d / "tls")
    sim, stop = run_in_thread(token=TOKEN, cert=tls.cert, key=tls.key, client_ca=tls.ca)
    cfg = d / "kubeconfig"
    cfg.write_text(sim.kubeconfig(tls.ca))
    try:
        yield sim, cfg, kubectl
    finally:
        stop()


def kc(sim: tuple[KubeSim, Path, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    _, cfg, kubectl = sim
    return subprocess.run([kubectl, "--kubeconfig", str(cfg), *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env={"HOME": str(cfg.parent), "PATH": "/usr/bin:/bin"})


def test_get_pods_as_a_table_and_json(sim: tuple[KubeSim, Path, str]) -> None:
    out = kc(sim, "get", "pods")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert any(line.split()[:3] == ["web-1", "1/1", "Running"] for line in out.stdout.splitlines())
    assert "ledger-0" not in out.stdout  # another namespace
    assert "as=Table" in sim[0].requests[-1]["headers"]["accept"]
    items = json.loads(kc(sim, "get", "pods", "-A", "-o", "json").stdout)["items"]
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in items} >= {
        ("default", "web-1"), ("payments", "ledger-0")}


def test_a_wrong_token_is_refused(sim: tuple[KubeSim, Path, str]) -> None:
    out = kc(sim, "get", "pods", "--token", "wrong")
    assert out.returncode != 0 and "Unauthorized" in out.stderr
    assert sim[0].requests[-1]["user"] is None


def test_client_certificate_authentication(sim: tuple[KubeSim, Path, str], tmp_path: Path) -> None:
    s, cfg, _ = sim
    conf = json.loads(cfg.read_text())
    tls = cfg.parent / "tls"
    conf["users"][0]["user"] = {"client-certificate": str(tls / "kube-admin.crt"),
                                "client-key": str(tls / "kube-admin.key")}
    (tmp_path / "kubeconfig").write_text(json.dumps(conf))
    out = kc((s, tmp_path / "kubeconfig", sim[2]), "auth", "whoami", "-o", "json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)["status"]["userInfo"]
    assert info["username"] == "kube-admin" and "system:masters" in info["groups"]


def test_delete_secret_and_logs(sim: tuple[KubeSim, Path, str]) -> None:
    out = kc(sim, "get", "secret", "db-password", "-o", "jsonpath={.data.password}")
    assert out.returncode == 0 and out.stdout == "cGFzc3dvcmQtbm90LWZvci15b3U=", out.stderr
    assert "web-1" in kc(sim, "logs", "web-1", "--tail", "1").stdout
    out = kc(sim, "delete", "pod", "web-3")
    assert out.returncode == 0 and 'pod "web-3" deleted' in out.stdout, out.stderr
    assert "web-3" not in kc(sim, "get", "pods").stdout
    assert "NotFound" in kc(sim, "get", "pod", "web-3").stderr


def test_exec_over_websocket(sim: tuple[KubeSim, Path, str]) -> None:
    out = kc(sim, "exec", "web-1", "--", "hostname")
    assert (out.returncode, out.stdout) == (0, "web-1\n"), out.stderr
    assert sim[0].requests[-1]["headers"]["upgrade"].lower() == "websocket"
    out = kc(sim, "exec", "-i", "web-2", "--", "sh", stdin="echo A-$((6*7))\ncat /etc/hostname\nexit 4\n")
    assert out.returncode == 4 and out.stdout == "A-42\nweb-2\n", (out.stdout, out.stderr)
    out = kc(sim, "exec", "web-1", "--", "nope")
    assert out.returncode == 127 and "sh: nope: not found" in out.stderr
