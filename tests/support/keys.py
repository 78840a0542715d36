"""Key pairs and ports for tests."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path


def make_keypair(path: Path, comment: str = "") -> tuple[Path, str]:
    """Generate an ed25519 pair with ssh-keygen (private at ``path``, mode 0600; public at ``path.pub``).

    Returns (private key path, public key line). An existing pair at ``path`` is replaced.
    """
    path = Path(path)
    pub = Path(f"{path}.pub")
    path.unlink(missing_ok=True)
    pub.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", str(path), "-C", comment],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    path.chmod(0o600)
    return path, pub.read_text().strip()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
