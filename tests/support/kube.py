"""kubectl for the tests: the pinned one (scripts/setup), checked to be >= 1.30 (exec over WebSocket)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

PINNED = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"


def kubectl_minor(path: str) -> int | None:
    """The client's minor version, or None when ``path`` is not a working kubectl."""
    try:
        out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True,
                             timeout=30)
        minor = json.loads(out.stdout)["clientVersion"]["minor"]
        return int("".join(c for c in minor if c.isdigit()))
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return None


def find_kubectl() -> str | None:
    """$BASTION_TEST_KUBECTL, the pinned kubectl 1.33, or kubectl on PATH: the first that is >= 1.30."""
    for k in (os.environ.get("BASTION_TEST_KUBECTL"), PINNED, shutil.which("kubectl")):
        if k and os.access(k, os.X_OK) and (kubectl_minor(k) or 0) >= 30:
            return k
    return None
