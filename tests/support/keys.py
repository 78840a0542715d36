"""Key pairs and ports for tests."""

from __future__ import annotations

import random
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


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive TCP ports on 127.0.0.1 that were free a moment ago (the demo uses port..port+3).

    Chosen below the kernel's ephemeral range, so client sockets of other tests don't land on them meanwhile."""
    lo, hi = 20000, 32000
    try:
        hi = min(hi, int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        base = random.randrange(lo, hi - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")
