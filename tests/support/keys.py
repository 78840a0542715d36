"""Key pairs and ports for tests."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path


def make_keypair(path: Path, comment: str = "") -> tuple[Path, str]:
    """An ed25519 key pair made by ssh-keygen: (private key path, public key line)."""
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", str(path), "-C", comment], check=True)
    os.chmod(path, 0o600)
    return path, Path(f"{path}.pub").read_text().strip()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
