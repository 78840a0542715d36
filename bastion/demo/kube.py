"""The demo's ``demo-k8s``: a *simulated* Kubernetes API server (``bastion.demo.kubesim``) started with the demo, and a
kubectl >= 1.30 to reach it through the bastion. Only used by ``bastion demo``; without a suitable kubectl the demo
runs without ``demo-k8s`` and says so."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from bastion.demo.kubesim import KubeSim, make_tls
from bastion.targets.kube import kubectl_minor

# kubectl on PATH first; then the versioned binaries of Google's Cloud SDK `kubectl` package, newest first
CANDIDATES = ("/usr/lib/google-cloud-sdk/bin/kubectl.1.33", "/usr/lib/google-cloud-sdk/bin/kubectl.1.32",
              "/usr/lib/google-cloud-sdk/bin/kubectl.1.31", "/usr/lib/google-cloud-sdk/bin/kubectl.1.30")

DEMO_K8S = """\
  demo-k8s:
    kind: kubernetes
    description: "Demo cluster (SIMULATED API server started by the demo): pods, secrets, exec"
    server: https://127.0.0.1:{port}
    ca_file: kubesim/tls/ca.crt
    credential: {{token_file: secrets/demo-k8s.token}}
    namespace: default
    policy: demo-k8s
"""
DEMO_K8S_POLICY = """\
  demo-k8s:
    default: allow
    rules:
      - name: no-secrets
        api_resources: [secrets]
        action: block
        reason: secrets stay in the cluster
      - name: delete-needs-approval
        verbs: [delete, deletecollection]
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
        reason: deleting workloads needs a reviewer's approval
      - name: exec-needs-approval
        api_resources: [pods/exec, pods/attach]
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
        reason: a shell inside a pod needs a reviewer's approval
      - name: no-rm
        programs: [rm, shred]
        action: block
        reason: deleting files inside pods is not allowed
"""


def find_demo_kubectl() -> str | None:
    """A kubectl that speaks exec over WebSocket (>= 1.30): on PATH, else a versioned Cloud SDK binary."""
    for k in (shutil.which("kubectl"), *CANDIDATES):
        if k and os.access(k, os.X_OK) and (kubectl_minor(k) or 0) >= 30:
            return k
    return None


class DemoKube:
    """The simulated cluster under ``state/kubesim``, with a fresh token in ``state/secrets/demo-k8s.token``."""

    def __init__(self, state: Path, port: int):
        self.state, self.port = state, port
        self.token_file = state / "secrets" / "demo-k8s.token"
        self.sim: KubeSim | None = None

    def start(self) -> None:
        tls = make_tls(self.state / "kubesim" / "tls")
        token = secrets.token_urlsafe(32)
        self.token_file.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        self.sim = KubeSim(token=token, cert=tls.cert, key=tls.key, port=self.port, cluster="demo-k8s")
        self.sim.start()

    def stop(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None
