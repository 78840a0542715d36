"""Kubernetes resources end to end: stock OpenSSH -> bastion -> kubectl prompt (real kubectl, in the sandbox) ->
the session's API proxy -> the simulated API server (bastion/demo/kubesim.py), which records what reached it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.demo.kubesim import KubeSim, make_tls, run_in_thread
from recorder.asciicast import read_cast
from tests.integration.conftest import BastionEnv, start_bastion, stop_bastion, write_config
from tests.integration.test_approvals_e2e import reviewer_queue, wait_stderr_line
from tests.support.keys import free_port, make_keypair
from tests.support.kube import find_kubectl
from tests.support.review import approve
from tests.support.ssh_client import ssh_argv
from tests.support.sshd import start_sshd
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow

TOKEN = "real-cluster-token-4f9a2c"
RES = "web-k8s"  # the test config's operators role grants web*


class KubeEnv:
    def __init__(self, env: BastionEnv, sim: KubeSim):
        self.env, self.sim = env, sim

    def ssh(self, user: str, *extra: str, tty: bool | None = None) -> list[str]:
        return ssh_argv(self.env.keys[user], self.env.port, user, *extra, tty=tty)

    def run(self, line: str, user: str = "alice", stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.ssh(user, RES, "--", line, tty=False), input=stdin, capture_output=True,
                              text=True, timeout=60)

    def seen(self) -> list[dict]:
        return list(self.sim.requests)


@pytest.fixture(scope="module")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    kubectl = find_kubectl()
    assert kubectl, "no kubectl >= 1.30 found: run scripts/setup --test"
    d = tmp_path_factory.mktemp("kube")
    (d / "state").mkdir()
    tls = make_tls(d / "tls")
    sim, stop = run_in_thread(token=TOKEN, cert=tls.cert, key=tls.key, client_ca=tls.ca)
    token_file = d / "cluster-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    keys = {u: make_keypair(d / f"key_{u}", u)[0] for u in ("alice", "bob", "mallory", "carol", "dave")}
    target_key, target_pub = make_keypair(d / "target_credential", "bastion-credential")
    target = start_sshd(d / "sshd", authorized_keys=[target_pub])
    port = free_port()
    cfg = write_config(d, port, keys, target, target_key, extra_top=f"kubectl: {kubectl}\n", extra_resources=f"""\
  {RES}:
    kind: kubernetes
    description: simulated cluster
    server: https://127.0.0.1:{sim.port}
    ca_file: {tls.ca}
    credential: {{token_file: {token_file}}}
    namespace: default
    policy: k8s
  web-k8s-cert:
    kind: kubernetes
    server: https://127.0.0.1:{sim.port}
    ca_file: {tls.ca}
    credential: {{client_cert_file: {tls.client_cert}, client_key_file: {tls.client_key}}}
    policy: k8s
  web-k8s-as-operator:
    kind: kubernetes
    server: https://127.0.0.1:{sim.port}
    ca_file: {tls.ca}
    credential: {{token_file: {token_file}}}
    impersonate: true
    policy: k8s
""", extra_policies="""\
  k8s:
    default: allow
    rules:
      - {name: no-secrets, api_resources: [secrets], action: block, reason: secrets stay in the cluster}
      - name: delete-needs-approval
        verbs: [delete]
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
      - name: exec-needs-approval
        api_resources: [pods/exec, pods/attach]
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
      - {name: no-rm, programs: [rm], action: block, reason: no deleting files in pods}
""")
    log = d / "bastion.out"
    proc = start_bastion(cfg, port, log)
    env = BastionEnv(d, cfg, port, keys, target, target_key, proc, log)
    try:
        yield KubeEnv(env, sim)
    finally:
        stop_bastion(proc)
        target.stop()
        stop()


def test_get_pods_exec_form_and_the_credential_stays_inside(kube_env: KubeEnv) -> None:
    k = kube_env
    before = len(k.seen())
    out = k.run("kubectl get pods")
    assert out.returncode == 0, out.stderr
    assert "web-1" in out.stdout and "Running" in out.stdout
    out = k.run("get pods -o json")  # "kubectl" is optional
    assert {p["metadata"]["name"] for p in json.loads(out.stdout)["items"]} >= {"web-1", "web-2"}
    new = k.seen()[before:]
    assert new and all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in new)
    assert not any(h.startswith("impersonate-") for r in new for h in r["headers"])
    assert TOKEN not in out.stdout + out.stderr and TOKEN not in k.env.log.read_text()


@pytest.mark.parametrize(("line", "why"), [
    ("get pods --server=https://127.0.0.1:1", "--server"),
    ("get pods --as system:masters", "--as"),
    ("get pods --kubeconfig /etc/passwd", "--kubeconfig"),
    ("config view --raw", "kubeconfig"),
    ("proxy --port 8001", "proxy"),
])
def test_flags_that_leave_the_proxy_are_refused(kube_env: KubeEnv, line: str, why: str) -> None:
    before = len(kube_env.seen())
    out = kube_env.run(line)
    assert out.returncode != 0 and why in out.stderr, out.stderr
    assert len(kube_env.seen()) == before


def test_secrets_are_refused_with_the_rule_named(kube_env: KubeEnv) -> None:
    k = kube_env
    before = len(k.seen())
    for line in ("get secret db-password -o yaml", "get secrets", "get secrets -A -o json",
                 "get --raw /api/v1/namespaces/default/secrets/db-password"):
        out = k.run(line)
        assert out.returncode != 0, (line, out.stdout)
        assert "Forbidden" in out.stderr and "no-secrets" in out.stderr, (line, out.stderr)
        assert "cGFzc3dvcmQ" not in out.stdout and "data:" not in out.stdout
    assert not any("secrets" in r["path"] for r in k.seen()[before:])


@pytest.mark.parametrize("path", [
    "/api/v1/nodes/node-1/proxy/metrics",
    "/api/v1/namespaces/default/pods/web-1/proxy/",
    "/api/v1/namespaces/default/pods/web-1/%2e%2e/%2e%2e/secrets/db-password",
    "//api/v1/namespaces/default/secrets",
    "/api/v1/namespaces/default/serviceaccounts/default/token",
    "/metrics",
])
def test_raw_paths_that_escape_are_refused(kube_env: KubeEnv, path: str) -> None:
    before = len(kube_env.seen())
    out = kube_env.run(f"get --raw {path}")
    assert out.returncode != 0, out.stdout
    assert "bastion" in out.stderr, out.stderr
    assert kube_env.seen()[before:] == []


def test_port_forward_is_refused_as_a_whole(kube_env: KubeEnv) -> None:
    out = kube_env.run("port-forward web-1 18080:80")
    assert out.returncode != 0 and "port forwarding is disabled" in out.stderr, out.stderr


def test_delete_waits_for_a_reviewer(kube_env: KubeEnv) -> None:
    k = kube_env
    proc = subprocess.Popen(k.ssh("alice", RES, "--", "kubectl delete pod web-2", tty=False), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_stderr_line(proc, "waiting for approval")
        assert not any(r["method"] == "DELETE" for r in k.seen())
        with reviewer_queue(k.env) as bob:
            bob.wait_for(r"alice\s+web-k8s\s+delete pods web-2", timeout=10)
            approve(bob)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "web-2" in out and "deleted" in out
        assert any(r["method"] == "DELETE" and r["path"].endswith("/pods/web-2") for r in k.seen())
    finally:
        proc.kill()
    # deletecollection is a delete too (kubectl delete --all deletes one by one; --raw sends the collection DELETE)
    proc = subprocess.Popen(k.ssh("alice", RES, "--", "kubectl delete --raw /api/v1/namespaces/default/pods",
                                  tty=False),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_stderr_line(proc, "waiting for approval")
        with reviewer_queue(k.env) as bob:
            bob.wait_for(r"deletecollection pods", timeout=10)
            bob.send("d")
            bob.wait_for(r"why\?")
            bob.send("not today\r")
            out, err = proc.communicate(timeout=30)
        assert proc.returncode != 0 and "denied by bob: not today" in err
        assert not any(r["method"] == "DELETE" and r["path"].endswith("/pods") for r in k.seen())
    finally:
        proc.kill()


def test_non_interactive_exec_argv_is_judged(kube_env: KubeEnv) -> None:
    out = kube_env.run("exec web-1 -- rm -rf /data")
    assert out.returncode != 0 and "no-rm" in out.stderr
    assert not any(r["path"].endswith("/exec") and "rm" in json.dumps(r["query"]) for r in kube_env.seen())


def test_interactive_prompt_and_approved_exec_shell_is_recorded(kube_env: KubeEnv) -> None:
    k = kube_env
    with Terminal(k.ssh("alice", RES, tty=True), cols=120, rows=30) as t:
        t.wait_for(rf"{RES}>")
        t.send("get pods\r")
        t.wait_for(r"web-1\s+1/1\s+Running")
        t.send("get pods --token x\r")
        t.wait_for(r"bastion: --token is not allowed")
        t.send("exec -it web-1 -- sh\r")
        t.wait_for(r"waiting for approval")
        with reviewer_queue(k.env) as bob:
            bob.wait_for(r"create pods/exec web-1", timeout=10)
            approve(bob)
            t.wait_for(r"^/ #", timeout=20)
        t.send("hostname\r")
        t.wait_for(r"^web-1\s*$")
        t.send("echo INSIDE-$((6*7))\r")
        t.wait_for(r"INSIDE-42")
        t.send("exit\r")
        t.wait_count(rf"{RES}>", 4)
        t.send("exit\r")
        assert t.wait_exit() == 0
    s = next(s for s in json.loads(k.env.bastion("sessions", "list", "--json").stdout)
             if s["resource"] == RES and s["mode"] == "interactive")
    cast = read_cast(Path(s["recording"]))
    out = "".join(e.data for e in cast.events if e.code == "o")
    assert "web-1" in out and "INSIDE-42" in out
    marks = [e.data for e in cast.events if e.code == "m"]
    assert any("kube:" in m and "pods/exec web-1" in m for m in marks), marks
    assert any("stream opened" in m for m in marks) and any("stream closed" in m for m in marks)


def test_client_certificate_upstream(kube_env: KubeEnv) -> None:
    k = kube_env
    before = len(k.seen())
    out = subprocess.run(k.ssh("alice", "web-k8s-cert", "--", "auth whoami -o json", tty=False), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"]["userInfo"]["username"] == "kube-admin"
    new = k.seen()[before:]
    assert new and all(r["user"] == "kube-admin" and "authorization" not in r["headers"] for r in new)


def test_impersonation_makes_the_operator_the_cluster_user(kube_env: KubeEnv) -> None:
    k = kube_env
    before = len(k.seen())
    for user, groups in (("alice", ["ops"]), ("carol", ["ops", "reviewers"])):
        out = subprocess.run(k.ssh(user, "web-k8s-as-operator", "--", "auth whoami -o json", tty=False),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)["status"]["userInfo"]
        assert info["username"] == user and sorted(info["groups"]) == groups
    out = subprocess.run(k.ssh("alice", "web-k8s-as-operator", "--", "get pods --as carol", tty=False),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--as" in out.stderr
    new = k.seen()[before:]
    assert new and all(r["headers"].get("impersonate-user") in ("alice", "carol") for r in new)
