"""kubectl for the tests: the pinned one (scripts/setup), checked to be >= 1.30 (exec over WebSocket)."""

from __future__ import annotations

import os
import shutil

from bastion.targets.kube import kubectl_minor

PINNED = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"


def find_kubectl() -> str | None:
    """$BASTION_TEST_KUBECTL, the pinned kubectl 1.33, or kubectl on PATH: the first that is >= 1.30."""
    for k in (os.environ.get("BASTION_TEST_KUBECTL"), PINNED, shutil.which("kubectl")):
        if k and os.access(k, os.X_OK) and (kubectl_minor(k) or 0) >= 30:
            return k
    return None
